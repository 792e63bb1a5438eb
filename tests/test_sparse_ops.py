"""The sparse layers against direct dense computations, for many random seeds and grids."""
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from gvf4d.models.sparse import (Segments, SparseConv3d, SparseTensor, downsample, segment_attention, spconv_available,
                                 upsample, window_partition)
from gvf4d.models.trellis.tokens import SparseTokens

SEEDS = st.integers(0, 2 ** 31 - 1)


def random_voxels(seed, batch=2, res=12, fill=0.3, channels=5):
    g = torch.Generator().manual_seed(seed)
    occupied = torch.rand(batch, res, res, res, generator=g) < fill
    occupied[:, 0, 0, 0] = True                                   # no empty batch item
    coords = torch.argwhere(occupied).int()                       # grouped by batch, x-major
    return SparseTensor.from_coords(torch.randn(len(coords), channels, generator=g), coords, batch), g


def dense(x: SparseTensor, res: int) -> torch.Tensor:
    c = x.coords.long()
    d = torch.zeros(x.batch_size, x.feats.shape[1], res, res, res)
    d[c[:, 0], :, c[:, 1], c[:, 2], c[:, 3]] = x.feats
    return d


@settings(max_examples=15, deadline=None)
@given(seed=SEEDS, kernel=st.sampled_from([1, 3, 5]))
def test_submanifold_conv_equals_dense_conv_at_active_voxels(seed, kernel):
    x, g = random_voxels(seed)
    conv = SparseConv3d(5, 4, kernel, backend="torch")
    with torch.no_grad():
        conv.conv.weight.copy_(torch.randn(conv.conv.weight.shape, generator=g))
        out = conv(x).feats
    c = x.coords.long()
    ref = F.conv3d(dense(x, 12), conv.conv.weight.permute(0, 4, 1, 2, 3), conv.conv.bias, padding=kernel // 2)
    # sums of up to 5^3 x 5 products of unit normals: float32 rounding in a different order reaches ~1e-5
    torch.testing.assert_close(out, ref[c[:, 0], :, c[:, 1], c[:, 2], c[:, 3]], rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(not spconv_available(), reason="spconv not installed")
@settings(max_examples=10, deadline=None)
@given(seed=SEEDS)
def test_spconv_and_pytorch_paths_agree(seed):
    x, g = random_voxels(seed, res=16)
    conv = SparseConv3d(5, 6, 3)
    with torch.no_grad():
        conv.backend = "torch"
        a = conv(x).feats
        conv.backend = "spconv"
        b = conv(SparseTensor.from_coords(x.feats, x.coords, x.batch_size)).feats
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@settings(max_examples=15, deadline=None)
@given(seed=SEEDS)
def test_downsample_pools_as_published_and_upsample_restores_rows(seed):
    x, _ = random_voxels(seed)
    down = downsample(x)
    c = x.coords.long()
    parent_key = torch.cat([c[:, :1], c[:, 1:] // 2], 1)
    for row in range(0, len(down.coords), 7):
        children = (parent_key == down.coords[row].long()).all(1)
        expected = x.feats[children].sum(0) / (children.sum() + 1)      # the published scatter-mean counts its zero
        torch.testing.assert_close(down.feats[row], expected)
    keys = down.coords.long() @ torch.tensor([1 << 30, 1 << 20, 1 << 10, 1])
    assert bool((keys[1:] > keys[:-1]).all())                          # sorted by (batch, x, y, z)
    up = upsample(down.replace(down.feats * 2))
    assert torch.equal(up.coords, x.coords)
    assert up.stride == 1


@settings(max_examples=15, deadline=None)
@given(seed=SEEDS, window=st.sampled_from([2, 4, 8]), shifted=st.booleans())
def test_windowed_attention_equals_attention_within_each_window(seed, window, shifted):
    x, g = random_voxels(seed, res=10, fill=0.2)
    shift = window // 2 if shifted else 0
    q, k, v = (torch.randn(len(x.coords), 2, 4, generator=g) for _ in range(3))
    out = SparseTokens(x, window, shift).self_attend(q, k, v)
    c = x.coords.long()
    wid = torch.cat([c[:, :1], (c[:, 1:] + shift) // window], 1)
    for key in torch.unique(wid, dim=0)[:12]:
        rows = (wid == key).all(1)
        ref = F.scaled_dot_product_attention(q[rows].transpose(0, 1), k[rows].transpose(0, 1), v[rows].transpose(0, 1))
        torch.testing.assert_close(out[rows], ref.transpose(0, 1), rtol=1e-5, atol=1e-5)
    order, lengths = window_partition(x.coords, window, shift)
    assert int(lengths.sum()) == len(x.coords) and torch.equal(torch.sort(order).values, torch.arange(len(order)))


@settings(max_examples=15, deadline=None)
@given(seed=SEEDS)
def test_segment_attention_equals_one_attention_per_segment(seed):
    g = torch.Generator().manual_seed(seed)
    q_len = torch.randint(1, 9, (4,), generator=g)
    k_len = torch.randint(1, 9, (4,), generator=g) if seed % 3 else torch.full((4,), 5)   # padded, or equal lengths
    q = torch.randn(int(q_len.sum()), 3, 8, generator=g)
    k, v = (torch.randn(int(k_len.sum()), 3, 8, generator=g) for _ in range(2))
    out = segment_attention(q, k, v, Segments.of(q_len), Segments.of(k_len))
    qs, ks, vs, outs = (t.split(n.tolist()) for t, n in ((q, q_len), (k, k_len), (v, k_len), (out, q_len)))
    for a, b, c, o in zip(qs, ks, vs, outs):
        ref = F.scaled_dot_product_attention(a.transpose(0, 1), b.transpose(0, 1), c.transpose(0, 1)).transpose(0, 1)
        torch.testing.assert_close(o, ref, rtol=1e-5, atol=1e-5)


def _flash_available():
    from gvf4d.models.attention import _flash_attn_func
    return torch.cuda.is_available() and _flash_attn_func() is not None


@pytest.mark.skipif(not _flash_available(), reason="flash-attn with CUDA only (not installed here)")
def test_flash_varlen_and_padded_sdpa_agree():
    g = torch.Generator(device="cuda").manual_seed(0)
    q_len, k_len = torch.tensor([5, 17, 9], device="cuda"), torch.tensor([7, 3, 30], device="cuda")
    q = torch.randn(int(q_len.sum()), 4, 32, generator=g, device="cuda", dtype=torch.float16)
    k, v = (torch.randn(int(k_len.sum()), 4, 32, generator=g, device="cuda", dtype=torch.float16) for _ in range(2))
    flash = segment_attention(q, k, v, Segments.of(q_len), Segments.of(k_len), backend="flash")
    sdpa = segment_attention(q, k, v, Segments.of(q_len), Segments.of(k_len), backend="sdpa")
    torch.testing.assert_close(flash, sdpa, rtol=2e-3, atol=2e-3)
