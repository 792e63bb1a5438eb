import math

import pytest
import torch

from gvf4d.kernels.fps import farthest_point_sampling
from gvf4d.models.attention import _flash_attn_func, attention, flash_attn_usable
from gvf4d.models.gvf_dit import GVFDiT, GVFDiTConfig
from gvf4d.models.weights import WeightsError, convert_to_safetensors, load_strict, read_state_dict
from gvf4d.representations import Gaussians
from gvf4d.representations.gvf_gaussians import MIN_KERNEL_SIZE, GVFGaussians


def _fps_reference(points, k):
    chosen = [0]
    dist = [float("inf")] * len(points)
    for _ in range(k - 1):
        last = points[chosen[-1]]
        for i, p in enumerate(points):
            dist[i] = min(dist[i], sum((a - b) ** 2 for a, b in zip(p, last)))
        chosen.append(max(range(len(points)), key=lambda i: (dist[i], -i)))
    return chosen


def test_fps_matches_the_definition_with_padding():
    torch.manual_seed(0)
    pts = torch.randn(2, 50, 3)
    lengths = torch.tensor([50, 37])
    idx = farthest_point_sampling(pts, 12, lengths)
    assert idx[0].tolist() == _fps_reference(pts[0].tolist(), 12)
    assert idx[1].tolist() == _fps_reference(pts[1, :37].tolist(), 12)
    with pytest.raises(ValueError, match="12 points from sets of 10"):
        farthest_point_sampling(pts, 12, torch.tensor([50, 10]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU (run on the GPU machine)")
def test_fps_cuda_graph_path_picks_the_same_points():
    torch.manual_seed(0)
    pts = torch.randn(2, 20_000, 3, device="cuda")
    lengths = torch.tensor([20_000, 15_000], device="cuda")
    for k in (300, 512):     # a partial last chunk, and whole chunks
        graphed = farthest_point_sampling(pts, k, lengths)
        plain = farthest_point_sampling(pts, k, lengths, use_graph=False)
        assert torch.equal(graphed, plain)


def test_rms_norm_half_path_agrees_with_the_published_float_path():
    from gvf4d.models.attention import MultiHeadRMSNorm
    torch.manual_seed(0)
    norm = MultiHeadRMSNorm(32, 4)
    with torch.no_grad():
        norm.gamma.uniform_(0.5, 1.5)
        x = torch.randn(3, 7, 4, 32)
        ref = norm(x)                                       # float32: normalize(x) * gamma * sqrt(D)
        torch.testing.assert_close(ref, torch.nn.functional.normalize(x, dim=-1) * norm.gamma * 32 ** 0.5)
        half = norm(x.bfloat16()).float()                   # fused rms_norm
    assert ((half - ref).norm() / ref.norm()) < 8e-3        # bf16 rounding


def test_argument_flattener_round_trips_and_keeps_a_frozen_nest_while_it_lives():
    import gc

    from gvf4d.kernels.cuda_graph import ArgumentFlattener, Signature
    from gvf4d.models.gvf_dit import Conditioning
    torch.manual_seed(0)
    dit = GVFDiT(GVFDiTConfig(resolution=16, model_channels=32, num_blocks=2, num_heads=2, image_cond_channels=8))
    with torch.no_grad():
        condition = dit.half().condition(torch.randn(3, 2, 5, 8), torch.randn(3, 7, 14))   # folded, a float leaf
    assert isinstance(condition, Conditioning)
    flattener = ArgumentFlattener()
    call = ((torch.ones(1, 2, 16, 16), 3.5), {"condition": condition, "xyz": torch.zeros(1, 16, 3), "n": [1, 2]})
    leaves, tokens = flattener.flatten(call)
    rebuilt = flattener.unflatten(leaves, tokens)
    assert isinstance(rebuilt[1]["condition"], Conditioning) and rebuilt[1]["n"] == [1, 2] and rebuilt[0][1] == 3.5
    assert rebuilt[1]["condition"][1].static.attend.scale == condition[1].static.attend.scale
    for a, b in zip(flattener.flatten(rebuilt)[0], leaves):
        assert a is b
    # the conditioning is one Signature token, and flattening it again reuses the same leaves and signature
    (signature,) = [t for t in tokens if isinstance(t, Signature)]
    again, tokens_again = flattener.flatten(call)
    assert [t for t in tokens_again if isinstance(t, Signature)][0] is signature and tokens_again == tokens
    assert all(a is b for a, b in zip(again, leaves))
    # another nest of the same shapes gets an equal signature; other shapes or values a different one
    with torch.no_grad():
        same = dit.condition(torch.randn(3, 2, 5, 8), torch.randn(3, 7, 14))
        other = dit.condition(torch.randn(3, 2, 6, 8), torch.randn(3, 7, 14))
    assert flattener.flatten(same)[1] == flattener.flatten(condition)[1] != flattener.flatten(other)[1]
    assert flattener.flatten((1, [2]))[1] != flattener.flatten((1, [3]))[1]
    # only the four conditionings are kept (the rebuilt one too), each until it is freed
    assert len(flattener._frozen) == 4
    del condition, call, rebuilt, same, other
    gc.collect()
    assert not flattener._frozen
    with pytest.raises(TypeError, match="holds a list"):
        flattener.flatten(Conditioning([(torch.ones(2), [1])]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU (run on the GPU machine)")
def test_graphed_dit_call_equals_the_eager_call():
    from gvf4d.kernels.cuda_graph import GraphedCall
    torch.manual_seed(0)
    dit = GVFDiT(GVFDiTConfig(resolution=64, model_channels=64, num_blocks=2, num_heads=4, image_cond_channels=32))
    dit = dit.cuda().half().eval()
    images, static = torch.randn(1, 4, 20, 32, device="cuda"), torch.randn(1, 100, 14, device="cuda")
    xyz = torch.randn(1, 64, 3, device="cuda")
    graphed = GraphedCall(lambda x, t, condition, xyz: dit.denoise(x, t, condition, xyz).float())
    with torch.no_grad():
        condition = dit.condition(images, static)       # fast form (half weights): nested tensors and a float
        for step in range(3):      # capture, then replays with new inputs and the same (not re-copied) condition
            x, t = torch.randn(1, 4, 64, 16, device="cuda"), torch.rand(1, device="cuda") * 999
            torch.testing.assert_close(graphed(x, t, condition, xyz), dit.denoise(x, t, condition, xyz).float(),
                                       rtol=0, atol=0)
        # the same tensor modified in place is copied again
        condition[0].image.attend[0].mul_(0.5)
        torch.testing.assert_close(graphed(x, t, condition, xyz), dit.denoise(x, t, condition, xyz).float(),
                                   rtol=0, atol=0)
        # a new condition of the same shapes replays the same graph
        condition = dit.condition(images * 2, static)
        torch.testing.assert_close(graphed(x, t, condition, xyz), dit.denoise(x, t, condition, xyz).float(),
                                   rtol=0, atol=0)
    assert graphed.failed is None and len(graphed._graphs) == 1
    small = GraphedCall(lambda x: x * 2, max_graphs=2)
    for n in (3, 4, 5, 3):                  # a third shape evicts the least recently used one
        torch.testing.assert_close(small(torch.ones(n, device="cuda")), torch.full((n,), 2.0, device="cuda"))
    kept = [[token[1] for token in tokens if token[0] is torch.Tensor] for _, tokens in small._graphs]
    assert kept == [[torch.Size([5])], [torch.Size([3])]]
    # under autocast the same arguments run other kernels: a graph of their own
    product = GraphedCall(lambda a: a @ a)
    a = torch.randn(16, 16, device="cuda")
    assert product(a).dtype == torch.float32
    with torch.autocast("cuda", dtype=torch.float16):
        assert product(a).dtype == torch.float16
        with torch.autocast("cuda", dtype=torch.bfloat16):
            assert product(a).dtype == torch.bfloat16
    assert product(a).dtype == torch.float32 and len(product._graphs) == 3
    small.clear()
    assert not small._graphs
    torch.testing.assert_close(small(torch.ones(2, device="cuda")), torch.full((2,), 2.0, device="cuda"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU (run on the GPU machine)")
def test_graphed_call_returns_copies_of_nested_outputs():
    from gvf4d.kernels.cuda_graph import GraphedCall
    graphed = GraphedCall(lambda x: (x * 2, {"plus": x + 1}))
    first = graphed(torch.ones(3, device="cuda"))
    second = graphed(torch.full((3,), 5.0, device="cuda"))      # a replay into the same output buffers
    assert torch.equal(first[0], torch.full((3,), 2.0, device="cuda")) and torch.equal(first[1]["plus"], first[0])
    assert torch.equal(second[0], torch.full((3,), 10.0, device="cuda")) and second[1]["plus"][0].item() == 6.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU (run on the GPU machine)")
def test_engine_decode_replays_the_decoder_context_from_a_graph():
    """The graphed context stack gives the eager decode's bits, follows new latents, and is dropped when the
    decoder's weights are cast again (a graph reads the weights' memory)."""
    from gvf4d.models.motion_vae import MotionVAE, MotionVAEConfig
    from gvf4d.pipelines.gvf import GVFEngine, GVFSettings, identity_stats
    torch.manual_seed(0)
    dit = GVFDiT(GVFDiTConfig(resolution=16, model_channels=32, num_blocks=1, num_heads=2, image_cond_channels=8))
    vae = MotionVAE(MotionVAEConfig(depth=2, dim=192, queries_dim=192, heads=3, num_latents=16))  # heads of 64
    for p in vae.parameters():
        torch.nn.init.normal_(p, std=0.05)
    engine = GVFEngine(dit, vae, identity_stats()).to("cuda")
    rows = torch.randn(300, 14, device="cuda") * 0.3
    latents = [torch.randn(4, 16, 16, device="cuda") for _ in range(2)]
    graphed = [engine.decode_rows(latent, rows, GVFSettings()) for latent in latents]   # capture, then a replay
    eager = [engine.decode_rows(latent, rows, GVFSettings(cuda_graphs=False)) for latent in latents]
    assert len(engine._decoder_context._graphs) == 1 and engine._decoder_context.failed is None
    for a, b in zip(graphed, eager):
        assert a.shape == (4, 300, 14) and torch.equal(a, b)
    exact = engine.decode_rows(latents[1], rows, GVFSettings(precision="fp32"))          # weights cast back
    assert engine._decoder_context is None
    assert ((eager[1] - exact).norm() / exact.norm()).item() < 1e-2
    assert torch.equal(engine.decode_rows(latents[1], rows, GVFSettings()), eager[1])   # a new graph, new weights


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU (run on the GPU machine)")
@pytest.mark.parametrize("method,guidance_scale", [("multistep", 1.0), ("multistep", 2.0), ("adaptive", 2.0)])
def test_sampling_waits_for_the_gpu_only_for_the_step_control(method, guidance_scale):
    """A synchronisation leaves the GPU idle while Python prepares the next step. The solvers' times stay on the
    host; the guidance computes their schedule values there and fills the network's time on the GPU. The multistep
    solver never waits; the adaptive one reads its error estimate back, once per step. The sample is the one the
    same run gives on the CPU."""
    import warnings
    from gvf4d.samplers import DiscreteVPSchedule, DPMSolverPP, ThreeWayGuidance
    schedule = DiscreteVPSchedule.cosine()
    g = torch.Generator().manual_seed(0)
    x, weight = torch.randn(1, 4, 8, 16, generator=g), 0.2 * torch.randn(16, 16, generator=g)
    weights = {"cpu": weight, "cuda": weight.cuda()}
    cond = {"cond_images": torch.randn(1, 4, 3, 16, generator=g), "static_latent": torch.randn(1, 5, 14, generator=g)}
    times = []

    def network(xx, tt, cond_images, static_latent):
        times.append(tt)
        return (xx @ weights[xx.device.type]) * (tt / 1000)[:, None, None, None] + cond_images.mean(2, keepdim=True) \
            + static_latent.mean((1, 2))[:, None, None, None]

    def sample(x, cond):
        guidance = ThreeWayGuidance(network, schedule, cond, guidance_scale=guidance_scale, guidance_scale2=1.5)
        return DPMSolverPP(schedule).sample(guidance.noise, x, steps=8, method=method)

    expected, expected_stats = sample(x, cond)
    x, cond = x.cuda(), {k: v.cuda() for k, v in cond.items()}
    torch.cuda.synchronize()
    times.clear()                  # the schedule's arrays are not on the GPU: using them there would copy (a sync)
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result, stats = sample(x, cond)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    waits = [w for w in caught if "synchroniz" in str(w.message)]
    assert stats == expected_stats and len(times) == stats.network_evaluations
    assert len(waits) == (0 if method == "multistep" else stats.accepted_steps + stats.rejected_steps)
    assert all(t.device.type == "cuda" and t.shape == (1,) for t in times)     # one latent for the branches
    torch.testing.assert_close(result.cpu(), expected, rtol=1e-5, atol=1e-5)


def test_guidance_takes_a_host_time_only_as_a_scalar():
    """Per-sample times on another device than the latent would need a copy: refused, saying what it takes."""
    from gvf4d.samplers import DiscreteVPSchedule, ThreeWayGuidance
    cond = {"cond_images": torch.zeros(2, 4, 3, 16, device="meta"),
            "static_latent": torch.zeros(2, 5, 14, device="meta")}
    guidance = ThreeWayGuidance(lambda x, t, **c: x, DiscreteVPSchedule.cosine(), cond)
    with pytest.raises(ValueError, match="a time on cpu for x on meta must be 0-d"):
        guidance.noise(torch.zeros(2, 4, 8, 16, device="meta"), torch.tensor([0.5, 0.4]))
    assert guidance.noise(torch.zeros(2, 4, 8, 16, device="meta"), torch.tensor(0.5)).shape == (2, 4, 8, 16)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the Triton kernel needs a GPU (run on the GPU machine)")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("heads,dim,tokens", [(16, 32, 1000), (16, 64, 77), (2, 16, 1)])
def test_fused_multihead_rms_norm_agrees_with_the_pytorch_path(dtype, heads, dim, tokens):
    from gvf4d.kernels.multihead_rms_norm import multihead_rms_norm
    g = torch.Generator(device="cuda").manual_seed(0)
    qkv = torch.randn(3, tokens, 3, heads, dim, device="cuda", generator=g).to(dtype)
    gamma = 1 + 0.1 * torch.randn(heads, dim, device="cuda", generator=g)
    q = qkv.unbind(2)[0]                       # a strided view, as the attention layers pass it
    exact = torch.nn.functional.normalize(q.float(), dim=-1) * gamma * dim ** 0.5
    fused = multihead_rms_norm(q, gamma, fused=True)
    ref = multihead_rms_norm(q, gamma, fused=False)
    assert fused.shape == q.shape and fused.dtype == dtype
    err = lambda a: ((a.float() - exact).norm() / exact.norm()).item()   # noqa: E731
    assert err(fused) <= 1.5 * err(ref) + 1e-4, (err(fused), err(ref))


def _random_dit(batch: int, frames: int, tokens: int, channels: int, image_channels: int, image_tokens: int,
                gaussians: int, std: float):
    """A 2-block DiT with random weights (normal, std) and random inputs -> (dit, x, t, cond)."""
    torch.manual_seed(0)
    dit = GVFDiT(GVFDiTConfig(resolution=tokens, model_channels=channels, num_blocks=2, num_heads=4,
                              image_cond_channels=image_channels)).eval()
    for p in dit.parameters():
        torch.nn.init.normal_(p, std=std)
    x, t = torch.randn(batch, frames, tokens, 16), torch.rand(batch) * 999
    cond = {"cond_images": torch.randn(batch, frames, image_tokens, image_channels),
            "static_latent": torch.randn(batch, gaussians, 14), "deformation_position_xyz": torch.randn(batch, tokens, 3)}
    return dit, x, t, cond


def test_dit_half_precision_single_sample_path_agrees_with_the_batched_one():
    """In half precision one sample's modulation is the norm's affine transform, a batch's the published sequence of
    operations: both round like half precision around the float32 result."""
    dit, x, t, cond = _random_dit(1, 3, 32, 64, 24, 10, 40, std=0.2)
    with torch.no_grad():
        exact = dit(x, t, **cond)
        dit.to(torch.bfloat16)
        single = dit(x, t, **cond).float()
        batched = dit(torch.cat([x, x]), torch.cat([t, t]), **{k: torch.cat([v, v]) for k, v in cond.items()})[:1].float()
    err = lambda a: ((a - exact).norm() / exact.norm()).item()   # noqa: E731
    assert err(batched) < 3e-2 and err(single) < 1.5 * err(batched) + 1e-3, (err(single), err(batched))


def test_stacked_modulations_are_the_layers_own_and_follow_weight_changes():
    """In half precision every block's and the final layer's adaLN modulation come from one product on stacked
    weights: the same [shift, 1 + scale, gate] parts as each layer's own product, up to the rounding of 1 + scale,
    and rebuilt when a parameter changes (a checkpoint loaded into the same model)."""
    dit, *_ = _random_dit(1, 3, 32, 64, 24, 10, 40, std=0.2)
    dit.to(torch.bfloat16)
    mod = torch.randn(2, 64).to(torch.bfloat16)
    layers = [*dit.blocks, dit.final_layer]

    def check():
        with torch.no_grad():
            stacked, own = dit.modulations(mod), [layer.modulation(mod) for layer in layers]
        assert [len(parts) for parts in stacked] == [9, 9, 2]
        for mine, theirs in zip(stacked, own):
            for a, b in zip(mine, theirs):
                assert a.shape == b.shape == (2, 64)
                assert torch.allclose(a.float(), b.float(), rtol=1e-2, atol=1e-2), (a - b).abs().max()

    check()
    with torch.no_grad():
        dit.blocks[1].adaLN_modulation_temporal[1].bias.add_(3.0)
        dit.final_layer.adaLN_modulation[1].weight.mul_(-1.0)
    check()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the Triton kernel needs a GPU (run on the GPU machine)")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", [(4, 100, 6144), (7, 3000)])
def test_fused_geglu_agrees_with_the_pytorch_path(dtype, shape):
    from gvf4d.kernels.geglu import geglu, geglu_reference
    x = torch.randn(*shape, device="cuda", generator=torch.Generator(device="cuda").manual_seed(0)) * 2
    exact = geglu_reference(x)
    fused, ref = geglu(x.to(dtype), fused=True).float(), geglu(x.to(dtype), fused=False).float()
    err = lambda a: ((a - exact).norm() / exact.norm()).item()   # noqa: E731
    assert fused.shape == exact.shape and err(fused) <= 1.5 * err(ref) + 1e-4, (err(fused), err(ref))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the Triton kernel needs a GPU (run on the GPU machine)")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", [(2, 300, 96, 256), (1000, 768, 3072), (7, 40, 128)])
def test_fused_linear_geglu_agrees_with_the_pytorch_path(dtype, shape):
    """Partial row tiles, a K that is not a multiple of the tile depth, the decoder's size; x a strided view."""
    from gvf4d.kernels.geglu import geglu_reference, linear_geglu, linear_geglu_usable
    *rows, K, F_ = shape
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(*rows, K + 8, device="cuda", generator=g)[..., 8:]
    weight, bias = torch.randn(2 * F_, K, device="cuda", generator=g) / K ** 0.5, torch.randn(2 * F_, device="cuda", generator=g)
    if torch.cuda.get_device_capability()[0] < 9:
        assert not linear_geglu_usable(x.to(dtype), weight.to(dtype), bias.to(dtype))
        pytest.skip("the fused GEGLU projection loads through TMA (sm_90+)")
    exact = geglu_reference(torch.nn.functional.linear(x, weight, bias))
    half = x.to(dtype), weight.to(dtype), bias.to(dtype)
    fused, ref = linear_geglu(*half, fused=True), linear_geglu(*half, fused=False)
    err = lambda a: ((a.float() - exact).norm() / exact.norm()).item()   # noqa: E731
    assert fused.shape == exact.shape and fused.dtype == dtype and err(fused) <= 1.5 * err(ref) + 1e-4, (err(fused), err(ref))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the Triton kernel needs a GPU (run on the GPU machine)")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("case", ["gated, per-sample modulation, frame-transposed", "no update, one sample",
                                  "ungated, the norm's own affine", "ungated, no affine"])
def test_fused_residual_layer_norm_agrees_with_the_pytorch_path(dtype, case):
    from gvf4d.kernels.residual_layer_norm import residual_layer_norm
    g = torch.Generator(device="cuda").manual_seed(0)
    r = lambda *s: torch.randn(*s, device="cuda", generator=g)   # noqa: E731
    B, T, N, C = (3, 5, 37, 96) if case.startswith("gated") else (1, 4, 50, 512)
    x, delta = r(B, T, N, C) * 2 + 0.5, r(B, N, T, C).transpose(1, 2)        # delta: a frame-transposed view
    gate = r(B, C) if case.startswith("gated") else None
    weight, bias = (1 + 0.3 * r(B, C), r(B, C)) if B > 1 or case.startswith("no") else (1 + 0.3 * r(C), r(C))
    if case.startswith("no"):
        delta = None
    if case.endswith("no affine"):
        weight = bias = None
    exact_x = x if delta is None else x + delta * (1 if gate is None else gate[:, None, None])
    exact_h = torch.nn.functional.layer_norm(exact_x, (C,), eps=1e-6)
    per_sample = lambda t: t[:, None, None] if t.ndim == 2 else t   # noqa: E731
    if weight is not None:
        exact_h = exact_h * per_sample(weight) + per_sample(bias)
    half = lambda t: None if t is None else t.to(dtype)   # noqa: E731
    args = [half(t) for t in (x, delta, gate, weight, bias)]
    results = {}
    for fused in (True, False):
        out = torch.full((B, N, T, C), float("nan"), device="cuda", dtype=dtype).transpose(1, 2)
        updated, h = residual_layer_norm(*args, 1e-6, out=out, fused=fused)
        assert h.data_ptr() == out.data_ptr() and updated.shape == h.shape == (B, T, N, C)
        results[fused] = updated.float(), h.float()
    err = lambda a, e: ((a - e).norm() / e.norm()).item()   # noqa: E731
    for i, exact in enumerate((exact_x, exact_h)):
        assert err(results[True][i], exact) <= 1.5 * err(results[False][i], exact) + 1e-4, \
            (i, err(results[True][i], exact), err(results[False][i], exact))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the Triton kernel needs a GPU (run on the GPU machine)")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", [(2, 512, 16, 32, 1370), (1, 200, 2, 16, 1100), (3, 77, 2, 16, 256),
                                   (2, 300, 4, 32, 200), (1, 1, 4, 32, 65), (64, 32, 16, 32, 32), (5, 20, 3, 16, 17)])
@pytest.mark.parametrize("normed", [False, True])
def test_small_head_attention_agrees_with_sdpa(dtype, shape, normed):
    from gvf4d.models.attention import MultiHeadRMSNorm
    from gvf4d.kernels.small_head_attention import small_head_attention
    B, LQ, H, D, LK = shape         # whole and partial query/key tiles of the three tilings (by key count)
    g = torch.Generator(device="cuda").manual_seed(0)
    qkv = torch.randn(B, LQ, 3, H, D, device="cuda", generator=g)
    q = qkv[:, :, 0]                              # a strided view of a fused projection, as the layers pass it
    k, v = torch.randn(2, B, LK, H, D, device="cuda", generator=g).unbind(0)
    norms = [MultiHeadRMSNorm(D, H).cuda() for _ in range(2)] if normed else [None, None]
    for norm in norms if normed else []:          # per-head RMS norms of q and k (the DiT's self-attentions)
        torch.nn.init.uniform_(norm.gamma, 0.5, 2.0, generator=g)
    gains = [None if n is None else n.gamma.detach() for n in norms]
    half = [t.to(dtype) for t in (q, k, v)]
    exact = small_head_attention(q, k, v, *gains, fused=False)                   # float32 SDPA
    ref = small_head_attention(*half, *[None if t is None else t.to(dtype) for t in gains], fused=False).float()
    fused = small_head_attention(*half, *gains, fused=True).float()
    assert fused.shape == (B, LQ, H, D)
    err = lambda a: ((a - exact).norm() / exact.norm()).item()   # noqa: E731
    assert err(fused) <= 1.5 * err(ref) + 1e-4, (err(fused), err(ref))
    with torch.no_grad():                         # auto picks the kernel, the norms' gains go into it
        assert attention(*half, q_norm=norms[0], k_norm=norms[1]).float().sub(fused).abs().max() == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the Triton kernels need a GPU (run on the GPU machine)")
def test_dit_fused_kernels_agree_with_the_pytorch_paths():
    """Half precision on CUDA (fused residual norms, narrow-head attention, folded canonical attention, RMS norms)
    against the same half-precision model on the CPU (PyTorch paths), both measured against float32."""
    dit, x, t, cond = _random_dit(2, 5, 96, 128, 48, 80, 300, std=0.1)
    with torch.no_grad():
        exact = dit(x, t, **cond)
        dit.to(torch.bfloat16)
        cpu = dit(x, t, **cond).float()
        dit.cuda()
        gpu = dit(x.cuda(), t.cuda(), **{k: v.cuda() for k, v in cond.items()}).float().cpu()
    err = lambda a: ((a - exact).norm() / exact.norm()).item()   # noqa: E731
    assert err(gpu) <= 1.5 * err(cpu) + 1e-3, (err(gpu), err(cpu))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="cuBLASLt's GELU epilogue needs a GPU (run on the GPU machine)")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_feed_forward_gelu_epilogue_agrees_with_the_published_layers(dtype):
    from gvf4d.models.transformer import FeedForward
    torch.manual_seed(0)
    ff = FeedForward(96).cuda()
    x = torch.randn(2, 333, 96, device="cuda")
    with torch.no_grad():
        exact = ff(x)                                       # float32: the published Linear, GELU(tanh), Linear
        ff.to(dtype)
        fused, published = ff(x.to(dtype)).float(), ff.mlp(x.to(dtype)).float()
    err = lambda a: ((a - exact).norm() / exact.norm()).item()   # noqa: E731
    assert fused.shape == exact.shape and err(fused) <= 1.5 * err(published) + 1e-4, (err(fused), err(published))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the Triton kernel needs a GPU (run on the GPU machine)")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("extent", [0.5, 40.0])
