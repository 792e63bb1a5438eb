"""Gaussian splats with activated attributes, static and animated."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

from torch import Tensor

from .rotation import quat_to_rotmat

SH_C0 = 0.28209479177387814  # the degree-0 real spherical harmonic


def sh_dc_to_rgb(sh_dc: Tensor) -> Tensor:
    """SH DC coefficients (..., 3) -> RGB in [0, 1] as the 3DGS renderers compute it (clamped at 0)."""
    return (SH_C0 * sh_dc + 0.5).clamp_min(0.0)


def rgb_to_sh_dc(rgb: Tensor) -> Tensor:
    return (rgb - 0.5) / SH_C0


@dataclass
class Gaussians:
    """N 3D Gaussians, every attribute activated (world units, unit quaternions, opacity in [0, 1]).

    means (N, 3); scales (N, 3) standard deviations along the local axes; quats (N, 4) wxyz;
    opacities (N,); sh_dc (N, 3) SH DC colour coefficients; sh_rest (N, K, 3) higher SH bands or None.
    """

    means: Tensor
    scales: Tensor
    quats: Tensor
    opacities: Tensor
    sh_dc: Tensor
    sh_rest: Optional[Tensor] = None

    def __post_init__(self) -> None:
        n = self.means.shape[0]
        expected = {"means": (n, 3), "scales": (n, 3), "quats": (n, 4), "opacities": (n,), "sh_dc": (n, 3)}
        for name, shape in expected.items():
            got = tuple(getattr(self, name).shape)
            if got != shape:
                raise ValueError(f"Gaussians.{name} has shape {got}, expected {shape}")
        if self.sh_rest is not None and (self.sh_rest.ndim != 3 or self.sh_rest.shape[0] != n or self.sh_rest.shape[2] != 3):
            raise ValueError(f"Gaussians.sh_rest has shape {tuple(self.sh_rest.shape)}, expected ({n}, K, 3)")

    def __len__(self) -> int:
        return self.means.shape[0]

    @property
    def rgb(self) -> Tensor:
        return sh_dc_to_rgb(self.sh_dc)

    def covariances(self) -> Tensor:
        """(N, 3, 3) world-space covariance R S S^T R^T."""
        rs = quat_to_rotmat(self.quats) * self.scales[:, None, :]
        return rs @ rs.transpose(-1, -2)

    def to(self, *args, **kwargs) -> "Gaussians":
        return Gaussians(**{k: (v.to(*args, **kwargs) if v is not None else None) for k, v in self.__dict__.items()})

    def subset(self, index: Tensor) -> "Gaussians":
        return Gaussians(**{k: (v[index] if v is not None else None) for k, v in self.__dict__.items()})


@dataclass
class AnimatedGaussians:
    """A canonical splat plus per-frame tracks of the attributes that vary.

    positions (T, N, 3) is always present; scales (T, N, 3), quats (T, N, 4), opacities (T, N) and
    sh_dc (T, N, 3) are None where the attribute keeps its canonical value in every frame.
    """

    canonical: Gaussians
    positions: Tensor
    scales: Optional[Tensor] = None
    quats: Optional[Tensor] = None
    opacities: Optional[Tensor] = None
    sh_dc: Optional[Tensor] = None

    TRACKS = ("positions", "scales", "quats", "opacities", "sh_dc")

    def __post_init__(self) -> None:
        n = len(self.canonical)
        t = self.positions.shape[0]
        trailing = {"positions": (3,), "scales": (3,), "quats": (4,), "opacities": (), "sh_dc": (3,)}
        for name in self.TRACKS:
            v = getattr(self, name)
            if v is not None and tuple(v.shape) != (t, n, *trailing[name]):
                raise ValueError(f"AnimatedGaussians.{name} has shape {tuple(v.shape)}, expected {(t, n, *trailing[name])}")

    @property
    def num_frames(self) -> int:
        return self.positions.shape[0]

    def frame(self, t: int) -> Gaussians:
        """The splat at frame t (0-based)."""
        c = self.canonical
        return replace(
            c,
            means=self.positions[t],
            scales=c.scales if self.scales is None else self.scales[t],
            quats=c.quats if self.quats is None else self.quats[t],
            opacities=c.opacities if self.opacities is None else self.opacities[t],
            sh_dc=c.sh_dc if self.sh_dc is None else self.sh_dc[t],
        )

    def to(self, *args, **kwargs) -> "AnimatedGaussians":
        return AnimatedGaussians(canonical=self.canonical.to(*args, **kwargs),
                                 **{k: (None if getattr(self, k) is None else getattr(self, k).to(*args, **kwargs))
                                    for k in self.TRACKS})

    @classmethod
    def static(cls, g: Gaussians, num_frames: int) -> "AnimatedGaussians":
        return cls(canonical=g, positions=g.means[None].expand(num_frames, -1, -1).clone())
