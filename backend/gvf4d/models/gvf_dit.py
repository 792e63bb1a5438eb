"""The GVF temporal-aware diffusion transformer (the published `DiT` of GVFDiffusion, same state_dict).

Input: a noisy variation-field latent x (B, T, N, C) — T frames of N latent tokens — the model time t (B,),
per-frame image features cond_images (B, T, L, C_img), the canonical Gaussians static_latent (B, S, 14)
(normalised) and the N latent tokens' canonical positions deformation_position_xyz (B, N, 3).
Each block: spatial self-attention within a frame, temporal self-attention across frames per token (both
adaLN-modulated, qk RMS norm), cross-attention to the frame's image tokens, cross-attention to the
canonical Gaussians, then a modulated MLP. Output: v-prediction (B, T, N, C_out).

The conditioning (`GVFDiT.condition`: every block's image keys/values and canonical-Gaussian attention) depends
on the frame features and the canonical Gaussians only, so a sampler computes it once and calls `denoise` per
step; `forward` does both. Unlike the published code, the canonical-Gaussian attention is computed once per
sample rather than once per frame (every frame attends to the same Gaussians). In half precision two exact
shortcuts are taken (`condition(fast=False)` runs the published computation; float32 keeps it by default):
- the canonical-Gaussian attention is folded: its keys and values are affine maps of the 14-channel Gaussian
  rows, so each head's query is carried back through the key projection to 14 channels (the constant part of a
  score cancels in the softmax), the rows themselves serve as keys and values of every head, and the value and
  output projections fold into one 14*H -> C matrix: half the attention width, no keys/values per head;
- a sample whose context tokens are all identical (the guidance branches without frame features or without
  canonical Gaussians: zeros) attends uniformly, so the attention's output is that token's projected value for
  every query: computed once, the attention is skipped for that sample.
Both give the published result up to rounding.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable, Literal, NamedTuple, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..kernels.cuda_graph import FrozenNest
from ..kernels.residual_layer_norm import add_norm
from ..kernels.shared_row_attention import shared_row_attention
from .config import AttentionHeads, ModelConfig
from .embeddings import TimestepEmbedder, xyz_sincos_embedding
from .transformer import CrossAttention, FeedForward, SelfAttention, keys_values_of


@dataclass
class GVFDiTConfig(ModelConfig, AttentionHeads):
    """Constructor arguments of the published DiT (configs/diffusion.yml `model`)."""
    NAME = "DiT"

    resolution: int = 512
    in_channels: int = 16
    out_channels: int = 16
    model_channels: int = 512
    static_cond_channels: int = 14
    image_cond_channels: int = 1024
    num_blocks: int = 12
    num_heads: Optional[int] = 16
    num_head_channels: int = 64
    mlp_ratio: float = 4
    patch_size: int = 1
    pe_mode: Literal["ape", "learnable", "none"] = "ape"
    use_fp16: bool = True           # accepted for config compatibility; precision is chosen at run time
    use_checkpoint: bool = False
    use_skip_connection: bool = True
    share_mod: bool = False
    qk_rms_norm: bool = True
    qk_rms_norm_cross: bool = False
    no_temporal_attn: bool = False


class FoldedStaticAttention(NamedTuple):
    """A block's canonical-Gaussian cross-attention folded onto the 14-channel rows (see the module docstring).
    Queries and keys are zero-padded from 14 to 16 channels per head for the attention kernels."""
    rows: Tensor           # (B, S, 16) normalised canonical rows, zero-padded: every head's keys (values: [..., :14])
    query_weight: Tensor   # (H*16, C): the block's query projection carried through the key projection
    query_bias: Tensor     # (H*16,)
    out_weight: Tensor     # (C, H*14): the value projection, then the output projection
    out_bias: Tensor       # (C,)
    scale: float           # the published softmax scale, 1/sqrt(head width)


class ContextCondition(NamedTuple):
    """One cross-attention's conditioning for a batch. Samples whose context tokens are all identical get their
    output (the same for every query) from `constant`; the others (`live`) attend with `attend`."""
    attend: Any                  # keys/values (B', L, H, D) pair or FoldedStaticAttention, for the live samples
    live: Optional[range | Tensor]   # the samples that attend: side by side (a range), else (B',) indices; None: all
    constant: Optional[Tensor]   # (B, C) the other samples' output (rows of live samples unused); None with live None


class BlockCondition(NamedTuple):
    image: ContextCondition      # keys/values per frame: (B'*T, L, H, D)
    static: ContextCondition     # folded, or the published keys/values (B', S, H, D)


class Conditioning(FrozenNest):
    """`GVFDiT.condition`'s result: every block's BlockCondition, in block order, immutable; a graphed network call
    flattens it once and reuses that while it lives (kernels/cuda_graph.py)."""


def attend_context(x: Tensor, cond: ContextCondition, attend: Callable[[Tensor, Any], Tensor]) -> Tensor:
    """x (B, ..., C) queries -> (B, ..., C): attend(x_live, cond.attend) for the live samples, the constant
    output for the others."""
    if cond.live is None:
        return attend(x, cond.attend)
    out = cond.constant.reshape(x.shape[0], *[1] * (x.ndim - 2), -1).expand(x.shape).to(x.dtype)
    if len(cond.live) == 0:
        return out
    live = sample_index(cond.live)
    out = out.contiguous()
    out[live] = attend(x[live], cond.attend)
    return out


def add_context_norm(x: Tensor, h: Tensor, cond: ContextCondition, attend: Callable[[Tensor, Any], Tensor],
                     norm: nn.LayerNorm, shift: Optional[Tensor] = None,
                     weight: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
    """x (B, T, N, C) + attend_context(h, cond, attend), then `norm` (adaLN shift, 1 + scale (B, C), or its own affine)
    -> (x', h'). With the attending samples side by side (the guidance branches) they are read as views and each
    run of samples gets its own residual-norm pass into the same results, the constant output read as a broadcast
    and the attention's straight from it: no (B, T, N, C) update is gathered, scattered or assembled."""
    live = cond.live
    if not isinstance(live, range) or len(live) == 0:
        return add_norm(x, attend_context(h, cond, attend), None, norm, shift, weight)
    B = x.shape[0]
    constant = cond.constant.reshape(B, 1, 1, -1).expand(x.shape).to(x.dtype)
    x_new = torch.empty(x.shape, device=x.device, dtype=x.dtype)
    h_new = torch.empty(x.shape, device=x.device, dtype=x.dtype)
    part_of = lambda t, part: None if t is None else t[part]     # noqa: E731
    for part in (slice(0, live.start), slice(live.start, live.stop), slice(live.stop, B)):
        if part.start < part.stop:
            delta = attend(h[part], cond.attend) if part.start == live.start else constant[part]
            add_norm(x[part], delta, None, norm, part_of(shift, part), part_of(weight, part), out=h_new[part],
                     x_out=x_new[part])
    return x_new, h_new


