"""TRELLIS' structured-latent flow model: a U-shaped sparse network over the active voxels.

Input blocks (sparse conv res-blocks, the last one pooling by 2) -> modulated sparse transformer at the pooled
resolution (cross-attention to the image tokens) -> output blocks (un-pooling, skip connections) -> velocity.
Same state_dict as the published SLatFlowModel."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...kernels.residual_layer_norm import add_norm
from ..embeddings import TimestepEmbedder, xyz_sincos_embedding
from ..sparse import SparseConv3d, SparseTensor, downsample, upsample
from .blocks import FlowConfig, ModulatedCrossBlock, trunk_dtype
from .tokens import SparseTokens


@dataclass
class SLatFlowConfig(FlowConfig):
    """ckpts/slat_flow_*.json `args`: the flow's, plus the sparse input/output convolution stages."""
    NAME = "structured-latent flow"

    num_io_res_blocks: int = 2
    io_block_channels: list = field(default_factory=list)
    use_skip_connection: bool = True


def item_norm(x: SparseTensor, feats: Tensor, norm: nn.LayerNorm, shift: Optional[Tensor] = None,
              weight: Optional[Tensor] = None) -> Tensor:
    """feats (N, C) on x's rows -> norm(feats) with the norm's own affine, or norm(feats) * weight + shift with
    per-item weight, shift (B, C). Where x's items are equally long through `add_norm` on their (B, 1, L, C) view
    (float32: the published operations; half precision: one fused pass, not a float32 norm under autocast), else
    row by row as published."""
    grid = x.item_grid(feats)
    if grid is not None:
        return add_norm(grid, None, None, norm, shift, weight)[1].reshape(feats.shape)
    h = norm(feats)
    return h if weight is None else h * x.per_item(weight) + x.per_item(shift)


class SparseResBlock3d(nn.Module):
    """LayerNorm -> SiLU -> conv -> LayerNorm modulated by the time embedding -> SiLU -> conv, plus a skip;
    optionally pooling (before) or un-pooling (before) by 2."""

    def __init__(self, channels: int, emb_channels: int, out_channels: int, resample: Optional[str] = None):
        super().__init__()
        self.resample = resample
        self.norm1 = nn.LayerNorm(channels, elementwise_affine=True, eps=1e-6)
        self.norm2 = nn.LayerNorm(out_channels, elementwise_affine=False, eps=1e-6)
        self.conv1 = SparseConv3d(channels, out_channels, 3)
        self.conv2 = SparseConv3d(out_channels, out_channels, 3)
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, 2 * out_channels))
        self.skip_connection = nn.Linear(channels, out_channels) if channels != out_channels else nn.Identity()

    def forward(self, x: SparseTensor, emb: Tensor) -> SparseTensor:
        scale, shift = self.emb_layers(emb).chunk(2, dim=1)
        if self.resample == "down":
            x = downsample(x)
        elif self.resample == "up":
            x = upsample(x)
        h = self.conv1(x.replace(F.silu(item_norm(x, x.feats, self.norm1))))
        h = self.conv2(x.replace(F.silu(item_norm(x, h.feats, self.norm2, shift, 1 + scale))))
        return h.replace(h.feats + self.skip_connection(x.feats))


class SLatFlowModel(nn.Module):
    def __init__(self, config: SLatFlowConfig | dict):
        super().__init__()
        cfg = SLatFlowConfig.coerce(config)
        if cfg.pe_mode != "ape":
            raise ValueError(f"structured-latent flow: pe_mode {cfg.pe_mode!r} is not supported (published: 'ape')")
        stages = math.log2(cfg.patch_size)
        if stages != int(stages) or int(stages) != len(cfg.io_block_channels):
            raise ValueError(f"structured-latent flow: patch_size {cfg.patch_size} needs log2(patch_size) "
                             f"io_block_channels, got {cfg.io_block_channels}")
        self.config = cfg
        c = cfg.model_channels
        io = list(cfg.io_block_channels)
        self.t_embedder = TimestepEmbedder(c)
        if cfg.share_mod:
            self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(c, 6 * c))
        self.input_layer = nn.Linear(cfg.in_channels, io[0])
        self.input_blocks = nn.ModuleList()
        for chs, next_chs in zip(io, io[1:] + [c]):
            self.input_blocks.extend(SparseResBlock3d(chs, c, chs) for _ in range(cfg.num_io_res_blocks - 1))
            self.input_blocks.append(SparseResBlock3d(chs, c, next_chs, resample="down"))
        self.blocks = nn.ModuleList([
            ModulatedCrossBlock(c, cfg.cond_channels, cfg.heads, cfg.mlp_ratio, cfg.share_mod, cfg.qk_rms_norm,
                                cfg.qk_rms_norm_cross)
            for _ in range(cfg.num_blocks)])
        skip = 2 if cfg.use_skip_connection else 1
        self.out_blocks = nn.ModuleList()
        for chs, prev_chs in zip(reversed(io), [c] + list(reversed(io[1:]))):
            self.out_blocks.append(SparseResBlock3d(prev_chs * skip, c, chs, resample="up"))
            self.out_blocks.extend(SparseResBlock3d(chs * skip, c, chs) for _ in range(cfg.num_io_res_blocks - 1))
        self.out_layer = nn.Linear(io[0], cfg.out_channels)

    def forward(self, x: SparseTensor, t: Tensor, cond: Tensor) -> SparseTensor:
        """x: latent feats (N, C_in) on the voxels; t (B,) model time in [0, 1000]; cond (B, L, C_cond)
        -> velocity on the same voxels, rows in the same order."""
        cfg = self.config
        dtype = trunk_dtype(self.blocks)            # half when the trunk holds half weights (published use_fp16)
        h = x.replace(self.input_layer(x.feats).to(dtype))
        emb = self.t_embedder(t)
        if cfg.share_mod:
            emb = self.adaLN_modulation(emb)
        emb, cond = emb.to(dtype), cond.to(dtype)
        skips = []
        for block in self.input_blocks:
            h = block(h, emb)
            skips.append(h.feats)
        h = h.replace(h.feats + xyz_sincos_embedding(h.coords[:, 1:].float(), cfg.model_channels).to(h.feats.dtype))
        tokens = SparseTokens(h)
        for block in self.blocks:
            h = h.replace(block(h.feats, emb, cond, tokens))
        for block, skip in zip(self.out_blocks, reversed(skips)):
            h = block(h.replace(torch.cat([h.feats, skip], dim=1)) if cfg.use_skip_connection else h, emb)
        return h.replace(self.out_layer(F.layer_norm(h.feats.float(), h.feats.shape[-1:])).float())
