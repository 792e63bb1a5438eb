"""Which side of the canonical splat faces the footage camera: the published alignment search, batched.

For azimuths around the object (elevation 0, radius 2), render the splat — many views per rasterizer call —,
scale each render so its silhouette box matches the footage's (box size and centre), and score it against
the footage's first frame: mean |render - frame| + 0.2 (1 - CLIP cosine) as published when CLIP ViT-B/32
weights are present; otherwise (1 - silhouette IoU) + mean |render - frame| inside the silhouettes' union.
The best azimuth a turns the splat about Z by -a, so that the front camera sees what that view saw.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..rendering import orbit_cameras, rasterize
from .align import silhouette_boxes
from ..representations import Gaussians
from ..representations.rotation import quat_multiply


@dataclass
class AzimuthSearch:
    azimuth_deg: float
    scores: Tensor            # (A,) lower is better
    azimuths_deg: Tensor      # (A,)
    scorer: str               # "clip" or "silhouette"

    def apply(self, g: Gaussians) -> Gaussians:
        return rotate_about_z(g, -self.azimuth_deg)

    def to_json(self) -> dict:
        return {"azimuth_deg": self.azimuth_deg, "scorer": self.scorer, "applied": "rotation about +Z by -azimuth"}


def rotate_about_z(g: Gaussians, degrees: float) -> Gaussians:
    a = math.radians(degrees)
    c, s = math.cos(a), math.sin(a)
    R = torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=g.means.dtype, device=g.means.device)
    q = torch.tensor([math.cos(a / 2), 0.0, 0.0, math.sin(a / 2)], dtype=g.quats.dtype, device=g.quats.device)
    return replace(g, means=g.means @ R.T, quats=quat_multiply(q.expand_as(g.quats), g.quats))


class ClipScorer:
    """CLIP ViT-B/32 image embeddings through transformers, from a local folder."""

    MEAN = (0.48145466, 0.4578275, 0.40821073)
    STD = (0.26862954, 0.26130258, 0.27577711)

    def __init__(self, model):
        self.model = model.eval()

    @classmethod
    def from_folder(cls, folder: str | Path, device="cpu") -> "ClipScorer":
        from transformers import CLIPModel
        return cls(CLIPModel.from_pretrained(str(folder), local_files_only=True).to(device))

    @torch.no_grad()
    def embed(self, rgb: Tensor) -> Tensor:
        """(C, H, W, 3) in [0, 1] -> (C, D) unit vectors."""
        size = self.model.config.vision_config.image_size
        x = F.interpolate(rgb.permute(0, 3, 1, 2), size=(size, size), mode="bicubic", align_corners=False)
        mean = torch.tensor(self.MEAN, device=x.device)[:, None, None]
        std = torch.tensor(self.STD, device=x.device)[:, None, None]
        p = next(self.model.parameters())
        out = self.model.get_image_features(pixel_values=((x - mean) / std).to(p.dtype))
        emb = out if isinstance(out, Tensor) else out.pooler_output
        return F.normalize(emb.float(), dim=-1)


def search_azimuth(g: Gaussians, rgb: Tensor, alpha: Tensor, azimuths_deg: Sequence[float] = range(-180, 180),
                   clip: Optional[ClipScorer] = None, batch: int = 60) -> AzimuthSearch:
    """rgb (H, W, 3) over white, alpha (H, W): the footage's first frame as the model sees it (square)."""
    H, W = alpha.shape
    dev = g.means.device
    rgb, alpha = rgb.to(dev), alpha.to(dev)
    target_box = silhouette_boxes(alpha[None])[0]
    azimuths = torch.tensor(list(azimuths_deg), dtype=torch.float32)
    target_emb = clip.embed(rgb[None]) if clip else None
    white = torch.ones(1, 3, device=dev)
    scores = []
    for i in range(0, len(azimuths), batch):
        cams = orbit_cameras(azimuths[i:i + batch].tolist(), 0.0, width=W, height=H).to(dev)
        C = len(cams)
        with torch.no_grad():
            r, a = rasterize(g.means, g.quats, g.scales, g.opacities, g.rgb, cams.viewmats, cams.Ks, W, H,
                             backgrounds=white.expand(C, 3))
        a = a[..., 0]
        box = silhouette_boxes(a)
        # resample every render so its silhouette box lands on the footage's (scale about the centres)
        k = box[:, 2] / target_box[2]                                   # render px per target px
        theta = torch.zeros(C, 2, 3, device=dev)
        theta[:, 0, 0] = theta[:, 1, 1] = k
        theta[:, 0, 2] = (box[:, 0] - k * target_box[0]) * 2 / W + k - 1
        theta[:, 1, 2] = (box[:, 1] - k * target_box[1]) * 2 / H + k - 1
        grid = F.affine_grid(theta, (C, 4, H, W), align_corners=False)
        rgba = torch.cat([r, a[..., None]], -1).permute(0, 3, 1, 2)
        rgba = F.grid_sample(rgba - torch.tensor([1.0, 1.0, 1.0, 0.0], device=dev)[:, None, None], grid,
                             align_corners=False, padding_mode="zeros") + torch.tensor([1.0, 1.0, 1.0, 0.0], device=dev)[:, None, None]
        r2, a2 = rgba[:, :3].permute(0, 2, 3, 1), rgba[:, 3]
        l1 = (r2 - rgb[None]).abs().mean((1, 2, 3))
        if clip is not None:
            score = l1 + 0.2 * (1 - (clip.embed(r2) @ target_emb[0]))
        else:
            inter = ((a2 > 0.5) & (alpha[None] > 0.5)).sum((1, 2)).float()
            union = ((a2 > 0.5) | (alpha[None] > 0.5)).sum((1, 2)).float().clamp_min(1)
            inside = ((a2 > 0.5) | (alpha[None] > 0.5)).float()
            colour = ((r2 - rgb[None]).abs().mean(-1) * inside).sum((1, 2)) / inside.sum((1, 2)).clamp_min(1)
            score = (1 - inter / union) + colour
        scores.append(torch.where(box[:, 3] > 0, score, torch.full_like(score, float("inf"))))
    scores = torch.cat(scores).cpu()
    best = int(scores.argmin())
    return AzimuthSearch(float(azimuths[best]), scores, azimuths, "clip" if clip else "silhouette")