def test_fused_decoder_query_rows_agree_with_the_modules(dtype, extent):
    """The motion-VAE decoder's query rows (Gaussian embedding + Fourier position encoding, three norms) in one
    kernel, against the modules' computation in the same half precision, both measured against float32. Positions
    inside the unit cube (normalised Gaussians) and far outside it (the kernel's sine reduces its argument)."""
    import copy
    from gvf4d.models.motion_vae import MotionVAE, MotionVAEConfig
    torch.manual_seed(0)
    vae = MotionVAE(MotionVAEConfig(depth=1, dim=192, queries_dim=192, heads=4)).cuda().eval()
    for p in vae.gs_embedding.parameters():
        torch.nn.init.normal_(p, std=0.3)
    g = torch.randn(1, 1000, 14, device="cuda")
    g[..., :3] *= extent
    with torch.no_grad():
        exact = vae.decoder_cross_attn.norm(vae.embed_queries(g))
        half = copy.deepcopy(vae).cast_decoder(dtype)
        fused = half.query_rows(g, fused=True).float()
        modules = half.query_rows(g, fused=False).float()
    assert torch.equal(modules, half.decoder_cross_attn.norm(half.embed_queries(g)).float())   # the modules' path
    err = lambda a: ((a - exact).norm() / exact.norm()).item()   # noqa: E731
    assert fused.shape == exact.shape and err(fused) <= 1.5 * err(modules) + 1e-4, (err(fused), err(modules))


