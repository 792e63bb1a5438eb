"""TRELLIS' transformer blocks (ModulatedTransformerCrossBlock and its sparse twin; the plain SparseTransformerBlock),
one class each for dense and sparse tokens (tokens.py), parameter names as published."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor, nn

from ...kernels.residual_layer_norm import add_norm
from ..config import AttentionHeads, ModelConfig
from ..transformer import CrossAttention, FeedForward, SelfAttention
from .tokens import DenseTokens, SparseTokens


@dataclass
class FlowConfig(ModelConfig, AttentionHeads):
    """The constructor arguments both TRELLIS flow transformers take (ckpts/*_flow_*.json `args`)."""
    resolution: int
    in_channels: int
    model_channels: int
    cond_channels: int
    out_channels: int
    num_blocks: int
    num_heads: Optional[int] = None
    num_head_channels: int = 64
    mlp_ratio: float = 4
    patch_size: int = 2
    pe_mode: str = "ape"
    use_fp16: bool = False          # precision is chosen at run time (pipelines/trellis.py)
    use_checkpoint: bool = False
    share_mod: bool = False
    qk_rms_norm: bool = False
    qk_rms_norm_cross: bool = False


def trunk_dtype(blocks: nn.Module) -> torch.dtype:
    """The dtype of a trunk's weights: activations are carried in it (half when the trunk was made half)."""
    return next(blocks.parameters()).dtype


class ModulatedCrossBlock(nn.Module):
    """adaLN-modulated self-attention, cross-attention to the image tokens, modulated MLP."""

    def __init__(self, channels: int, ctx_channels: int, heads: int, mlp_ratio: float = 4.0, share_mod: bool = False,
                 qk_rms_norm: bool = False, qk_rms_norm_cross: bool = False):
        super().__init__()
        self.share_mod = share_mod
        self.norm1 = nn.LayerNorm(channels, elementwise_affine=False, eps=1e-6)
        self.norm2 = nn.LayerNorm(channels, elementwise_affine=True, eps=1e-6)
        self.norm3 = nn.LayerNorm(channels, elementwise_affine=False, eps=1e-6)
        self.self_attn = SelfAttention(channels, heads, qk_rms_norm)
        self.cross_attn = CrossAttention(channels, ctx_channels, heads, qk_rms_norm_cross)
        self.mlp = FeedForward(channels, mlp_ratio)
        if not share_mod:
            self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(channels, 6 * channels))

    def forward(self, x: Tensor, emb: Tensor, context: Tensor, tokens: DenseTokens | SparseTokens) -> Tensor:
        """x (B, L, C) or (N, C); emb (B, C) time embedding (or (B, 6C) shared modulation); context (B, Lc, C_ctx).
        Where every batch item has as many tokens, each residual update and the norm after it go through `add_norm`
        on a (B, 1, L, C) view: the published operations in float32, one fused pass in half precision (under
        autocast the norms would otherwise run in float32 and the modulation on float32 copies)."""
        mod = emb if self.share_mod else self.adaLN_modulation(emb)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod.chunk(6, dim=1)
        kv = self.cross_attn.keys_values(context)
        grid = tokens.grid(x)
        if grid is None:            # sparse items of different sizes: the modulation row by row
            shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = map(
                tokens.rows, (shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp))
            h = self.norm1(x) * (1 + scale_msa) + shift_msa
            x = x + self.self_attn(h, tokens.self_attend) * gate_msa
            x = x + self.cross_attn(self.norm2(x), kv, tokens.cross_attend)
            h = self.norm3(x) * (1 + scale_mlp) + shift_mlp
            return x + self.mlp(h) * gate_mlp
        shape = x.shape
        rows, update = (lambda t: t.reshape(shape)), (lambda t: t.reshape(grid.shape))      # noqa: E731
        _, h = add_norm(grid, None, None, self.norm1, shift_msa, 1 + scale_msa)
        x, h = add_norm(grid, update(self.self_attn(rows(h), tokens.self_attend)), gate_msa, self.norm2)
        x, h = add_norm(x, update(self.cross_attn(rows(h), kv, tokens.cross_attend)), None, self.norm3, shift_mlp,
                        1 + scale_mlp)
        return rows(x + update(self.mlp(rows(h))) * gate_mlp[:, None, None])


class TransformerBlock(nn.Module):
    """Self-attention then MLP, pre-norm without affine parameters."""

    def __init__(self, channels: int, heads: int, mlp_ratio: float = 4.0, qk_rms_norm: bool = False):
        super().__init__()
        self.norm1 = nn.LayerNorm(channels, elementwise_affine=False, eps=1e-6)
        self.norm2 = nn.LayerNorm(channels, elementwise_affine=False, eps=1e-6)
        self.attn = SelfAttention(channels, heads, qk_rms_norm)
        self.mlp = FeedForward(channels, mlp_ratio)

    def forward(self, x: Tensor, tokens: DenseTokens | SparseTokens) -> Tensor:
        x = x + self.attn(self.norm1(x), tokens.self_attend)
        return x + self.mlp(self.norm2(x))
