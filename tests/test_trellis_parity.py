"""Parity with the published TRELLIS modules (as vendored by GVFDiffusion), on GVF_GOLDEN_TRELLIS_DIR."""
import json

import pytest
import torch

from gvf4d.models.sparse import SparseTensor, spconv_available
from gvf4d.models.trellis import (GaussianDecoder, SLatFlowModel, SparseStructureDecoder, SparseStructureFlowModel,
                                  rename_gvf_static_vae_keys)
from gvf4d.models.weights import load_strict, read_state_dict
from gvf4d.samplers import FlowEulerSampler

from golden import assert_close_rel, config, load

GOLDEN = ("GVF_GOLDEN_TRELLIS_DIR", "trellis")
CONV_BACKENDS = ["torch", pytest.param("spconv", marks=pytest.mark.skipif(not spconv_available(),
                                                                          reason="spconv not installed"))]


def golden(name):
    return load(name, *GOLDEN)


def model(cls, name):
    weights, _ = golden(f"{name}_weights.safetensors")
    return load_strict(cls(config(f"{name}_weights.safetensors", *GOLDEN)), weights, name).eval()


def set_conv_backend(m, backend):
    for module in m.modules():
        if hasattr(module, "use_spconv"):
            module.backend = backend


@torch.no_grad()
def test_sparse_structure_flow():
    io, _ = golden("ss_flow_small_io.safetensors")
    out = model(SparseStructureFlowModel, "ss_flow_small")(io["x"], io["t"], io["cond"])
    assert_close_rel(out, io["out"], 1e-5)


@torch.no_grad()
def test_flow_euler_sampler_with_guidance_interval():
    io, meta = golden("flow_euler_small_io.safetensors")
    p = json.loads(meta["params"])
    flow = model(SparseStructureFlowModel, "ss_flow_small")
    out = FlowEulerSampler(p["sigma_min"]).sample(flow, io["noise"], io["cond"], io["neg_cond"], p["steps"],
                                                  p["rescale_t"], p["cfg_strength"], p["cfg_interval"])
    assert_close_rel(out, io["samples"], 1e-5)


@torch.no_grad()
def test_sparse_structure_decoder_and_occupied_voxels():
    io, _ = golden("ss_decoder_small_io.safetensors")
    logits = model(SparseStructureDecoder, "ss_decoder_small")(io["z"])
    assert_close_rel(logits, io["logits"], 1e-5)
    # the occupied voxels agree wherever the reference logit is not within rounding of the threshold
    ref = io["logits"]
    decided = ref.abs() > 1e-4 * ref.abs().max()
    assert torch.equal((logits > 0) & decided, (ref > 0) & decided)
    assert torch.equal(torch.argwhere(ref > 0)[:, [0, 2, 3, 4]].int(), io["coords"])


@pytest.mark.parametrize("backend", CONV_BACKENDS)
@torch.no_grad()
def test_structured_latent_flow(backend):
    io, _ = golden("slat_flow_small_io.safetensors")
    flow = model(SLatFlowModel, "slat_flow_small")
    set_conv_backend(flow, backend)
    out = flow(SparseTensor.from_coords(io["feats"], io["coords"]), io["t"], io["cond"])
    assert torch.equal(out.coords, io["out_coords"])
    assert_close_rel(out.feats, io["out_feats"], 1e-5)


@torch.no_grad()
def test_gaussian_decoder_raw_and_activated():
    io, _ = golden("gs_decoder_small_io.safetensors")
    dec = model(GaussianDecoder, "gs_decoder_small")
    out = dec(SparseTensor.from_coords(io["feats"], io["coords"]))
    assert torch.equal(out.coords, io["out_layer_coords"])
    assert_close_rel(out.feats, io["out_layer_feats"], 1e-5)
    for b, (raw, g) in enumerate(zip(dec.split(out), dec.to_gaussians(out))):
        for name in ("xyz", "features_dc", "scaling", "rotation", "opacity"):
            assert_close_rel(raw["_" + name], io[f"b{b}.raw_{name}"], 1e-5)
        a = g.activated()
        assert_close_rel(a["means"], io[f"b{b}.xyz"], 1e-5)
        assert_close_rel(a["sh_dc"], io[f"b{b}.features"][:, 0], 1e-5)
        assert_close_rel(a["scales"], io[f"b{b}.scaling"], 1e-5)
        assert_close_rel(a["quats"], io[f"b{b}.rotation"], 1e-5)
        assert_close_rel(a["opacities"], io[f"b{b}.opacity"][:, 0], 1e-5)


