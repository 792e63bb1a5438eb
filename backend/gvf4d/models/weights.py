"""Loading published checkpoints into our models: safetensors or torch.load(weights_only=True), never
unrestricted pickle; `module.` prefixes stripped; strict key and shape matching with a readable error."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Optional

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..atomic import atomic_output
from ..progress import ShouldCancel, check_cancel
from ..validation import open_regular_file


class WeightsError(RuntimeError):
    pass


def read_state_dict(path: str | os.PathLike, trust_pickle: bool = False) -> dict[str, torch.Tensor]:
    """A flat {key: tensor} from a .safetensors or a .pt/.pth/.bin file (tensors only, `module.` stripped).
    A single tensor file (the published mean/std .pt files) comes back as {"": tensor}. trust_pickle: unpickle
    .pt files without restriction (their code runs: only for a file from a source you trust)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    try:
        if path.suffix == ".safetensors":
            sd = load_file(str(path))
        else:
            sd = torch.load(str(path), map_location="cpu", weights_only=not trust_pickle)
    except Exception as e:
        raise WeightsError(f"{path}: cannot be loaded as weights ({type(e).__name__}: {e}). Only tensors are read "
                           "(torch.load weights_only=True); if the file comes from a source you trust, convert it "
                           "with `gvf4d weights --weights DIR --convert --trust-pickle`") from None
    if isinstance(sd, torch.Tensor):
        return {"": sd}
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise WeightsError(f"{path}: expected a state dict of tensors")
    return {(k[7:] if k.startswith("module.") else k): v for k, v in sd.items()}


def read_tensor(path: str | os.PathLike) -> torch.Tensor:
    """A file holding one tensor (mean/std statistics)."""
    sd = read_state_dict(path)
    if len(sd) != 1:
        raise WeightsError(f"{path}: expected one tensor, found keys {sorted(sd)[:5]}")
    return next(iter(sd.values())).float()


def load_strict(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str | os.PathLike) -> nn.Module:
    """Loads with exact key and shape matching; the error lists what is missing, unexpected or mis-shaped."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    wrong = sorted(f"{k}: file {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
                   for k in set(own) & set(state_dict) if own[k].shape != state_dict[k].shape)
    if missing or unexpected or wrong:
        def show(xs):
            return ", ".join(xs[:8]) + (f" ... ({len(xs)} in all)" if len(xs) > 8 else "")
        lines = [f"{source}: does not match {type(model).__name__}"]
        if missing:
            lines.append(f"  missing keys: {show(missing)}")
        if unexpected:
            lines.append(f"  unexpected keys: {show(unexpected)}")
        if wrong:
            lines.append(f"  wrong shapes: {show(wrong)}")
        raise WeightsError("\n".join(lines))
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state_dict.items()}, strict=True)
    return model


def sha256_file(path: str | os.PathLike, should_cancel: Optional[ShouldCancel] = None) -> str:
    """sha256 of a regular file (a device or FIFO is refused: it would be read forever), checking should_cancel
    between chunks."""
    h = hashlib.sha256()
    with open_regular_file(path) as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            check_cancel(should_cancel)
            h.update(chunk)
    return h.hexdigest()


def convert_to_safetensors(path: str | os.PathLike, trust_pickle: bool = False) -> Path:
    """Writes path's tensors beside it as .safetensors (same keys, `module.` stripped); trust_pickle as in
    `read_state_dict`."""
    path = Path(path)
    sd = read_state_dict(path, trust_pickle)
    out = path.with_suffix(".safetensors")
    with atomic_output(out) as tmp:
        save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp), metadata={"converted_from": path.name})
    return out
