"""Parity with the published GVFDiffusion modules, on the reference tensors in GVF_GOLDEN_DIR."""
import json

import pytest
import torch

from gvf4d.models.gvf_dit import FoldedStaticAttention, GVFDiT, GVFDiTConfig
from gvf4d.models.motion_vae import MotionVAE, MotionVAEConfig
from gvf4d.models.weights import load_strict
from gvf4d.samplers import DiscreteVPSchedule, DPMSolverPP, ThreeWayGuidance, cosine_betas

from golden import assert_close_rel, config, golden_file, load

COND_KEYS = ("cond_images", "static_latent", "deformation_position_xyz")


@pytest.fixture(scope="module")
def dit():
    weights, _ = load("dit_small_weights.safetensors")
    return load_strict(GVFDiT(config("dit_small_weights.safetensors")), weights, "dit_small_weights").eval()


@pytest.fixture(scope="module")
def vae():
    weights, _ = load("motion_vae_small_weights.safetensors")
    return load_strict(MotionVAE(config("motion_vae_small_weights.safetensors")), weights, "motion_vae_small").eval()


def test_dit_forward(dit):
    io, _ = load("dit_small_io.safetensors")
    with torch.no_grad():
        out = dit(io["x"], io["t"], **{k: io[k] for k in COND_KEYS})
    assert_close_rel(out, io["out"], 1e-5)


def test_dit_fast_condition_is_the_published_computation(dit):
    """The folded canonical-Gaussian attention and the constant-context shortcut (half precision's default)
    against the golden output, and against the published computation on the three guidance branches."""
    io, _ = load("dit_small_io.safetensors")
    images, static, xyz = (io[k] for k in COND_KEYS)
    with torch.no_grad():
        fast = dit.condition(images, static, fast=True)
        assert all(isinstance(c.static.attend, FoldedStaticAttention) and c.static.live is None for c in fast)
        assert_close_rel(dit.denoise(io["x"], io["t"], fast, xyz), io["out"], 1e-5)
        # the guidance branches: no frame features and no Gaussians / no frame features / both
        x3, t3, xyz3 = (torch.cat([a] * 3) for a in (io["x"], io["t"], xyz))
        images3 = torch.cat([torch.zeros_like(images), torch.zeros_like(images), images])
        static3 = torch.cat([torch.zeros_like(static), static, static])
        published = dit.denoise(x3, t3, dit.condition(images3, static3, fast=False), xyz3)
        fast = dit.condition(images3, static3, fast=True)
        B = images.shape[0]
        assert fast[0].image.live == range(2 * B, 3 * B)
        assert fast[0].static.live == range(B, 3 * B)
        assert_close_rel(dit.denoise(x3, t3, fast, xyz3), published, 1e-5)
        # float32 without autocast keeps the published computation by default (bit-faithful for the adaptive solver)
        default = dit.condition(images3, static3)
        assert not any(isinstance(c.static.attend, FoldedStaticAttention) or c.image.live is not None for c in default)


def test_motion_vae_decode_any_chunking(vae):
    io, _ = load("motion_vae_small_io.safetensors")
    with torch.no_grad():
        for chunk in (None, 7, 1000):
            for folded in (True, False):   # the folded decoder and the published computation
                out = vae.decode(io["latents"], io["queries"], chunk_size=chunk, folded=folded)
                assert out.shape == io["decoded"].shape
                assert_close_rel(out, io["decoded"], 1e-5)


def test_motion_vae_decode_with_half_weights_rounds_like_autocast(vae):
    """The engine's decode on CUDA: decoder weights cast to half, no autocast; the Fourier position encoding stays
    in float32. Here in bf16 on the CPU (the GPU runs fp16): within the autocast decode's rounding of the golden
    output, and the encoder (not cast) still runs in float32."""
    import copy
    io, _ = load("motion_vae_small_io.safetensors")
    half = copy.deepcopy(vae).cast_decoder(torch.bfloat16)
    assert half.position_encoding[0].omega.dtype == vae.position_encoding[0].omega.dtype
    with torch.no_grad():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            autocast = vae.decode(io["latents"], io["queries"]).float()
        out = half.decode(io["latents"], io["queries"])
    assert out.dtype == torch.bfloat16
    err = lambda a: ((a.float() - io["decoded"]).norm() / io["decoded"].norm()).item()   # noqa: E731
    assert err(out) <= 2 * err(autocast) + 1e-3, (err(out), err(autocast))
    assert half.cast_decoder(torch.float32).decode(io["latents"], io["queries"]).dtype == torch.float32


