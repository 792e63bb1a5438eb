"""The GVF motion VAE (the published `GSKLTemporalVariationalAutoEncoder`, same state_dict).

Encoder: mesh-point displacements are interpolated onto num_latents farthest-point-sampled canonical
Gaussians, embedded with their positions, and cross-attend to all mesh points -> a per-frame posterior
over (num_latents, latent_dim). Decoder: the latent (B*T, L, latent_dim) goes through a self-attention
stack; then every canonical Gaussian (its 14 attributes and position embedding) queries it by
cross-attention, giving that Gaussian's 14-channel delta in every frame. The decoder works through the
Gaussians in chunks: memory is bounded by the chunk size, not by the number of Gaussians.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..kernels.decoder_queries import decoder_queries, decoder_queries_usable
from ..kernels.fps import farthest_point_sampling
from ..kernels.geglu import geglu, linear_geglu
from ..kernels.head_summed_attention import head_summed_attention, value_width
from ..kernels.residual_layer_norm import add_norm
from ..kernels.triton_kernels import use_fused
from .attention import attention
from .config import ModelConfig
from .embeddings import PointFourierEmbed


@dataclass
class MotionVAEConfig(ModelConfig):
    """Constructor arguments of the published motion VAE (configs/diffusion.yml `motion_vae`)."""
    NAME = "motion VAE"

    depth: int = 12
    dim: int = 768
    queries_dim: int = 768
    input_dim: int = 3
    gs_dim: int = 14
    output_dim: int = 14
    num_inputs: int = 8192
    num_latents: int = 512
    latent_dim: int = 16
    heads: int = 12
    dim_head: int = -1
    weight_tie_layers: bool = False
    decoder_ff: bool = False
    enable_flash_attn: bool = True      # accepted for config compatibility; the backend picks the kernel
    num_timesteps: int = 32
    chunk_size: int = 8192
    knn_k: int = 8
    beta: float = 7.0


class FoldedContext(NamedTuple):
    """What every Gaussian of the folded decoder attends to (`MotionVAE.folded_context`), the same for all chunks."""
    keys: Tensor            # (B*T, L, H, D) the decoder cross-attention's keys
    padded_values: Tensor   # (B*T, L, H, value_width(C_out)): per head its values carried through the output
    #                         projection and the head (C_out channels), ones (the attention kernel's denominator),
    #                         zeros; the kernel reads the rows in place, through TMA where it can
    const: Tensor           # (C_out,) the constant term (output bias through the head, plus the head's bias)


class PreNorm(nn.Module):
    """LayerNorm (no affine) of the input (and of the context, when context_dim is given), then fn."""

    def __init__(self, dim: int, fn: nn.Module, context_dim: int | None = None):
        super().__init__()
        self.fn = fn
        self.norm = nn.LayerNorm(dim, eps=1e-6, elementwise_affine=False)
        self.norm_context = nn.LayerNorm(context_dim, eps=1e-6, elementwise_affine=False) if context_dim else None

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        if self.norm_context is not None:
            return self.fn(self.norm(x), context=self.norm_context(context))
        return self.fn(self.norm(x))


class Attention(nn.Module):
    def __init__(self, query_dim: int, context_dim: int | None = None, heads: int = 8, dim_head: int = 64):
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_kv = nn.Linear(context_dim or query_dim, 2 * inner, bias=False)
        self.to_out = nn.Linear(inner, query_dim)

    def split_heads(self, x: Tensor) -> Tensor:
        return x.reshape(*x.shape[:-1], self.heads, -1)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """x (B, Lq, C), context (B, Lk, C_ctx) or None (self-attention) -> (B, Lq, C)."""
        k, v = self.to_kv(x if context is None else context).chunk(2, dim=-1)
        out = attention(self.split_heads(self.to_q(x)), self.split_heads(k), self.split_heads(v))
        return self.to_out(out.flatten(-2))


class GEGLU(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return geglu(x)


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, dim * mult * 2), GEGLU(), nn.Linear(dim * mult, dim))

    def forward(self, x: Tensor) -> Tensor:
        """x (..., dim) -> (..., dim); the first product and the GEGLU in one kernel where it runs
        (kernels/geglu.py)."""
        first, _, second = self.net
        return second(linear_geglu(x, first.weight, first.bias))


@dataclass
class Posterior:
    """Diagonal Gaussian over the latent: mean, logvar (B*T, L, latent_dim); logvar clamped to [-30, 20]."""

    mean: Tensor
    logvar: Tensor

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        noise = torch.randn(self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        return self.mean + torch.exp(0.5 * self.logvar) * noise


class MotionVAE(nn.Module):
    def __init__(self, config: MotionVAEConfig | dict):
        super().__init__()
        cfg = MotionVAEConfig.coerce(config)
        if cfg.weight_tie_layers:
            raise ValueError("weight_tie_layers=True is not supported (the published model does not tie)")
        self.config = cfg
        dim, heads = cfg.dim, cfg.heads
        dim_head = dim // heads if cfg.dim_head == -1 else cfg.dim_head
        self.cross_attend_blocks = nn.ModuleList([
            PreNorm(dim, Attention(dim, dim, heads, dim_head), context_dim=dim),
            PreNorm(dim, FeedForward(dim)),
        ])
        self.input_embedding = nn.Sequential(nn.Linear(cfg.input_dim, dim), nn.LayerNorm(dim, elementwise_affine=False))
        self.gs_embedding = nn.Sequential(nn.Linear(cfg.gs_dim, dim), nn.LayerNorm(dim, elementwise_affine=False))
        self.position_encoding = nn.Sequential(PointFourierEmbed(dim), nn.LayerNorm(dim, elementwise_affine=False))
        self.layers = nn.ModuleList([
            nn.ModuleList([PreNorm(dim, Attention(dim, heads=heads, dim_head=dim_head)), PreNorm(dim, FeedForward(dim))])
            for _ in range(cfg.depth)
        ])
        self.decoder_cross_attn = PreNorm(cfg.queries_dim, Attention(cfg.queries_dim, dim, heads, dim_head), context_dim=dim)
        self.decoder_ff = PreNorm(cfg.queries_dim, FeedForward(cfg.queries_dim)) if cfg.decoder_ff else None
        self.to_outputs = nn.Linear(cfg.queries_dim, cfg.output_dim)
        self.proj = nn.Linear(cfg.latent_dim, dim)
        self.mean_fc = nn.Linear(dim, cfg.latent_dim)
        self.logvar_fc = nn.Linear(dim, cfg.latent_dim)

    # ---------------------------------------------------------------- decoder
    def cast_decoder(self, dtype: torch.dtype) -> "MotionVAE":
        """Casts the decoder's weights (latent projection, context stack, cross-attention, output head, Gaussian
        embedding) to dtype; `decode` then runs in dtype, without autocast. The Fourier position encoding stays in
        float32, as under autocast: its high-frequency phases need it (its output is cast)."""
        for module in (self.proj, self.layers, self.decoder_cross_attn, self.decoder_ff, self.to_outputs,
                       self.gs_embedding):
            if module is not None:
                module.to(dtype)
        return self

    def decode_context(self, latents: Tensor) -> tuple[Tensor, Tensor]:
        """latents (B*T, L, latent_dim) -> (the context every Gaussian queries (B*T, L, dim), that context as the
        decoder cross-attention reads it: normalised), in the decoder's weight dtype (float32 under autocast).
        Every residual is added in the pass of the norm after it (one fused pass in half precision)."""
        x = self.proj(latents.to(self.proj.weight.dtype))[None]              # (1, B*T, L, dim): add_norm's layout
        norms = [layer.norm for pair in self.layers for layer in pair] + [self.decoder_cross_attn.norm_context]
        x, h = add_norm(x, None, None, norms[0])
        for i, (self_attn, self_ff) in enumerate(self.layers):
            x, h = add_norm(x, self_attn.fn(h[0])[None], None, norms[2 * i + 1])
            x, h = add_norm(x, self_ff.fn(h), None, norms[2 * i + 2])
        return x[0], h[0]

    def embed_queries(self, gaussians: Tensor) -> Tensor:
        """gaussians (B, Q, 14) canonical rows -> (B, Q, dim). Independent of the frame."""
        dtype = self.gs_embedding[0].weight.dtype
        return self.gs_embedding(gaussians.to(dtype)) + self.position_encoding(gaussians[..., :3].float()).to(dtype)

    def query_rows(self, gaussians: Tensor, fused: Optional[bool] = None) -> Tensor:
        """gaussians (B, q, 14) -> norm(embed_queries(gaussians)) (B, q, dim): the decoder cross-attention's query
        input, in the decoder's dtype. fused: None picks the one-pass Triton kernel (kernels/decoder_queries.py)
        where it runs (CUDA, half-precision decoder weights, not inside torch.compile); True requires it; False:
        the modules."""
        linear, omega = self.gs_embedding[0], self.position_encoding[0].omega
        B, q, K = gaussians.shape
        rows = gaussians.reshape(B * q, K)
        if not use_fused(fused, decoder_queries_usable(rows, linear.weight, linear.bias, omega),
                         "decoder query embedding needs CUDA, Triton, half-precision weights, contiguous channels and "
                         "C = 6 x the Fourier frequencies", default=not torch.compiler.is_compiling()):
            return self.decoder_cross_attn.norm(self.embed_queries(gaussians))
        eps = (self.gs_embedding[1].eps, self.position_encoding[1].eps, self.decoder_cross_attn.norm.eps)
        return decoder_queries(rows, linear.weight, linear.bias, omega, eps).reshape(B, q, -1)

    def decode_chunk(self, query_embed: Tensor, context: Tensor) -> Tensor:
        """The published computation. query_embed (B, q, dim), context (B*T, L, dim) -> deltas (B, T, q, 14)."""
        B, q, dim = query_embed.shape
        T = context.shape[0] // B
        xq = query_embed[:, None].expand(B, T, q, dim).reshape(B * T, q, dim)
        out = self.decoder_cross_attn(xq, context=context)
        if self.decoder_ff is not None:
            out = out + self.decoder_ff(out)
        return self.to_outputs(out).reshape(B, T, q, -1)

    def folded_context(self, latents: Tensor) -> FoldedContext:
        """latents (B*T, L, latent_dim) -> the folded decoder's context: the self-attention stack, then the
        cross-attention's keys and folded values. Depends on the latents only: compute it once for all chunks (the
        engine replays it from a CUDA graph)."""
        return self.folded_values(self.decode_context(latents)[1])

    def folded_values(self, normed_context: Tensor) -> FoldedContext:
        """For the folded decoder, from the normalised context (decode_context's second output): the
        cross-attention's keys and its values already carried through the output projection and the head, per head,
        plus the constant term. Valid when there is no decoder MLP (the published model)."""
        attn = self.decoder_cross_attn.fn
        k, v = attn.to_kv(normed_context).chunk(2, dim=-1)
        k, v = attn.split_heads(k), attn.split_heads(v)                       # (BT, L, H, D)
        H, D = v.shape[-2:]
        w_out = attn.to_out.weight.reshape(-1, H, D)                          # (dim, H, D)
        fold = torch.einsum("od,dhe->hoe", self.to_outputs.weight.to(w_out.dtype), w_out)   # (H, 14, D)
        E = fold.shape[1]          # rows of value_width(14), heads side by side: the attention kernel reads them in
        fold = F.pad(fold, (0, 0, 0, value_width(E) - E))               # place (through TMA where it can)
        values = torch.einsum("blhe,hoe->blho", v, fold.to(v.dtype)).contiguous()        # (BT, L, H, width)
        values[..., E] = 1                       # the kernel's ones channel (head_summed_attention, ones_in_values)
        const = self.to_outputs.weight @ attn.to_out.bias + self.to_outputs.bias
        return FoldedContext(k, values, const)

    def decode_chunk_folded(self, query_rows: Tensor, context: FoldedContext, out: Optional[Tensor] = None) -> Tensor:
        """Same result as decode_chunk (given query_rows = query_rows(gaussians)), with the value, output and head
        projections folded into the values: per Gaussian and frame one attention whose values are already the 14
        output channels, summed over heads (no 768x768 output projection per Gaussian and frame; the query is
        shared by all frames). -> (B, T, q, 14), written into out (a view) when given."""
        B = query_rows.shape[0]
        attn = self.decoder_cross_attn.fn
        qh = attn.split_heads(attn.to_q(query_rows))                          # (B, q, H, D), once per chunk
        per_sample = lambda t: t.reshape(B, t.shape[0] // B, *t.shape[1:]).to(qh.dtype)   # noqa: E731
        values = context.padded_values[..., :self.config.output_dim]
        return head_summed_attention(qh, per_sample(context.keys), per_sample(values), qh.shape[-1] ** -0.5,
                                     bias=context.const.to(qh.dtype), out=out, ones_in_values=True)

    def decode_folded(self, context: FoldedContext, gaussians: Tensor, chunk_size: int | None = None) -> Tensor:
        """The folded decoder (no decoder MLP only): context from `folded_context`, gaussians (B, Q, 14) -> deltas
        (B, T, Q, 14), Q in chunks, each written into the result in place."""
        chunk = chunk_size or self.config.chunk_size
        B, Q = gaussians.shape[:2]
        out = context.keys.new_empty(B, context.keys.shape[0] // B, Q, self.config.output_dim)
        for i in range(0, Q, chunk):
            self.decode_chunk_folded(self.query_rows(gaussians[:, i:i + chunk]), context, out=out[:, :, i:i + chunk])
        return out

    def decode(self, latents: Tensor, gaussians: Tensor, chunk_size: int | None = None, folded: bool = True) -> Tensor:
        """latents (B*T, L, latent_dim), gaussians (B, Q, 14) -> deltas (B, T, Q, 14), Q handled in chunks.
        folded: the folded decoder (`decode_folded`; no decoder MLP only), else the published computation."""
        if folded and self.decoder_ff is None:
            return self.decode_folded(self.folded_context(latents), gaussians, chunk_size)
        context = self.decode_context(latents)[0]
        chunk = chunk_size or self.config.chunk_size
        return torch.cat([self.decode_chunk(self.embed_queries(gaussians[:, i:i + chunk]), context)
                          for i in range(0, gaussians.shape[1], chunk)], dim=2)

    # ---------------------------------------------------------------- encoder
    def sample_gaussians(self, gaussians: list[Tensor]) -> Tensor:
        """Farthest-point samples num_latents rows of each (N_b, 14) set -> (B, num_latents, 14)."""
        k = self.config.num_latents
        n_max = max(g.shape[0] for g in gaussians)
        padded = torch.zeros(len(gaussians), n_max, 3, device=gaussians[0].device, dtype=gaussians[0].dtype)
        for b, g in enumerate(gaussians):
            padded[b, : g.shape[0]] = g[:, :3]
        lengths = torch.tensor([g.shape[0] for g in gaussians], device=padded.device)
        idx = farthest_point_sampling(padded, k, lengths)
        return torch.stack([g[i] for g, i in zip(gaussians, idx)])

    def interpolate_deltas(self, gaussian_xyz: Tensor, points: Tensor, moved_points: Tensor) -> Tensor:
        """Moves each Gaussian with its k nearest mesh points, weighted exp(-beta d^2 / r^2) within the adaptive
        radius r (the root of the mean squared k-NN distance). gaussian_xyz (B, G, 3), points (B, P, 3),
        moved_points (B, T, P, 3) -> (B, T, G, 3)."""
        cfg = self.config
        d2 = torch.cdist(gaussian_xyz, points).pow(2)
        knn_d2, knn_idx = d2.topk(cfg.knn_k, dim=-1, largest=False, sorted=True)    # (B, G, k)
        r = knn_d2.mean(-1).sqrt() + 1e-6
        w = torch.exp(-cfg.beta * knn_d2 / r[..., None] ** 2) * (knn_d2 <= r[..., None] ** 2)
        w = w / (w.sum(-1, keepdim=True) + 1e-8)
        motion = moved_points - points[:, None]                                       # (B, T, P, 3)
        B, T = motion.shape[:2]
        gathered = torch.gather(motion[:, :, None].expand(B, T, knn_idx.shape[1], -1, 3), 3,
                                knn_idx[:, None, :, :, None].expand(B, T, -1, -1, 3))  # (B, T, G, k, 3)
        return (w[:, None, :, :, None] * gathered).sum(3)

    def encode(self, points: Tensor, point_deltas: Tensor, gaussians: list[Tensor]) -> tuple[Posterior, Tensor]:
        """points (B, P, 3) mesh points at rest, point_deltas (B, T, P, 3), gaussians: B canonical sets (N_b, 14).
        -> (posterior over (B*T, num_latents, latent_dim), the sampled Gaussians (B, num_latents, 14))."""
        B, T = point_deltas.shape[:2]
        dim = self.config.dim
        sampled = self.sample_gaussians(gaussians)
        xyz = sampled[..., :3]
        gs_deltas = self.interpolate_deltas(xyz, points, points[:, None] + point_deltas)
        queries = self.input_embedding(gs_deltas) + self.position_encoding(xyz)[:, None]
        context = self.input_embedding(point_deltas) + self.position_encoding(points)[:, None]
        queries = queries.reshape(B * T, -1, dim)
        context = context.reshape(B * T, -1, dim)
        cross_attn, cross_ff = self.cross_attend_blocks
        x = cross_attn(queries, context=context) + queries
        x = cross_ff(x) + x
        posterior = Posterior(self.mean_fc(x), self.logvar_fc(x).clamp(-30.0, 20.0))
        return posterior, sampled

    def config_dict(self) -> dict:
        return asdict(self.config)
