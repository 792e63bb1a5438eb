"""The weights folder: what is present, hashes, conversion to safetensors, download where a network exists.

Layout:  <weights>/gvf/<published GVF files>.pt|.safetensors   <weights>/dinov2/ (transformers folder)
         <weights>/trellis/ (TRELLIS-image-large: pipeline.json, ckpts/) — with gvf/<Gaussian decoder>, optional:
         only `--canonical trellis` needs them
A lock file <weights>/weights.lock.json records each file's sha256 when it is downloaded or converted;
`verify` checks the files against it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .atomic import atomic_output
from .models.weights import WeightsError, convert_to_safetensors, sha256_file
from .pipelines.gvf import GVF_FILES, existing_weight_file
from .pipelines.trellis import GAUSSIAN_DECODER_FILE, TRELLIS_HUB_REPO

GVF_HUB_REPO = "BwZhang/GaussianVariationFieldDiffusion"
DINOV2_HUB_REPO = "facebook/dinov2-with-registers-large"
LOCK_FILE = "weights.lock.json"
GVF_CHECKPOINTS = (*GVF_FILES.values(), GAUSSIAN_DECODER_FILE)   # what gvf/ may hold, converted and downloaded alike


@dataclass
class WeightsEntry:
    name: str
    path: Optional[Path]
    size: int
    sha256: Optional[str] = None
    recorded_sha256: Optional[str] = None
    optional: bool = False          # only some jobs need it (the TRELLIS canonical)

    @property
    def status(self) -> str:
        if self.path is None:
            return "absent (optional)" if self.optional else "missing"
        if self.sha256 and self.recorded_sha256:
            return "ok" if self.sha256 == self.recorded_sha256 else "HASH MISMATCH"
        return "present"


def _lock(folder: Path) -> dict:
    p = folder / LOCK_FILE
    return json.loads(p.read_text()) if p.is_file() else {}


def _write_lock(folder: Path, lock: dict) -> None:
    with atomic_output(folder / LOCK_FILE) as tmp:
        tmp.write_text(json.dumps(lock, indent=2, sort_keys=True))


def _file_entry(folder: Path, name: str, stem: str, lock: dict, with_hashes: bool, optional: bool = False) -> WeightsEntry:
    """A checkpoint in gvf/ (converted .safetensors or published .pt) with its hash and the lock file's."""
    path = existing_weight_file(folder / "gvf", stem)
    rel = str(path.relative_to(folder)) if path else None
    return WeightsEntry(name, path, path.stat().st_size if path else 0,
                        sha256_file(path) if (path and with_hashes) else None, lock.get(rel), optional=optional)


def _folder_entry(folder: Path, sub: str, marker: str, pattern: str, optional: bool = False) -> WeightsEntry:
    """A model folder (present when it holds `marker`), sized over its files matching `pattern`."""
    d = folder / sub
    files = [p for p in d.glob(pattern) if p.is_file()] if d.is_dir() else []
    return WeightsEntry(sub, d if (d / marker).is_file() else None, sum(p.stat().st_size for p in files),
                        optional=optional)


def report(folder: Path, with_hashes: bool = False) -> list[WeightsEntry]:
    lock = _lock(folder)
    rows = [_file_entry(folder, name, stem, lock, with_hashes) for name, stem in GVF_FILES.items()]
    rows.append(_folder_entry(folder, "dinov2", "config.json", "*"))
    rows.append(_file_entry(folder, "gaussian_decoder", GAUSSIAN_DECODER_FILE, lock, with_hashes, optional=True))
    rows.append(_folder_entry(folder, "trellis", "pipeline.json", "**/*", optional=True))
    return rows


def record_hashes(folder: Path) -> dict:
    lock = _lock(folder)
    for sub in ("gvf", "dinov2", "trellis"):
        for p in sorted((folder / sub).rglob("*")) if (folder / sub).is_dir() else []:
            if p.is_file():
                lock[str(p.relative_to(folder))] = sha256_file(p)
    _write_lock(folder, lock)
    return lock


def convert(folder: Path) -> list[Path]:
    out = []
    for stem in GVF_CHECKPOINTS:
        pt = folder / "gvf" / f"{stem}.pt"
        if pt.is_file() and not pt.with_suffix(".safetensors").is_file():
            out.append(convert_to_safetensors(pt))
    record_hashes(folder)
    return out


def download(folder: Path) -> None:
    try:
        from huggingface_hub import hf_hub_download, snapshot_download
        for stem in GVF_CHECKPOINTS:
            hf_hub_download(GVF_HUB_REPO, f"{stem}.pt", local_dir=str(folder / "gvf"))
        snapshot_download(DINOV2_HUB_REPO, local_dir=str(folder / "dinov2"),
                          allow_patterns=["config.json", "*.safetensors"])
        snapshot_download(TRELLIS_HUB_REPO, local_dir=str(folder / "trellis"),
                          allow_patterns=["pipeline.json", "ckpts/ss_*", "ckpts/slat_flow_*", "ckpts/slat_dec_gs_*.json"])
    except Exception as e:
        raise WeightsError(f"download into {folder} failed ({type(e).__name__}: {e}); on an offline machine, copy "
                           f"the files of {GVF_HUB_REPO} into {folder / 'gvf'}, {DINOV2_HUB_REPO} into {folder / 'dinov2'} "
                           f"and {TRELLIS_HUB_REPO} into {folder / 'trellis'}") from None
    record_hashes(folder)
