"""Where the parity tests find the reference tensors: tests/goldens/ in the repository, or the folders named by
GVF_GOLDEN_DIR / GVF_GOLDEN_TRELLIS_DIR. A missing folder or file is an error that names it, never a skip."""
import json
import os
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import load_file

GOLDENS = Path(__file__).resolve().parent / "goldens"


def golden_dir(var: str = "GVF_GOLDEN_DIR", default: str = "gvf") -> Path:
    d = Path(os.environ.get(var) or GOLDENS / default)
    if not d.is_dir():
        raise FileNotFoundError(f"{d}: golden folder not found (from {var} or tests/goldens/{default})")
    return d


def golden_file(name: str, var: str = "GVF_GOLDEN_DIR", default: str = "gvf") -> Path:
    path = golden_dir(var, default) / name
    if not path.is_file():
        raise FileNotFoundError(f"{path}: golden file not found")
    return path


def load(name: str, var: str = "GVF_GOLDEN_DIR", default: str = "gvf"):
    path = golden_file(name, var, default)
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    return load_file(str(path)), meta


def config(name: str, var: str = "GVF_GOLDEN_DIR", default: str = "gvf") -> dict:
    return json.loads(load(name, var, default)[1]["config"])


def assert_close_rel(out, ref, rel: float):
    """max |out - ref| within rel x max |ref| (the README's 'relative to the output's scale')."""
    err = (out - ref).abs().max().item()
    scale = ref.abs().max().item()
    assert err <= rel * scale, f"max abs error {err:.3g} exceeds {rel:g} x output scale {scale:.3g}"
