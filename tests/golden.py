"""Where the parity tests find the reference tensors (GVF_GOLDEN_DIR / GVF_GOLDEN_TRELLIS_DIR)."""
import json
import os
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]


def golden_dir(var: str = "GVF_GOLDEN_DIR", default: str = "golden") -> Path:
    d = Path(os.environ.get(var, ROOT.parent / "shared" / default))
    if not d.is_dir():
        raise FileNotFoundError(f"{var}: reference folder {d} not found (set {var} to the folder with the golden files)")
    return d


def load(name: str, var: str = "GVF_GOLDEN_DIR", default: str = "golden"):
    path = golden_dir(var, default) / name
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    return load_file(str(path)), meta


def config(name: str, var: str = "GVF_GOLDEN_DIR", default: str = "golden") -> dict:
    return json.loads(load(name, var, default)[1]["config"])


def assert_close_rel(out, ref, rel: float):
    """max |out - ref| within rel x max |ref| (the README's 'relative to the output's scale')."""
    err = (out - ref).abs().max().item()
    scale = ref.abs().max().item()
    assert err <= rel * scale, f"max abs error {err:.3g} exceeds {rel:g} x output scale {scale:.3g}"