def condition_samples(image: ContextCondition, frames: int) -> int:
    """The number of samples an image cross-attention's conditioning is for (its keys/values are per frame)."""
    return image.attend[0].shape[0] // frames if image.live is None else image.constant.shape[0]


def sample_index(live: range | Tensor) -> slice | Tensor:
    """Samples side by side as a slice (indexing gives views), others as their indices (indexing gathers)."""
    return slice(live.start, live.stop) if isinstance(live, range) else live


def live_samples(context: Tensor) -> Optional[range | Tensor]:
    """context (B, L, C) -> the samples whose tokens are not all identical: None if that is every sample, a range
    where they lie side by side, else their indices (B',) (one synchronisation: once per sampling run, not per
    step)."""
    same = (context == context[:, :1]).flatten(1).all(1)
    if not bool(same.any()):
        return None
    live = (~same).nonzero().flatten().tolist()
    start = live[0] if live else 0
    if live == list(range(start, start + len(live))):
        return range(start, start + len(live))
    return torch.tensor(live, device=context.device)


def uniform_attention_outputs(attns: list[CrossAttention], token: Tensor) -> list[Tensor]:
    """token (B, 1, C): the context of a sample whose tokens are all this one -> each attention's output (B, C)
    for any query: the weights are uniform over identical values."""
    return [attn.to_out(value.flatten(-2))[:, 0] for attn, (_, value) in zip(attns, keys_values_of(attns, token))]


FOLD_WIDTH = 16