def test_gvf_checkpoint_keys_map_onto_the_decoder(tmp_path):
    weights, _ = golden("gs_decoder_small_weights.safetensors")
    published = {}
    for k, v in weights.items():   # as GVF's static-VAE checkpoint names them (DDP prefix included)
        k = k.replace("blocks.", "decoder.", 1) if k.startswith("blocks.") else k
        k = k.replace("input_layer.", "from_latent.", 1) if k.startswith("input_layer.") else k
        published["module." + k] = v
    published["module.encoder.0.weight"] = torch.zeros(1)     # the checkpoint's other parts are dropped
    torch.save(published, tmp_path / "ema_static_vae.pt")
    renamed = rename_gvf_static_vae_keys(read_state_dict(tmp_path / "ema_static_vae.pt"))
    assert set(renamed) == set(weights)
    load_strict(GaussianDecoder(config("gs_decoder_small_weights.safetensors", *GOLDEN)), renamed, "renamed")


@torch.no_grad()
def test_half_precision_trunks_agree_with_float32():
    """The CUDA path's precision plumbing (half trunks carrying half activations, autocast around them), run on the
    CPU in bfloat16: same result as float32 within bfloat16 rounding."""
    io, _ = golden("slat_flow_small_io.safetensors")
    flow = model(SLatFlowModel, "slat_flow_small")
    x = SparseTensor.from_coords(io["feats"], io["coords"])
    ref = flow(x, io["t"], io["cond"]).feats
    for trunk in (flow.input_blocks, flow.blocks, flow.out_blocks):
        trunk.to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = flow(SparseTensor.from_coords(io["feats"], io["coords"]), io["t"], io["cond"]).feats
    assert out.dtype == torch.float32
    assert ((out - ref).norm() / ref.norm()) < 3e-2


def _block_and_tokens(device="cpu", dtype=torch.float32, uneven=False):
    """A small ModulatedCrossBlock with random weights, and inputs for it as dense tokens (B=2) and as the rows of
    two sparse items (of 50 and 50, or 50 and 40 rows)."""
    from gvf4d.models.trellis.blocks import ModulatedCrossBlock
    from gvf4d.models.trellis.tokens import DenseTokens, SparseTokens
    torch.manual_seed(0)
    block = ModulatedCrossBlock(64, 32, 4, qk_rms_norm=True).eval()
    for p in block.parameters():
        torch.nn.init.normal_(p, std=0.2)
    x, emb, context = (t.to(device, dtype) for t in (torch.randn(2, 50, 64), torch.randn(2, 64), torch.randn(2, 7, 32)))
    sizes = (50, 40 if uneven else 50)
    coords = torch.cat([torch.cat([torch.full((n, 1), i), torch.randint(0, 8, (n, 3))], 1) for i, n in enumerate(sizes)])
    rows = SparseTensor.from_coords(torch.randn(sum(sizes), 64).to(device, dtype), coords.int().to(device), 2)
    return block.to(device, dtype), (x, emb, context, DenseTokens), (rows.feats, emb, context, SparseTokens(rows))


def _per_row(block, x, emb, context, tokens, monkeypatch):
    """The block's per-row path, the one items of different sizes take."""
    with monkeypatch.context() as m:
        m.setattr(tokens if isinstance(tokens, type) else type(tokens), "grid", lambda *args: None)
        return block(x, emb, context, tokens)


@torch.no_grad()
def test_modulated_block_on_equal_items_is_the_published_operations_in_float32(monkeypatch):
    """Equal-sized items go through add_norm on a (B, 1, L, C) view: in float32 the published operations, bit for
    bit, dense and sparse; items of different sizes keep the per-row path."""
    block, dense, sparse = _block_and_tokens()
    for x, emb, context, tokens in (dense, sparse):
        assert tokens.grid(x) is not None
        assert torch.equal(block(x, emb, context, tokens), _per_row(block, x, emb, context, tokens, monkeypatch))
    _, _, (x, _, _, tokens) = _block_and_tokens(uneven=True)
    assert tokens.grid(x) is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the fused residual norms need a GPU (run on the GPU machine)")
