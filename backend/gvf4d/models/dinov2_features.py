"""Frame features for the GVF DiT: DINOv2 ViT-L/14 with registers through transformers, from a local folder.

Preprocessing as published: the 512x512 frame (over white) -> 518x518 Lanczos, [0, 1], ImageNet mean/std.
Features: the last block's output before the final norm, register tokens dropped, the 37x37 patch tokens
followed by the CLS token -> (T, 1370, 1024).
TRELLIS' image condition (`condition`): every token of that output (CLS, 4 registers, 1369 patches -> 1374),
layer-normed without affine parameters.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from .weights import WeightsError

INPUT_SIZE = 518
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _resize(frame: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(frame).resize((INPUT_SIZE, INPUT_SIZE), Image.Resampling.LANCZOS))


def preprocess_frames(frames: np.ndarray, device="cpu") -> Tensor:
    """(T, H, W, 3) uint8 -> (T, 3, 518, 518) float32 on device, normalised. Frames are resized on a few threads
    (Pillow releases the GIL while resampling); the resized bytes go to the device (a quarter of the float32 copy)
    and are scaled and normalised there."""
    with ThreadPoolExecutor(max_workers=min(8, max(1, len(frames)))) as pool:
        x = torch.from_numpy(np.stack(list(pool.map(_resize, frames)))).to(device)      # (T, 518, 518, 3) uint8
    mean, std = (torch.tensor(v, device=device)[:, None, None] for v in (IMAGENET_MEAN, IMAGENET_STD))
    return (x.permute(0, 3, 1, 2).float() / 255 - mean) / std


class DinoV2Features:
    def __init__(self, model, num_register_tokens: int):
        self.model = model.eval()
        self.num_register_tokens = num_register_tokens

    @classmethod
    def from_folder(cls, folder: str | Path, device="cpu", dtype=torch.float32) -> "DinoV2Features":
        folder = Path(folder)
        if not (folder / "config.json").is_file():
            raise WeightsError(f"{folder}: no DINOv2 model here (expected a transformers folder with config.json, "
                               "e.g. facebook/dinov2-with-registers-large)")
        from transformers import AutoModel
        model = AutoModel.from_pretrained(str(folder), local_files_only=True).to(device=device, dtype=dtype)
        return cls(model, int(getattr(model.config, "num_register_tokens", 0)))

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    @torch.no_grad()
    def tokens(self, frames: np.ndarray, batch_size: int = 8) -> Tensor:
        """(T, H, W, 3) uint8 -> (T, 1 + registers + patches, hidden): every token before the final norm."""
        p = next(self.model.parameters())
        out = []
        for i in range(0, len(frames), batch_size):
            x = preprocess_frames(frames[i:i + batch_size], p.device).to(p.dtype)
            out.append(self.model(pixel_values=x, output_hidden_states=True).hidden_states[-1].float())
        return torch.cat(out)

    def __call__(self, frames: np.ndarray, batch_size: int = 8) -> Tensor:
        """(T, 512, 512, 3) uint8 -> (T, 1 + patches, hidden): patch tokens, then CLS (GVF's frame features)."""
        h = self.tokens(frames, batch_size)
        return torch.cat([h[:, 1 + self.num_register_tokens:], h[:, :1]], dim=1)

    def condition(self, images: np.ndarray) -> Tensor:
        """(B, 518, 518, 3) uint8 -> (B, 1374, hidden): TRELLIS' image condition."""
        h = self.tokens(images)
        return torch.nn.functional.layer_norm(h, h.shape[-1:])