def fold_static_attention(attns: list[CrossAttention], proj: nn.Linear, rows: Tensor) -> list[FoldedStaticAttention]:
    """attns: every block's canonical-Gaussian cross-attention (no key norm), proj: the DiT's static_cond_proj,
    rows (B, S, 14) -> each block's folded attention, computed in float32 for all blocks at once (a handful of
    launches rather than a dozen per block: this runs on the CPU's clock) and returned in the weights' dtype."""
    dtype = attns[0].to_q.weight.dtype
    n, H, C = len(attns), attns[0].heads, attns[0].to_q.weight.shape[0]
    D, pad = C // H, FOLD_WIDTH - rows.shape[-1]
    stacked = lambda get: torch.stack([get(a) for a in attns]).float()       # noqa: E731  (n, ...) float32
    with torch.autocast(rows.device.type, enabled=False):
        w_kv = stacked(lambda a: a.to_kv.weight).reshape(n, 2, H, D, C)
        b_kv = stacked(lambda a: a.to_kv.bias).reshape(n, 2, H, D)
        w_in, b_in = proj.weight.float(), proj.bias.float()
        key_map, value_map = w_kv[:, 0] @ w_in, w_kv[:, 1] @ w_in              # (n, H, D, 14): rows -> keys, values
        value_const = w_kv[:, 1] @ b_in + b_kv[:, 1]                           # (n, H, D); the keys' constant cancels
        w_q = stacked(lambda a: a.to_q.weight).reshape(n, H, D, C)
        b_q = stacked(lambda a: a.to_q.bias).reshape(n, H, D)
        query_weight = torch.einsum("nhde,nhdc->nhec", key_map, w_q)           # (n, H, 14, C)
        query_bias = torch.einsum("nhde,nhd->nhe", key_map, b_q)               # (n, H, 14)
        w_out = stacked(lambda a: a.to_out.weight).reshape(n, C, H, D)
        out_weight = torch.einsum("nchd,nhde->nche", w_out, value_map)         # (n, C, H, 14)
        out_bias = torch.einsum("nchd,nhd->nc", w_out, value_const) + stacked(lambda a: a.to_out.bias)
        query_weight = F.pad(query_weight, (0, 0, 0, pad)).reshape(n, H * FOLD_WIDTH, C).to(dtype)
        query_bias = F.pad(query_bias, (0, pad)).reshape(n, -1).to(dtype)
        out_weight, out_bias = out_weight.reshape(n, C, -1).to(dtype), out_bias.to(dtype)
    padded_rows = F.pad(rows, (0, pad))
    return [FoldedStaticAttention(padded_rows, *parts, scale=D ** -0.5)
            for parts in zip(query_weight.unbind(0), query_bias.unbind(0), out_weight.unbind(0), out_bias.unbind(0))]