def test_folded_decoder_values_are_laid_out_for_the_attention_kernel():
    """Rows of value_width(14) channels with the heads side by side, as the head-summed kernel reads them in place
    (through TMA on sm_90+): no copy per chunk. (torch.einsum alone returns them head-major.)"""
    from gvf4d.kernels.head_summed_attention import _readable_at_width, value_width
    from gvf4d.models.motion_vae import MotionVAE, MotionVAEConfig
    vae = MotionVAE(MotionVAEConfig(depth=1, dim=96, queries_dim=96, heads=2)).eval()
    with torch.no_grad():
        keys, padded, _ = vae.folded_values(torch.randn(3, 20, 96))
    width = value_width(14)
    values = padded[..., :14]               # as decode_chunk_folded passes them
    assert padded.shape == (3, 20, 2, width) and values.stride() == (20 * 2 * width, 2 * width, width, 1)
    assert (padded[..., 14] == 1).all() and (padded[..., 15:] == 0).all()      # the kernel's ones, then zeros
    assert _readable_at_width(values, width) and keys.stride()[-2:] == (48, 1)


def test_context_attention_gives_constant_samples_their_output_and_attends_the_others():
    from gvf4d.models.gvf_dit import ContextCondition, attend_context, live_samples
    torch.manual_seed(0)
    x, constant = torch.randn(3, 2, 5, 4), torch.randn(3, 4)
    for constant_samples, live in (([1], [0, 2]), ([0], range(1, 3)), ([], None), ([0, 1, 2], range(0, 0))):
        context = torch.randn(3, 6, 4)
        context[constant_samples] = context[constant_samples, :1]          # every token the same
        found = live_samples(context)
        assert found == live if not isinstance(found, torch.Tensor) else found.tolist() == live
        out = attend_context(x, ContextCondition(None, found, None if found is None else constant), lambda q, _: q * 2)
        for b in range(3):
            torch.testing.assert_close(out[b], constant[b].expand(2, 5, 4) if b in constant_samples else x[b] * 2)


