"""TRELLIS' sparse-structure decoder: 3D conv net from the occupancy latent (B, 8, 16, 16, 16) to occupancy
logits (B, 1, 64, 64, 64). Same state_dict as the published SparseStructureDecoder."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch.nn.functional as F
from torch import Tensor, nn

from ..config import ModelConfig


@dataclass
class SparseStructureDecoderConfig(ModelConfig):
    """ckpts/ss_dec_*.json `args`."""
    NAME = "sparse-structure decoder"

    out_channels: int
    latent_channels: int
    num_res_blocks: int
    channels: list = field(default_factory=list)
    num_res_blocks_middle: int = 2
    norm_type: str = "layer"
    use_fp16: bool = False


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channel axis of (B, C, X, Y, Z), computed in float32."""

    def forward(self, x: Tensor) -> Tensor:
        y = F.layer_norm(x.float().movedim(1, -1), self.normalized_shape, self.weight, self.bias, self.eps)
        return y.movedim(-1, 1).to(x.dtype)


class GroupNorm32(nn.GroupNorm):
    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.float()).to(x.dtype)


def norm_layer(norm_type: str, channels: int) -> nn.Module:
    if norm_type == "layer":
        return ChannelLayerNorm(channels)
    if norm_type == "group":
        return GroupNorm32(32, channels)
    raise ValueError(f"sparse-structure decoder: unknown norm_type {norm_type!r} (layer or group)")


class ResBlock3d(nn.Module):
    def __init__(self, channels: int, out_channels: int, norm_type: str):
        super().__init__()
        self.norm1 = norm_layer(norm_type, channels)
        self.norm2 = norm_layer(norm_type, out_channels)
        self.conv1 = nn.Conv3d(channels, out_channels, 3, padding=1)
        self.conv2 = nn.Conv3d(out_channels, out_channels, 3, padding=1)
        self.skip_connection = nn.Conv3d(channels, out_channels, 1) if channels != out_channels else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return h + self.skip_connection(x)


def pixel_shuffle_3d(x: Tensor, factor: int) -> Tensor:
    """(B, C f^3, X, Y, Z) -> (B, C, X f, Y f, Z f)."""
    b, c, *size = x.shape
    c_out = c // factor ** 3
    x = x.reshape(b, c_out, factor, factor, factor, *size).permute(0, 1, 5, 2, 6, 3, 7, 4)
    return x.reshape(b, c_out, *(s * factor for s in size))


class UpsampleBlock3d(nn.Module):
    def __init__(self, channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv3d(channels, out_channels * 8, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return pixel_shuffle_3d(self.conv(x), 2)


class SparseStructureDecoder(nn.Module):
    def __init__(self, config: SparseStructureDecoderConfig | dict):
        super().__init__()
        cfg = SparseStructureDecoderConfig.coerce(config)
        self.config = cfg
        ch = cfg.channels
        self.input_layer = nn.Conv3d(cfg.latent_channels, ch[0], 3, padding=1)
        self.middle_block = nn.Sequential(*[ResBlock3d(ch[0], ch[0], cfg.norm_type)
                                            for _ in range(cfg.num_res_blocks_middle)])
        blocks: list[nn.Module] = []
        for i, c in enumerate(ch):
            blocks += [ResBlock3d(c, c, cfg.norm_type) for _ in range(cfg.num_res_blocks)]
            if i < len(ch) - 1:
                blocks.append(UpsampleBlock3d(c, ch[i + 1]))
        self.blocks = nn.ModuleList(blocks)
        self.out_layer = nn.Sequential(norm_layer(cfg.norm_type, ch[-1]), nn.SiLU(),
                                       nn.Conv3d(ch[-1], cfg.out_channels, 3, padding=1))

    def forward(self, z: Tensor) -> Tensor:
        """z (B, C_latent, R, R, R) -> logits (B, C_out, R 2^k, ...) for k upsampling stages."""
        h = self.middle_block(self.input_layer(z))
        for block in self.blocks:
            h = block(h)
        return self.out_layer(h.float())