def folded_static_attention(x: Tensor, fold: FoldedStaticAttention) -> Tensor:
    """x (B, L, C) queries -> (B, L, C): the canonical-Gaussian cross-attention in folded form. Every (query,
    head) pair is one query of a single-head attention over the rows."""
    B, L, C = x.shape
    q = F.linear(x, fold.query_weight, fold.query_bias)                        # (B, L, H*16)
    heads = q.shape[-1] // FOLD_WIDTH
    y = shared_row_attention(q.reshape(B, L * heads, FOLD_WIDTH), fold.rows.to(q.dtype),
                             fold.out_weight.shape[1] // heads, fold.scale)    # (B, L*H, 14)
    return F.linear(y.reshape(B, L, -1), fold.out_weight, fold.out_bias)


class PendingUpdate(NamedTuple):
    """A block's last residual update, x + delta * gate, handed on unapplied: the next norm adds it in its pass."""
    delta: Tensor        # (B, T, N, C)
    gate: Tensor         # (B, C)


class GVFBlock(nn.Module):
    def __init__(self, cfg: GVFDiTConfig):
        super().__init__()
        c, h = cfg.model_channels, cfg.heads
        self.temporal = not cfg.no_temporal_attn
        self.share_mod = cfg.share_mod
        self.norm1 = nn.LayerNorm(c, elementwise_affine=False, eps=1e-6)
        self.norm2 = nn.LayerNorm(c, elementwise_affine=False, eps=1e-6) if self.temporal else nn.Identity()
        self.norm3 = nn.LayerNorm(c, elementwise_affine=True, eps=1e-6)
        self.norm4 = nn.LayerNorm(c, elementwise_affine=True, eps=1e-6)
        self.norm5 = nn.LayerNorm(c, elementwise_affine=False, eps=1e-6)
        self.spatial_self_attn = SelfAttention(c, h, cfg.qk_rms_norm)
        self.temporal_self_attn = SelfAttention(c, h, cfg.qk_rms_norm) if self.temporal else nn.Identity()
        self.image_cross_attn = CrossAttention(c, c, h, cfg.qk_rms_norm_cross)
        self.static_cross_attn = CrossAttention(c, c, h, cfg.qk_rms_norm_cross)
        self.mlp = FeedForward(c, cfg.mlp_ratio)
        if not cfg.share_mod:
            self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(c, 6 * c))
            self.adaLN_modulation_temporal = nn.Sequential(nn.SiLU(), nn.Linear(c, 3 * c)) if self.temporal else nn.Identity()

    def modulation(self, mod: Tensor) -> list[Tensor]:
        """mod (B, C) -> [shift, 1 + scale, gate] for spatial, (temporal,) mlp, each (B, C), as published: the
        norms take 1 + scale as their weight."""
        if self.share_mod:
            parts = list(mod.chunk(9 if self.temporal else 6, dim=1))
        else:
            s = self.adaLN_modulation(mod).chunk(6, dim=1)
            temporal = list(self.adaLN_modulation_temporal(mod).chunk(3, dim=1)) if self.temporal else []
            parts = [*s[:3], *temporal, *s[3:]]
        return [1 + part if i % 3 == 1 else part for i, part in enumerate(parts)]

    def modulation_layers(self) -> list[tuple[nn.Linear, slice]]:
        """The modulation's products as (layer, its output rows) in the order of `modulation`'s parts."""
        c = self.norm1.normalized_shape[0]
        spatial = self.adaLN_modulation[1]
        temporal = [(self.adaLN_modulation_temporal[1], slice(0, 3 * c))] if self.temporal else []
        return [(spatial, slice(0, 3 * c)), *temporal, (spatial, slice(3 * c, 6 * c))]

    def forward(self, x: Tensor, m: list[Tensor], cond: BlockCondition,
                pending: Optional[PendingUpdate] = None) -> tuple[Tensor, PendingUpdate]:
        """x (B, T, N, C); m: this block's `modulation`; cond: this block's part of GVFDiT.condition; pending:
        the previous block's MLP update, not yet in x. -> (x, this block's MLP update, not yet in x: the next norm
        applies it). x, m and pending may be one sample's (B = 1) shared by a conditioning of several (the guidance
        branches): the self-attentions run once, the samples part at the image cross-attention."""
        B, T, N, C = x.shape
        m = [part.expand(B, -1) for part in m]
        shift, weight, gate = m[:3]
        x, h = add_norm(x, *(pending or (None, None)), self.norm1, shift, weight)
        delta = self.spatial_self_attn(h.reshape(B * T, N, C)).reshape(B, T, N, C)
        if self.temporal:            # the norm writes frame-transposed tokens; the attention reads them as a view
            x, h = add_norm(x, delta, gate, self.norm2, *m[3:5], out=x.new_empty(B, N, T, C).transpose(1, 2))
            h = self.temporal_self_attn(h.transpose(1, 2).reshape(B * N, T, C))
            delta, gate = h.reshape(B, N, T, C).transpose(1, 2), m[5]
        x, h = add_norm(x, delta, gate, self.norm3)
        samples = condition_samples(cond.image, T)
        if samples != B:              # one sample's tokens, every conditioning sample's from here: views
            x, h = x.expand(samples, -1, -1, -1), h.expand(samples, -1, -1, -1)
            m = [part.expand(samples, -1) for part in m]
        x, h = add_context_norm(x, h, cond.image, self._image_attention, self.norm4)
        shift, weight, gate = m[-3:]
        x, h = add_context_norm(x, h, cond.static, self._static_attention, self.norm5, shift, weight)
        return x, PendingUpdate(self.mlp(h), gate)

    def _image_attention(self, x: Tensor, kv: tuple[Tensor, Tensor]) -> Tensor:
        """x (B, T, N, C): each frame's tokens attend to that frame's image tokens."""
        B, T, N, C = x.shape
        return self.image_cross_attn(x.reshape(B * T, N, C), kv).reshape(B, T, N, C)

    def _static_attention(self, x: Tensor, static) -> Tensor:
        """x (B, T, N, C): every frame attends to the same canonical Gaussians, one attention over all T*N queries."""
        B, T, N, C = x.shape
        h = x.reshape(B, T * N, C)
        if isinstance(static, FoldedStaticAttention):
            return folded_static_attention(h, static).reshape(B, T, N, C)
        return self.static_cross_attn(h, static).reshape(B, T, N, C)


