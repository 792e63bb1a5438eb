"""TRELLIS' sparse-structure flow model: a DiT over the dense occupancy latent (B, C, R, R, R), conditioned on
image tokens by cross-attention and on flow time by adaLN. Same state_dict as the published
SparseStructureFlowModel (`pos_emb` is a stored buffer)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..embeddings import TimestepEmbedder, xyz_sincos_embedding
from .blocks import FlowConfig, ModulatedCrossBlock, trunk_dtype
from .tokens import DenseTokens


@dataclass
class SparseStructureFlowConfig(FlowConfig):
    """ckpts/ss_flow_*.json `args`."""
    NAME = "sparse-structure flow"


def patchify(x: Tensor, p: int) -> Tensor:
    """(B, C, X, Y, Z) -> (B, C p^3, X/p, Y/p, Z/p), the patch's voxels after the channels."""
    b, c, *size = x.shape
    x = x.reshape(b, c, size[0] // p, p, size[1] // p, p, size[2] // p, p)
    return x.permute(0, 1, 3, 5, 7, 2, 4, 6).reshape(b, c * p ** 3, *(s // p for s in size))


def unpatchify(x: Tensor, p: int) -> Tensor:
    """Inverse of patchify."""
    b, cp, *size = x.shape
    x = x.reshape(b, cp // p ** 3, p, p, p, *size)
    return x.permute(0, 1, 5, 2, 6, 3, 7, 4).reshape(b, cp // p ** 3, *(s * p for s in size))


def grid_position_embedding(resolution: int, channels: int) -> Tensor:
    """(R^3, channels) sin-cos embedding of the grid's integer positions, x-major order."""
    r = torch.arange(resolution)
    coords = torch.stack(torch.meshgrid(r, r, r, indexing="ij"), dim=-1).reshape(-1, 3)
    return xyz_sincos_embedding(coords.float(), channels)


class SparseStructureFlowModel(nn.Module):
    def __init__(self, config: SparseStructureFlowConfig | dict):
        super().__init__()
        cfg = SparseStructureFlowConfig.coerce(config)
        if cfg.pe_mode != "ape":
            raise ValueError(f"sparse-structure flow: pe_mode {cfg.pe_mode!r} is not supported (published: 'ape')")
        self.config = cfg
        c, p = cfg.model_channels, cfg.patch_size
        self.t_embedder = TimestepEmbedder(c)
        if cfg.share_mod:
            self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(c, 6 * c))
        self.register_buffer("pos_emb", grid_position_embedding(cfg.resolution // p, c))
        self.input_layer = nn.Linear(cfg.in_channels * p ** 3, c)
        self.blocks = nn.ModuleList([
            ModulatedCrossBlock(c, cfg.cond_channels, cfg.heads, cfg.mlp_ratio, cfg.share_mod, cfg.qk_rms_norm,
                                cfg.qk_rms_norm_cross)
            for _ in range(cfg.num_blocks)])
        self.out_layer = nn.Linear(c, cfg.out_channels * p ** 3)

    def forward(self, x: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        """x (B, C_in, R, R, R), t (B,) model time in [0, 1000], cond (B, L, C_cond) -> velocity (B, C_out, R, R, R)."""
        cfg = self.config
        expected = (cfg.in_channels, cfg.resolution, cfg.resolution, cfg.resolution)
        if tuple(x.shape[1:]) != expected:
            raise ValueError(f"sparse-structure flow: input shape {tuple(x.shape)}, expected (B, {', '.join(map(str, expected))})")
        h = patchify(x, cfg.patch_size)
        grid = h.shape[2:]
        h = self.input_layer(h.flatten(2).transpose(1, 2)) + self.pos_emb[None]
        emb = self.t_embedder(t)
        if cfg.share_mod:
            emb = self.adaLN_modulation(emb)
        dtype = trunk_dtype(self.blocks)            # half when the trunk holds half weights (published use_fp16)
        h, emb, cond = h.to(dtype), emb.to(dtype), cond.to(dtype)
        for block in self.blocks:
            h = block(h, emb, cond, DenseTokens)
        h = self.out_layer(F.layer_norm(h.float(), h.shape[-1:]))
        return unpatchify(h.transpose(1, 2).reshape(h.shape[0], -1, *grid), cfg.patch_size).float()
