"""The diagnostics report an artist pastes into a bug report: Blender, the add-on, the operating system, and the
backend's versions (gvf4d, API, torch, CUDA), device and memory as its /v1/health reports them."""
from __future__ import annotations

import platform
import sys
import tomllib
from pathlib import Path

import bpy

from . import connection
from .backend import API_VERSION, BackendError


def addon_version() -> str:
    """The version in the extension's manifest (beside the add-on once installed, at the repository root in a
    checkout)."""
    here = Path(__file__).resolve().parent
    for manifest in (here / "blender_manifest.toml", here.parent / "blender_manifest.toml"):
        try:
            return tomllib.loads(manifest.read_text())["version"]
        except (OSError, KeyError, tomllib.TOMLDecodeError):
            continue
    return "unknown"


def report(context) -> str:
    lines = [f"GVF4D add-on {addon_version()} (API {API_VERSION}) at {Path(__file__).resolve().parent}",
             f"Blender {bpy.app.version_string} ({bpy.app.build_hash.decode(errors='replace')}), "
             f"Python {sys.version.split()[0]}",
             f"OS {platform.platform()} ({platform.machine()})"]
    try:
        backend = connection.connect(context)
        health = backend.health()
    except BackendError as e:
        return "\n".join(lines + [f"backend: {e}", f"backend data folder: {connection.data_dir(context)}"])
    where = f"local, data folder {backend.data_dir}" if backend.is_local else "set by URL"
    lines += [f"backend {backend.url} ({where}): gvf4d {health.get('version')} (API {health.get('api_version')}), "
              f"status {health.get('status')}, {health.get('queued')} queued",
              f"torch {health.get('torch')}, CUDA {health.get('cuda_version') or 'none'}"]
    for w in health.get("workers") or []:
        d = w.get("device") or {}
        memory = f", VRAM {d['vram_free'] / 2**30:.2f} of {d['vram_total'] / 2**30:.2f} GiB free" \
            if d.get("vram_total") else ""
        models = ", ".join(m["kind"] for m in w.get("models") or []) or "none"
        lines.append(f"worker {w.get('id')} ({w.get('kind')}, alive {w.get('alive')}): {d.get('type')} "
                     f"{d.get('name')}{memory}; models loaded: {models}")
    weights = health.get("weights")
    lines.append("weights: " + (", ".join(f"{k} {v}" for k, v in weights.items()) if weights else "no folder set"))
    return "\n".join(lines)