@pytest.mark.parametrize("device,dtype", [("cpu", torch.float32), ("cpu", torch.bfloat16), ("cuda", torch.float16)])
def test_dit_guidance_branches_side_by_side_give_what_gathering_them_gives(device, dtype):
    """The guidance branches' attending samples, side by side, are read as views and each run of samples gets its
    own residual-norm pass (models/gvf_dit.py add_context_norm); against the same conditioning with the samples as
    indices (gathered and scattered). Float32 on the fast path (fast=True)."""
    from gvf4d.models.gvf_dit import BlockCondition
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a GPU (run on the GPU machine)")
    dit, x, t, cond = _random_dit(1, 3, 32, 64, 24, 10, 40, std=0.2)
    dit.to(device, dtype)
    three = lambda a: torch.cat([a] * 3).to(device)   # noqa: E731
    images, static = three(cond["cond_images"]), three(cond["static_latent"])
    images[:2], static[:1] = 0, 0
    with torch.no_grad():
        fast = dit.condition(images, static, fast=True)
        assert fast[0].image.live == range(2, 3) and fast[0].static.live == range(1, 3)
        as_indices = lambda c: c._replace(live=torch.arange(c.live.start, c.live.stop, device=device))   # noqa: E731
        gathered = [BlockCondition(as_indices(c.image), as_indices(c.static)) for c in fast]
        xyz = three(cond["deformation_position_xyz"])
        sliced, reference = (dit.denoise(three(x), three(t), c, xyz) for c in (fast, gathered))
    if dtype != torch.bfloat16:         # float32 and the fused passes compute each row alike however split
        torch.testing.assert_close(sliced, reference, rtol=0, atol=0)
    else:                               # PyTorch's half path modulates one sample in the norm's affine (one rounding)
        assert ((sliced.float() - reference.float()).norm() / reference.float().norm()).item() < 1e-2