@torch.no_grad()
def test_modulated_block_in_half_precision_agrees_with_its_per_row_path_on_cuda(monkeypatch):
    ref_block, ref_dense, ref_sparse = _block_and_tokens("cuda")
    block, dense, sparse = _block_and_tokens("cuda", torch.float16)
    for ref_inputs, inputs in ((ref_dense, dense), (ref_sparse, sparse)):
        ref = ref_block(*ref_inputs).float()
        fused = block(*inputs).float()
        per_row = _per_row(block, *inputs, monkeypatch).float()
        err = lambda out: ((out - ref).norm() / ref.norm()).item()     # noqa: E731
        assert err(fused) < 2e-3 and err(fused) < 1.5 * err(per_row), (err(fused), err(per_row))


def _res_block_inputs(device="cpu", dtype=torch.float32):
    """A small SparseResBlock3d with random weights, its input on two equally long sparse items, a time embedding."""
    from gvf4d.models.trellis.slat_flow import SparseResBlock3d
    torch.manual_seed(0)
    block = SparseResBlock3d(32, 16, 48).eval()
    for p in block.parameters():
        torch.nn.init.normal_(p, std=0.2)
    voxels = torch.randperm(6 ** 3)[:60]
    xyz = torch.stack([voxels // 36, voxels // 6 % 6, voxels % 6], 1)
    coords = torch.cat([torch.cat([torch.full((60, 1), i), xyz], 1) for i in range(2)]).int()
    x = SparseTensor.from_coords(torch.randn(120, 32).to(device, dtype), coords.to(device), 2)
    return block.to(device, dtype), x, torch.randn(2, 16).to(device, dtype)


@torch.no_grad()
def test_sparse_res_block_on_equal_items_is_the_published_operations_in_float32(monkeypatch):
    block, x, emb = _res_block_inputs()
    out = block(x, emb).feats
    with monkeypatch.context() as m:
        m.setattr(SparseTensor, "item_grid", lambda *args: None)
        assert torch.equal(out, block(x.replace(x.feats), emb).feats)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the fused residual norms need a GPU (run on the GPU machine)")
@torch.no_grad()
def test_sparse_res_block_in_half_precision_agrees_with_its_per_row_path_on_cuda(monkeypatch):
    ref_block, ref_x, ref_emb = _res_block_inputs("cuda")
    block, x, emb = _res_block_inputs("cuda", torch.float16)
    ref = ref_block(ref_x, ref_emb).feats
    fused = block(x, emb).feats.float()
    with monkeypatch.context() as m:
        m.setattr(SparseTensor, "item_grid", lambda *args: None)
        per_row = block(x.replace(x.feats), emb).feats.float()
    err = lambda out: ((out - ref).norm() / ref.norm()).item()     # noqa: E731
    assert err(fused) < 2e-3 and err(fused) < 1.5 * err(per_row), (err(fused), err(per_row))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU (run on the GPU machine)")
@torch.no_grad()
def test_structure_flow_sampling_replayed_from_cuda_graphs_is_the_eager_sampling():
    """As the pipeline runs it on CUDA (pipelines/trellis.py `_structure_flow`): half trunk, autocast, guidance on
    part of the steps (two batch sizes, two graphs); the replays give the eager result bit for bit."""
    from gvf4d.kernels.cuda_graph import GraphedCall
    torch.manual_seed(0)
    flow = SparseStructureFlowModel(dict(resolution=8, in_channels=4, out_channels=4, model_channels=64,
                                         cond_channels=32, num_blocks=2, num_heads=4, patch_size=1, qk_rms_norm=True))
    for p in flow.parameters():
        torch.nn.init.normal_(p, std=0.1)
    flow = flow.cuda().eval()
    flow.blocks.half()
    graphed = GraphedCall(flow)
    noise, cond = torch.randn(1, 4, 8, 8, 8, device="cuda"), torch.randn(1, 7, 32, device="cuda")
    sample = lambda velocity: FlowEulerSampler(1e-5).sample(     # noqa: E731
        velocity, noise, cond, torch.zeros_like(cond), 6, 3.0, 5.0, (0.5, 1.0))
    with torch.autocast("cuda", torch.float16):
        eager = sample(flow)
        captured = sample(graphed)
    # what autocast freed when its context ended is reused and overwritten before the replay (a graph that read
    # memory outside its own, such as autocast's cached casts of the float32 layers, would now read NaNs)
    junk = [torch.full((k * 256,), float("nan"), device="cuda") for k in range(1, 400)]
    del junk
    with torch.autocast("cuda", torch.float16):
        replayed = sample(graphed)
    assert graphed.failed is None and len(graphed._graphs) == 2
    assert eager.abs().max() > 0 and torch.equal(captured, eager) and torch.equal(replayed, eager)
