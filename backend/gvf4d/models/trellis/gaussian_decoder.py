"""The structured-latent Gaussian decoder as GVFDiffusion uses it: TRELLIS' SLatGaussianDecoder (a sparse
transformer with shifted-window attention) loaded with GVF's own checkpoint, 8 Gaussians per voxel.

Output per voxel: 8 x (offset 3, colour 3, scale 3, rotation 4, opacity 1) raw values (112 channels). Gaussian
g of voxel v sits at (v + 0.5) / R + tanh(offset_g * lr + perturbation_g) * voxel_size / (2R) in the unit cube,
then shifted by the aabb origin (-0.5) into TRELLIS' object space; the perturbation is a fixed Hammersley
sequence stored in the checkpoint (`offset_perturbation`). Other attributes are the raw parameters of GVF's
Gaussian model (representations/gvf_gaussians.py), each times its `lr` factor.
GVF's checkpoint names the blocks `decoder.*` and the input layer `from_latent.*`: `rename_gvf_static_vae_keys`
maps them as the published loader does.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...representations.gvf_gaussians import MIN_KERNEL_SIZE, OPACITY_BIAS, SCALING_BIAS, GVFGaussians
from ..config import AttentionHeads, ModelConfig
from ..embeddings import xyz_sincos_embedding
from ..sparse import SparseTensor
from .blocks import TransformerBlock, trunk_dtype
from .tokens import SparseTokens

GAUSSIANS_PER_VOXEL = 8   # GVFDiffusion overrides the published config's 32
AABB_ORIGIN = -0.5        # TRELLIS' aabb [-0.5, -0.5, -0.5, 1, 1, 1]
# (name, channels per Gaussian) in the published layout order
LAYOUT = (("_xyz", 3), ("_features_dc", 3), ("_scaling", 3), ("_rotation", 4), ("_opacity", 1))


@dataclass
class GaussianDecoderConfig(ModelConfig, AttentionHeads):
    """ckpts/slat_dec_gs_*.json `args` (representation_config.num_gaussians set to 8 as GVF does)."""
    NAME = "Gaussian decoder"

    resolution: int
    model_channels: int
    latent_channels: int
    num_blocks: int
    num_heads: Optional[int] = None
    num_head_channels: int = 64
    mlp_ratio: float = 4
    attn_mode: str = "swin"
    window_size: int = 8
    pe_mode: str = "ape"
    use_fp16: bool = False
    use_checkpoint: bool = False
    qk_rms_norm: bool = False
    representation_config: dict = field(default_factory=dict)


def radical_inverse(base: int, n: int) -> float:
    value, inv = 0.0, 1.0 / base
    f = inv
    while n > 0:
        value += (n % base) * f
        n //= base
        f *= inv
    return value


def hammersley_points(count: int) -> Tensor:
    """(count, 3) in [0, 1): (i / count, radical inverse base 2, base 3)."""
    return torch.tensor([[i / count, radical_inverse(2, i), radical_inverse(3, i)] for i in range(count)])


def rename_gvf_static_vae_keys(state_dict: dict) -> dict:
    """GVF's ema_static_vae checkpoint, as read_state_dict returns it (`module.` already stripped) -> this decoder's
    keys (unused keys, e.g. an encoder's, are dropped)."""
    out = {}
    for k, v in state_dict.items():
        if k.startswith("decoder."):
            out["blocks." + k[len("decoder."):]] = v
        elif k.startswith("from_latent."):
            out["input_layer." + k[len("from_latent."):]] = v
        elif k.startswith(("out_layer.", "offset_perturbation")):
            out[k] = v
    return out


class GaussianDecoder(nn.Module):
    def __init__(self, config: GaussianDecoderConfig | dict):
        super().__init__()
        cfg = GaussianDecoderConfig.coerce(config)
        rep = cfg.representation_config
        if cfg.attn_mode not in ("swin", "full") or cfg.pe_mode != "ape":
            raise ValueError(f"Gaussian decoder: attn_mode {cfg.attn_mode!r} / pe_mode {cfg.pe_mode!r} not supported "
                             "(published: swin / ape)")
        expected = {"scaling_bias": SCALING_BIAS, "opacity_bias": OPACITY_BIAS, "3d_filter_kernel_size": MIN_KERNEL_SIZE,
                    "scaling_activation": "softplus"}
        wrong = {k: rep.get(k) for k, v in expected.items() if rep.get(k) != v}
        if wrong:
            raise ValueError(f"Gaussian decoder: representation_config {wrong} differs from GVF's Gaussian model {expected}")
        self.config = cfg
        self.num_gaussians = int(rep.get("num_gaussians", GAUSSIANS_PER_VOXEL))
        c = cfg.model_channels
        self.input_layer = nn.Linear(cfg.latent_channels, c)
        self.blocks = nn.ModuleList([TransformerBlock(c, cfg.heads, cfg.mlp_ratio, cfg.qk_rms_norm)
                                     for _ in range(cfg.num_blocks)])
        self.out_layer = nn.Linear(c, self.num_gaussians * sum(n for _, n in LAYOUT))
        perturbation = (hammersley_points(self.num_gaussians) * 2 - 1) / float(rep["voxel_size"])
        self.register_buffer("offset_perturbation", torch.atanh(perturbation))

    def block_window(self, i: int) -> tuple[Optional[int], int]:
        """(window size, shift) of block i: swin alternates unshifted and half-window-shifted windows."""
        if self.config.attn_mode == "full":
            return None, 0
        return self.config.window_size, self.config.window_size // 2 * (i % 2)

    def forward(self, x: SparseTensor) -> SparseTensor:
        """Structured latent (N, C_latent) -> raw Gaussian parameters (N, 8 x 14) on the same voxels."""
        h = self.input_layer(x.feats)
        h = h + xyz_sincos_embedding(x.coords[:, 1:].float(), self.config.model_channels).to(h.dtype)
        h = h.to(trunk_dtype(self.blocks))
        for i, block in enumerate(self.blocks):
            window, shift = self.block_window(i)
            h = block(h, SparseTokens(x, window, shift))
        return x.replace(self.out_layer(F.layer_norm(h.float(), h.shape[-1:])).float())

    def split(self, out: SparseTensor) -> list[dict[str, Tensor]]:
        """Per batch item, the raw values as the published Gaussian holds them: _xyz (M, 3) in the unit cube,
        _features_dc (M, 1, 3), _scaling (M, 3), _rotation (M, 4), _opacity (M, 1), M = 8 x voxels."""
        rep = self.config.representation_config
        g = self.num_gaussians
        items = []
        for rows in out.items():
            feats = out.feats[rows]
            centre = (out.coords[rows, 1:].float() + 0.5) / self.config.resolution
            start, item = 0, {}
            for name, n in LAYOUT:
                v = feats[:, start:start + g * n].reshape(-1, g, n) * rep["lr"][name]
                start += g * n
                if name == "_xyz":
                    if rep.get("perturb_offset", False):
                        v = v + self.offset_perturbation
                    v = centre[:, None] + torch.tanh(v) / self.config.resolution * 0.5 * rep["voxel_size"]
                item[name] = v.reshape(-1, 1, 3) if name == "_features_dc" else v.flatten(0, 1)
            items.append(item)
        return items

    def to_gaussians(self, out: SparseTensor) -> list[GVFGaussians]:
        """Per batch item, the canonical Gaussians in TRELLIS' object space (unit cube centred at the origin)."""
        return [GVFGaussians(xyz=r["_xyz"] + AABB_ORIGIN, raw_scale=r["_scaling"], raw_rotation=r["_rotation"],
                             features_dc=r["_features_dc"][:, 0], raw_opacity=r["_opacity"][:, 0])
                for r in self.split(out)]