@pytest.mark.parametrize("device,dtype", [("cpu", torch.float32), ("cpu", torch.bfloat16), ("cuda", torch.float16)])
def test_dit_shares_one_latent_across_the_guidance_branches(device, dtype):
    """The guidance branches evaluate one latent under three conditionings: given x, t and the positions once,
    the DiT broadcasts them over the conditioning (in half precision its first self-attentions run once) and
    returns what the repeated latent gives; so does the three-way guidance's noise, which now passes them once."""
    from gvf4d.samplers import DiscreteVPSchedule, ThreeWayGuidance
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a GPU (run on the GPU machine)")
    dit, x, t, cond = _random_dit(1, 3, 32, 64, 24, 10, 40, std=0.2)
    dit.to(device, dtype)
    x, t, cond = x.to(device), t.to(device), {k: v.to(device) for k, v in cond.items()}
    three = lambda a: torch.cat([a] * 3)   # noqa: E731
    images, static = three(cond["cond_images"]), three(cond["static_latent"])
    images[:2], static[:1] = 0, 0
    xyz = cond["deformation_position_xyz"]
    with torch.no_grad():
        condition = dit.condition(images, static)
        shared, repeated = dit.denoise(x, t, condition, xyz), dit.denoise(three(x), three(t), condition, three(xyz))
        with pytest.raises(ValueError, match="x has 2 samples, the condition 3"):
            dit.denoise(torch.cat([x, x]), t, condition, xyz)
    assert shared.shape == repeated.shape == (3, *x.shape[1:])
    if dtype == torch.float32:        # float32 repeats the sample from the start: the same operations
        torch.testing.assert_close(shared, repeated, rtol=0, atol=0)
    else:                             # the products at batch 1 and 3 may round differently
        assert ((shared.float() - repeated.float()).norm() / repeated.float().norm()).item() < 1e-2
    schedule = DiscreteVPSchedule.cosine()
    calls = []

    def network(xx, tt, **c):
        calls.append((xx.shape[0], tt.shape[0], c["deformation_position_xyz"].shape[0], c["cond_images"].shape[0]))
        return dit(xx, tt, **c)
    guidance = ThreeWayGuidance(network, schedule, cond, guidance_scale=2.0, guidance_scale2=3.0)
    with torch.no_grad():
        eps = guidance.noise(x.to(dtype), torch.tensor(0.5, device=device))
    assert calls == [(1, 1, 1, 3)] and guidance.rows_evaluated == 3 and eps.shape == x.shape