def test_motion_vae_encode_posterior(vae):
    io, _ = load("motion_vae_small_io.safetensors")
    with torch.no_grad():
        posterior, sampled = vae.encode(io["static_pc"], io["delta_pc"], [io["gs_0"], io["gs_1"]])
    torch.testing.assert_close(sampled, io["sampled_static_gs"].reshape(sampled.shape), rtol=0, atol=0)
    assert_close_rel(posterior.mean, io["posterior_mean"], 1e-5)
    assert_close_rel(posterior.logvar, io["posterior_logvar"], 1e-5)


def test_schedule_is_the_published_cosine():
    io, _ = load("dpm_solver_small_io.safetensors")
    torch.testing.assert_close(cosine_betas(1000), io["betas"], rtol=0, atol=1e-15)
    sch = DiscreteVPSchedule(io["betas"])
    assert sch.total_N == 996      # log-SNR clipping at -5.1 drops the last 4 steps
    assert sch.model_time(torch.tensor(1.0)).item() == pytest.approx((1 - 1 / 996) * 1000)


@pytest.mark.parametrize("run", ["multistep_g1", "multistep_cfg", "adaptive_g1"])
def test_dpm_solver_runs(dit, run):
    d, meta = load("dpm_solver_small_io.safetensors")
    io, _ = load("dit_small_io.safetensors")
    r = json.loads(meta["runs"])[run]
    sch = DiscreteVPSchedule(d["betas"])
    guidance = ThreeWayGuidance(dit, sch, {k: io[k] for k in COND_KEYS}, r["gs"], r["gs2"])
    x, stats = DPMSolverPP(sch).sample(guidance.noise, d["noise"], steps=r["steps"], t_start=1.0, t_end=1e-3,
                                       order=2, method=r["method"])
    assert guidance.rows_evaluated == r["batch_rows_evaluated"]
    if r["method"] == "multistep":
        assert_close_rel(x, d[run], 1e-4)
    else:
        # The adaptive controller accepts or rejects steps by comparing an error estimate with 1, so float32
        # rounding differences of ~1e-6 (here: the attention kernel) move borderline decisions: perturbing the
        # noise by 1e-6 relative moves the sample by 1.3% of its mean magnitude. Measured here: 0.4% mean, 0.4%
        # max of scale. A different solver is far away (the 12-step multistep sample: 10% mean, 9% max).
        assert_close_rel(x, d[run], 0.02)
        assert (x - d[run]).abs().mean() < 0.02 * d[run].abs().mean()


def test_full_size_models_match_published_keys_and_shapes():
    shapes = json.loads(golden_file("full_size_state_dict_shapes.json").read_text())
    with torch.device("meta"):
        models = {"dit": GVFDiT(GVFDiTConfig()), "motion_vae": MotionVAE(MotionVAEConfig(num_timesteps=32))}
    for name, model in models.items():
        ours = {k: list(v.shape) for k, v in model.state_dict().items()}
        assert ours == shapes[name], f"{name}: keys/shapes differ: {sorted(set(ours) ^ set(shapes[name]))[:10]}"
    assert sum(v.numel() for v in models["dit"].state_dict().values()) == pytest.approx(105.5e6, rel=1e-3)
    assert sum(v.numel() for v in models["motion_vae"].state_dict().values()) == pytest.approx(125.2e6, rel=1e-3)


def test_folded_decoder_equals_the_published_computation_for_narrow_heads():
    torch.manual_seed(0)
    vae = MotionVAE(MotionVAEConfig(depth=1, dim=48, queries_dim=48, num_latents=16, heads=4)).eval()   # head width 12 < 14
    for p in vae.parameters():
        torch.nn.init.normal_(p, std=0.1)
    latents, queries = torch.randn(6, 16, 16), torch.randn(2, 50, 14)
    with torch.no_grad():
        torch.testing.assert_close(vae.decode(latents, queries), vae.decode(latents, queries, folded=False),
                                   rtol=1e-4, atol=1e-5)
