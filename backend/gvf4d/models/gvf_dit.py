"""The GVF temporal-aware diffusion transformer (the published `DiT` of GVFDiffusion, same state_dict).

Input: a noisy variation-field latent x (B, T, N, C) — T frames of N latent tokens — the model time t (B,),
per-frame image features cond_images (B, T, L, C_img), the canonical Gaussians static_latent (B, S, 14)
(normalised) and the N latent tokens' canonical positions deformation_position_xyz (B, N, 3).
Each block: spatial self-attention within a frame, temporal self-attention across frames per token (both
adaLN-modulated, qk RMS norm), cross-attention to the frame's image tokens, cross-attention to the
canonical Gaussians, then a modulated MLP. Output: v-prediction (B, T, N, C_out).

Unlike the published code, the canonical-Gaussian keys/values are computed once per sample rather than once
per frame (the context is the same for every frame); the result is the same.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal, Optional

import torch
from torch import Tensor, nn

from .config import AttentionHeads, ModelConfig
from .embeddings import TimestepEmbedder, xyz_sincos_embedding
from .transformer import CrossAttention, FeedForward, SelfAttention


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



def _modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """x (B, T, N, C), shift/scale (B, C)."""
    return x * (1 + scale[:, None, None]) + shift[:, None, None]


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
        """-> [shift, scale, gate] for spatial, (temporal,) mlp, each (B, C)."""
        if self.share_mod:
            parts = mod.chunk(9 if self.temporal else 6, dim=1)
            return list(parts)
        s = self.adaLN_modulation(mod).chunk(6, dim=1)
        out = list(s[:3])
        if self.temporal:
            out += list(self.adaLN_modulation_temporal(mod).chunk(3, dim=1))
        return out + list(s[3:])

    def forward(self, x: Tensor, mod: Tensor, image_kv: tuple[Tensor, Tensor], static_kv: tuple[Tensor, Tensor]) -> Tensor:
        """x (B, T, N, C); mod (B, C); image_kv: (B*T, L, H, D) pair; static_kv: (B, S, H, D) pair."""
        B, T, N, C = x.shape
        m = self.modulation(mod)
        shift, scale, gate = m[:3]
        h = _modulate(self.norm1(x), shift, scale)
        x = x + self.spatial_self_attn(h.reshape(B * T, N, C)).reshape(B, T, N, C) * gate[:, None, None]
        if self.temporal:
            shift, scale, gate = m[3:6]
            h = _modulate(self.norm2(x), shift, scale).transpose(1, 2).reshape(B * N, T, C)
            h = self.temporal_self_attn(h).reshape(B, N, T, C).transpose(1, 2)
            x = x + h * gate[:, None, None]
        x = x + self.image_cross_attn(self.norm3(x).reshape(B * T, N, C), image_kv).reshape(B, T, N, C)
        # every frame attends to the same canonical Gaussians: one attention over all T*N queries
        x = x + self.static_cross_attn(self.norm4(x).reshape(B, T * N, C), static_kv).reshape(B, T, N, C)
        shift, scale, gate = m[-3:]
        return x + self.mlp(_modulate(self.norm5(x), shift, scale)) * gate[:, None, None]


class FinalLayer(nn.Module):
    def __init__(self, channels: int, out_channels: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(channels, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(channels, out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(channels, 2 * channels))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(_modulate(self.norm_final(x), shift, scale))


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
        deformation_position_xyz (B, N, 3) -> (B, T, N, C_out)."""
        B, T, N, _ = x.shape
        dtype = self.input_layer.weight.dtype          # float32 (autocast or not), or the weights' half precision
        x, cond_images, static_latent = x.to(dtype), cond_images.to(dtype), static_latent.to(dtype)
        h = self.input_layer(x)
        mod = self.t_embedder(t)
        if self.config.share_mod:
            mod = self.adaLN_modulation(mod)
        if self.config.pe_mode == "ape":
            if deformation_position_xyz is None:
                raise ValueError("GVFDiT with pe_mode 'ape' needs deformation_position_xyz (B, N, 3)")
            h = h + xyz_sincos_embedding(deformation_position_xyz, self.config.model_channels)[:, None].to(h.dtype)
        elif self.config.pe_mode == "learnable":
            h = h + self.pos_embedder
        image_emb = self.image_cond_proj(cond_images).reshape(B * T, cond_images.shape[2], -1)
        static_emb = self.static_cond_proj(static_latent)
        for block in self.blocks:
            image_kv = block.image_cross_attn.keys_values(image_emb)
            static_kv = block.static_cross_attn.keys_values(static_emb)
            h = block(h, mod, image_kv, static_kv)
        return self.final_layer(h, mod)

    def config_dict(self) -> dict:
        return asdict(self.config)