def test_dit_with_a_key_norm_on_the_canonical_attention_is_not_folded():
    """A key RMS norm is not affine: such a model keeps the published canonical attention on the fast path (the
    constant-context shortcut still holds: identical tokens give identical normalised keys)."""
    from gvf4d.models.gvf_dit import FoldedStaticAttention
    torch.manual_seed(0)
    dit = GVFDiT(GVFDiTConfig(resolution=16, model_channels=32, num_blocks=1, num_heads=2, image_cond_channels=8,
                              qk_rms_norm_cross=True)).eval()
    for p in dit.parameters():
        torch.nn.init.normal_(p, std=0.3)
    x, t, xyz = torch.randn(2, 2, 16, 16), torch.rand(2) * 999, torch.randn(2, 16, 3)
    images, static = torch.randn(2, 2, 5, 8), torch.randn(2, 30, 14)
    static[0] = 0                                                  # a fully unconditional guidance branch
    with torch.no_grad():
        fast = dit.condition(images, static, fast=True)
        assert not isinstance(fast[0].static.attend, FoldedStaticAttention) and fast[0].static.live == range(1, 2)
        torch.testing.assert_close(dit.denoise(x, t, fast, xyz),
                                   dit.denoise(x, t, dit.condition(images, static, fast=False), xyz))