class FinalLayer(nn.Module):
    def __init__(self, channels: int, out_channels: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(channels, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(channels, out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(channels, 2 * channels))

    def modulation(self, c: Tensor) -> list[Tensor]:
        """c (B, C) -> [shift, 1 + scale], each (B, C)."""
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return [shift, 1 + scale]

    def modulation_layers(self) -> list[tuple[nn.Linear, slice]]:
        """The modulation's product as (layer, its output rows)."""
        return [(self.adaLN_modulation[1], slice(None))]

    def forward(self, x: Tensor, m: list[Tensor], pending: PendingUpdate) -> Tensor:
        """x (B, T, N, C) and the last block's pending update, m: `modulation` (B or 1 samples) -> (B, T, N, C_out)."""
        return self.linear(add_norm(x, *pending, self.norm_final, *[part.expand(x.shape[0], -1) for part in m])[1])


class GVFDiT(nn.Module):
    def __init__(self, config: GVFDiTConfig | dict):
        super().__init__()
        cfg = GVFDiTConfig.coerce(config)
        if cfg.patch_size != 1:
            raise ValueError("GVFDiT supports patch_size 1 only (as published)")
        self.config = cfg
        c = cfg.model_channels
        self.t_embedder = TimestepEmbedder(c)
        if cfg.share_mod:
            self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(c, (9 if not cfg.no_temporal_attn else 6) * c))
        if cfg.pe_mode == "learnable":
            self.pos_embedder = nn.Parameter(torch.randn(1, cfg.resolution, c))
        self.input_layer = nn.Linear(cfg.in_channels, c)
        self.blocks = nn.ModuleList([GVFBlock(cfg) for _ in range(cfg.num_blocks)])
        self.final_layer = FinalLayer(c, cfg.out_channels)
        self.static_cond_proj = nn.Linear(cfg.static_cond_channels, c)
        self.image_cond_proj = nn.Linear(cfg.image_cond_channels, c)

    def forward(self, x: Tensor, t: Tensor, cond_images: Tensor, static_latent: Tensor,
                deformation_position_xyz: Optional[Tensor] = None) -> Tensor:
        """x (B, T, N, C_in), t (B,), cond_images (B, T, L, C_img), static_latent (B, S, 14),
        deformation_position_xyz (B, N, 3) -> (B, T, N, C_out); x, t and deformation_position_xyz may be one
        sample's, shared by the B conditioning samples (see `denoise`)."""
        return self.denoise(x, t, self.condition(cond_images, static_latent), deformation_position_xyz)

    def condition(self, cond_images: Tensor, static_latent: Tensor, fast: Optional[bool] = None) -> Conditioning:
        """cond_images (B, T, L, C_img), static_latent (B, S, 14) -> every block's conditioning, the same for
        every denoising step. fast: the folded canonical-Gaussian attention (where the model has no key norm on
        it and at most 16 Gaussian channels, as published) and uniform attention for constant contexts (module
        docstring), or, False, the published computation; None: fast in half precision (half weights or
        autocast), published in float32 (bit-faithful: the adaptive sampler's step control follows the last
        bit)."""
        B, T, L, C_img = cond_images.shape
        dtype = self.input_layer.weight.dtype          # float32 (autocast or not), or the weights' half precision
        frames, static_latent = cond_images.to(dtype).reshape(B, T * L, C_img), static_latent.to(dtype)
        if fast is None:
            fast = dtype != torch.float32 or torch.is_autocast_enabled(cond_images.device.type)
        fold = fast and not self.config.qk_rms_norm_cross and self.config.static_cond_channels <= FOLD_WIDTH
        image_live, static_live = (live_samples(frames), live_samples(static_latent)) if fast else (None, None)
        pick = lambda t, live: t if live is None else t[sample_index(live)]      # noqa: E731
        image_emb = self.image_cond_proj(pick(frames, image_live)).reshape(-1, L, self.config.model_channels)
        static_rows = pick(static_latent, static_live)
        static_emb = None if fold else self.static_cond_proj(static_rows)
        image_token = None if image_live is None else self.image_cond_proj(frames[:, :1])
        static_token = None if static_live is None else self.static_cond_proj(static_latent[:, :1])
        image_attns = [block.image_cross_attn for block in self.blocks]
        static_attns = [block.static_cross_attn for block in self.blocks]
        n = len(image_attns)
        # fast: every block's keys/values with one product (float32: the published one product per block)
        keys_values = keys_values_of if fast else lambda attns, ctx: [a.keys_values(ctx) for a in attns]  # noqa: E731
        image = keys_values(image_attns, image_emb) if image_emb.shape[0] else [None] * n
        if not static_rows.shape[0]:
            static = [None] * n
        elif fold:
            static = fold_static_attention(static_attns, self.static_cond_proj, static_rows)
        else:
            static = keys_values(static_attns, static_emb)
        image_const = [None] * n if image_live is None else uniform_attention_outputs(image_attns, image_token)
        static_const = [None] * n if static_live is None else uniform_attention_outputs(static_attns, static_token)
        return Conditioning(BlockCondition(ContextCondition(i, image_live, ic), ContextCondition(s, static_live, sc))
                            for i, ic, s, sc in zip(image, image_const, static, static_const))

    def denoise(self, x: Tensor, t: Tensor, condition: Sequence[BlockCondition],
                deformation_position_xyz: Optional[Tensor] = None) -> Tensor:
        """x (B, T, N, C_in), t (B,), condition from `condition`, deformation_position_xyz (B, N, 3)
        -> v-prediction (B, T, N, C_out). x, t and deformation_position_xyz may be one sample's (batch 1) shared by
        the condition's B samples, as the guidance branches evaluate one latent under three conditionings: in half
        precision the first block's self-attentions, which do not read the conditioning, then run once for all
        (float32 runs every sample from the start, the published operations)."""
        dtype = self.input_layer.weight.dtype
        samples = condition_samples(condition[0].image, x.shape[1]) if condition else x.shape[0]
        if x.shape[0] not in (1, samples):
            raise ValueError(f"GVFDiT: x has {x.shape[0]} samples, the condition {samples}")
        if x.shape[0] != samples and (dtype == torch.float32 or t.numel() != 1):
            x, t = x.expand(samples, -1, -1, -1).contiguous(), t.reshape(-1).expand(samples)
        h = self.input_layer(x.to(dtype))
        mod = self.t_embedder(t)
        if self.config.share_mod:
            mod = self.adaLN_modulation(mod)
        if self.config.pe_mode == "ape":
            if deformation_position_xyz is None:
                raise ValueError("GVFDiT with pe_mode 'ape' needs deformation_position_xyz (B, N, 3)")
            h = h + xyz_sincos_embedding(deformation_position_xyz, self.config.model_channels)[:, None].to(h.dtype)
        elif self.config.pe_mode == "learnable":
            h = h + self.pos_embedder
        *block_mods, final_mod = self.modulations(mod)
        pending = None
        for block, m, cond in zip(self.blocks, block_mods, condition):
            h, pending = block(h, m, cond, pending)
        return self.final_layer(h, final_mod, pending)

    def modulations(self, mod: Tensor) -> list[list[Tensor]]:
        """mod (B, C) -> every block's `modulation`, then the final layer's. In half precision (the weights'
        dtype) with a modulation per block: one SiLU and one product for all of them, on the layers' weights
        stacked once (kept while the parameters are unchanged) with the norms' 1 added to the scales' biases: per
        step two kernels instead of a few per layer."""
        layers = [*self.blocks, self.final_layer]
        if self.config.share_mod or self.input_layer.weight.dtype == torch.float32:
            return [layer.modulation(mod) for layer in layers]
        weight, bias, widths = self._stacked_modulation(layers)
        stacked = F.linear(F.silu(mod.to(weight.dtype)), weight, bias)
        return [list(chunk.split(self.config.model_channels, dim=1)) for chunk in stacked.split(widths, dim=1)]

    def _stacked_modulation(self, layers: list[nn.Module]) -> tuple[Tensor, Tensor, list[int]]:
        """The modulation layers' weights and biases stacked in `modulations`' order ((parts * C, C), (parts * C,)),
        1 added to the biases of the scales, and each layer's rows in the stack; cached while every parameter is the
        same tensor, unmodified."""
        per_layer = [layer.modulation_layers() for layer in layers]
        rows = [(linear, part) for pieces in per_layer for linear, part in pieces]
        params = [p for linear, _ in rows for p in (linear.weight, linear.bias)]
        key = tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in params)
        cached = self.__dict__.get("_modulation_stack")
        if cached is None or cached[0] != key:
            c = self.config.model_channels
            with torch.no_grad():
                weight = torch.cat([linear.weight[part] for linear, part in rows])
                bias = torch.cat([linear.bias[part] for linear, part in rows])
                bias.view(-1, c)[1::3] += 1                # every part is [shift, scale, gate] or [shift, scale]
            widths = [sum(linear.weight[part].shape[0] for linear, part in pieces) for pieces in per_layer]
            cached = self.__dict__["_modulation_stack"] = (key, weight, bias, widths)
        return cached[1:]

    def config_dict(self) -> dict:
        return asdict(self.config)
