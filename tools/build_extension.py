"""Builds the Blender extension zip (gvf_blender/ + blender_manifest.toml) and validates it with Blender's own
extension tooling (blender_ext.py, shipped inside bpy).

    .venv-blender/bin/python tools/build_extension.py [--out dist]
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def blender_ext_cli() -> Path:
    import bpy
    cli = Path(bpy.utils.system_resource("SCRIPTS")) / "addons_core" / "bl_pkg" / "cli" / "blender_ext.py"
    if not cli.is_file():
        raise SystemExit(f"{cli}: Blender's extension tool not found inside the bpy package")
    return cli


def build(out: Path) -> Path:
    cli = blender_ext_cli()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as stage:
        stage = Path(stage) / "gvf4d"
        shutil.copytree(ROOT / "gvf_blender", stage, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        shutil.copy(ROOT / "blender_manifest.toml", stage / "blender_manifest.toml")
        subprocess.run([sys.executable, str(cli), "build", "--source-dir", str(stage), "--output-dir", str(out)],
                       check=True)
    zips = sorted(out.glob("gvf4d-*.zip"), key=lambda p: p.stat().st_mtime)
    if not zips:
        raise SystemExit(f"no extension zip was written to {out}")
    subprocess.run([sys.executable, str(cli), "validate", str(zips[-1])], check=True)
    return zips[-1]


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "dist"))
    print(build(Path(ap.parse_args().out)))