def test_head_summed_attention_is_per_frame_softmax_attention_summed_over_heads():
    from gvf4d.kernels.head_summed_attention import head_summed_attention
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 9, 3, 16), torch.randn(2, 4, 11, 3, 16), torch.randn(2, 4, 11, 3, 14)
    w = torch.softmax(torch.einsum("bmhd,btnhd->bthmn", q, k) * 0.3, -1)
    expected = torch.einsum("bthmn,btnhe->btme", w, v)
    torch.testing.assert_close(head_summed_attention(q, k, v, 0.3), expected)
    bias, out = torch.randn(14), torch.full((2, 4, 20, 14), float("nan"))
    result = head_summed_attention(q, k, v, 0.3, bias=bias, out=out[:, :, 5:14])       # into a slice, in place
    assert result.data_ptr() == out[:, :, 5:14].data_ptr() and out[:, :, :5].isnan().all()
    torch.testing.assert_close(out[:, :, 5:14], expected + bias)
    with pytest.raises(RuntimeError, match="needs CUDA"):
        head_summed_attention(q, k, v, 0.3, fused=True)
    with pytest.raises(ValueError, match="do not match"):
        head_summed_attention(q, k[:, :, :, :2], v, 0.3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the Triton kernel needs a GPU (run on the GPU machine)")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", [(1, 1000, 12, 64, 32, 512, 14), (2, 77, 2, 64, 3, 300, 14), (2, 77, 1, 16, 1, 300, 14),
                                   (1, 64, 3, 32, 2, 64, 40)])
@pytest.mark.parametrize("tma", [True, False])
def test_fused_head_summed_attention_agrees_with_the_pytorch_path(dtype, shape, tma, monkeypatch):
    import gvf4d.kernels.head_summed_attention as module
    from gvf4d.kernels.head_summed_attention import head_summed_attention, value_width
    B, M, H, D, T, N, E = shape                     # whole and partial query/key tiles, one and many heads
    if not tma:                                     # 64-channel heads take TMA loads on sm_90+: test the others too
        monkeypatch.setattr(module, "_tma_descriptors", lambda *args: None)
    elif D < 64 or torch.cuda.get_device_capability()[0] < 9:
        pytest.skip("TMA loads are for heads of 64+ channels on sm_90+")
    g = torch.Generator(device="cuda").manual_seed(0)
    q = torch.randn(B, M, H, D, device="cuda", generator=g)
    kv = torch.randn(B, T, N, 2, H, D, device="cuda", generator=g)               # keys: a view of a fused product
    v = torch.randn(B, T, N, H, E, device="cuda", generator=g)
    bias = torch.randn(E, device="cuda", generator=g)
    exact = head_summed_attention(q, kv[:, :, :, 0], v, D ** -0.5, bias)         # float32, PyTorch
    half = [q.to(dtype), kv.to(dtype)[:, :, :, 0], v.to(dtype)]
    ref = head_summed_attention(*half, D ** -0.5, bias.to(dtype), fused=False).float()
    out = torch.full((B, T, M + 9, E), float("nan"), device="cuda", dtype=dtype)  # written into a slice
    fused = head_summed_attention(*half, D ** -0.5, bias.to(dtype), out=out[:, :, 4:M + 4], fused=True).float()
    assert out[:, :, :4].isnan().all() and out[:, :, M + 4:].isnan().all()
    err = lambda a: ((a - exact).norm() / exact.norm()).item()   # noqa: E731
    assert err(fused) <= 1.5 * err(ref) + 1e-4, (err(fused), err(ref))           # within the half path's rounding
    # values laid out value_width(E) apart are read in place; what lies past channel E is never used
    roomy = torch.full((B, T, N, H, value_width(E)), float("nan"), device="cuda", dtype=dtype)
    roomy[..., :E] = half[2]
    assert (module._tma_descriptors(half[1], roomy[..., :E], value_width(E)) is not None) == tma   # the path tested
    in_place = head_summed_attention(*half[:2], roomy[..., :E], D ** -0.5, bias.to(dtype), fused=True).float()
    assert torch.equal(in_place, fused)
    # the ones channel in the values' storage already (the folded decoder's layout): read as it is
    roomy[..., E] = 1
    ones = head_summed_attention(*half[:2], roomy[..., :E], D ** -0.5, bias.to(dtype), fused=True, ones_in_values=True)
    assert torch.equal(ones.float(), fused)
    # values that must be copied into the kernel's layout lose the claim (the copy has no ones): still right
    assert torch.equal(head_summed_attention(*half, D ** -0.5, bias.to(dtype), fused=True, ones_in_values=True).float(),
                       fused)


def test_shared_row_attention_takes_its_values_from_the_rows():
    from gvf4d.kernels.shared_row_attention import shared_row_attention
    torch.manual_seed(0)
    q, rows = torch.randn(2, 9, 16), torch.randn(2, 13, 16)
    q[..., 15] = 0                                  # the padding channel: zero in q (or in rows)
    w = torch.softmax(torch.einsum("bmc,bsc->bms", q, rows) * 0.3, -1)
    torch.testing.assert_close(shared_row_attention(q, rows, 10, 0.3), torch.einsum("bms,bse->bme", w, rows[..., :10]))
    with pytest.raises(RuntimeError, match="needs a CUDA GPU"):
        shared_row_attention(q, rows, 14, 0.3, fused=True)
    with pytest.raises(ValueError, match="13 value channels"):
        shared_row_attention(q, rows, 13, 0.3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the CUDA kernel needs a GPU (run on the GPU machine)")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", [(1, 1000, 37, 14), (2, 333, 200, 14), (3, 5000, 4096, 14), (1, 47, 64, 8)])
def test_shared_row_attention_kernel_agrees_with_the_triton_and_pytorch_paths(dtype, shape):
    """Whole and partial query tiles and key steps, batches, the DiT's size; rows' channel 15 random (the kernel
    must leave it out of the scores where q's is zero), scores spread wide enough to move the running maximum."""
    from gvf4d.kernels.shared_row_attention import shared_row_attention
    B, M, S, E = shape
    g = torch.Generator(device="cuda").manual_seed(0)
    q = torch.randn(B, M, 16, device="cuda", generator=g) * 2
    rows = torch.randn(B, S, 16, device="cuda", generator=g)
    q[..., 15] = 0
    exact = shared_row_attention(q, rows, E, 0.4)                                   # float32, PyTorch
    half = q.to(dtype), rows.to(dtype)
    err = lambda a: ((a.float() - exact).norm() / exact.norm()).item()   # noqa: E731
    fused, triton = shared_row_attention(*half, E, 0.4, fused=True), shared_row_attention(*half, E, 0.4, fused=False)
    assert fused.shape == exact.shape and fused.dtype == dtype
    assert err(fused) <= 1.5 * err(triton) + 1e-4, (err(fused), err(triton))


def test_sdpa_attention_is_plain_softmax_attention():
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 5, 3, 8), torch.randn(2, 7, 3, 8), torch.randn(2, 7, 3, 8)
    w = torch.softmax(torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(8), -1)
    torch.testing.assert_close(attention(q, k, v, backend="sdpa"), torch.einsum("bhqk,bkhd->bqhd", w, v))
    assert not flash_attn_usable(q)   # CPU float32 never takes flash-attn


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU (run on the GPU machine)")
@pytest.mark.parametrize("dim", [32, 64])
def test_short_key_attention_kernel_agrees_with_the_default_choice(dim):
    from gvf4d.models.attention import SHORT_KEYS
    q, k, v = (torch.randn(512, SHORT_KEYS // 2, 16, dim, device="cuda", dtype=torch.float16) for _ in range(3))
    exact = attention(q.float(), k.float(), v.float(), backend="sdpa")
    for backend in ("auto", "sdpa"):  # auto: our kernel for 32 channels, the memory-efficient one for 64
        err = (attention(q, k, v, backend=backend).float() - exact).norm() / exact.norm()
        assert err < 2e-3, (backend, err)


@pytest.mark.skipif(not (torch.cuda.is_available() and _flash_attn_func() is not None),
                    reason="flash-attn with CUDA only (run on the GPU machine)")
def test_flash_attn_agrees_with_sdpa():
    q, k, v = (torch.randn(2, 300, 8, 64, device="cuda", dtype=torch.float16) for _ in range(3))
    torch.testing.assert_close(attention(q, k, v, backend="flash"), attention(q, k, v, backend="sdpa"), atol=2e-3, rtol=2e-3)


def test_strict_loading_names_every_problem(tmp_path):
    cfg = GVFDiTConfig(resolution=8, model_channels=32, num_blocks=1, num_heads=2, image_cond_channels=8)
    model = GVFDiT(cfg)
    sd = {f"module.{k}": v.clone() for k, v in model.state_dict().items()}   # as saved from DDP
    torch.save(sd, tmp_path / "ckpt.pt")
    load_strict(GVFDiT(cfg), read_state_dict(tmp_path / "ckpt.pt"), "ckpt.pt")
    bad = read_state_dict(tmp_path / "ckpt.pt")
    del bad["input_layer.weight"]
    bad["extra.weight"] = torch.zeros(1)
    bad["final_layer.linear.bias"] = torch.zeros(3)
    with pytest.raises(WeightsError) as e:
        load_strict(GVFDiT(cfg), bad, "ckpt.pt")
    msg = str(e.value)
    assert "missing keys: input_layer.weight" in msg and "unexpected keys: extra.weight" in msg
    assert "final_layer.linear.bias: file (3,) vs model (16,)" in msg
    # conversion keeps the tensors, drops the prefix
    st = convert_to_safetensors(tmp_path / "ckpt.pt")
    again = read_state_dict(st)
    assert set(again) == set(model.state_dict())


def test_pickled_objects_are_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("ran arbitrary code",))
    torch.save({"x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(WeightsError, match="weights_only=True"):
        read_state_dict(tmp_path / "evil.pt")
    with pytest.raises(WeightsError, match="not found"):
        read_state_dict(tmp_path / "nope.pt")


def test_raw_parameters_round_trip_and_deltas_follow_the_published_formulas():
    torch.manual_seed(0)
    n = 20
    g = Gaussians(means=torch.randn(n, 3), scales=torch.rand(n, 3) * 0.05 + 0.002,
                  quats=torch.nn.functional.normalize(torch.randn(n, 4), dim=-1),
                  opacities=torch.rand(n) * 0.9 + 0.05, sh_dc=torch.randn(n, 3))
    raw = GVFGaussians.from_gaussians(g)
    back = raw.to_gaussians()
    for f in ("means", "scales", "quats", "opacities", "sh_dc"):
        torch.testing.assert_close(getattr(back, f), getattr(g, f), rtol=1e-4, atol=1e-6)
    rows = raw.rows()
    assert rows.shape == (n, 14)
    torch.testing.assert_close(rows[:, 6], g.opacities, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(rows[:, 10:14], g.quats, rtol=1e-4, atol=1e-6)

    d = torch.randn(3, n, 14) * 0.1
    anim = raw.apply_deltas(d)
    t = 1
    sp = torch.nn.functional.softplus
    expect_scale = torch.sqrt(sp(raw.raw_scale + math.log(math.expm1(0.004)) + d[t, :, 3:6]) ** 2 + MIN_KERNEL_SIZE ** 2)
    torch.testing.assert_close(anim.positions[t], g.means + d[t, :, :3])
    torch.testing.assert_close(anim.scales[t], expect_scale)
    torch.testing.assert_close(anim.quats[t], torch.nn.functional.normalize(g.quats + d[t, :, 6:10], dim=-1), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(anim.sh_dc[t], g.sh_dc + d[t, :, 10:13])
    torch.testing.assert_close(anim.opacities[t], torch.sigmoid(torch.logit(g.opacities) + d[t, :, 13]), rtol=1e-4, atol=1e-5)
    zero = raw.apply_deltas(torch.zeros(2, n, 14))
    torch.testing.assert_close(zero.positions[1], g.means)
