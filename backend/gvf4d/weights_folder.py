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


def report(folder: Path, with_hashes: bool = False) -> list[WeightsEntry]:
    lock = _lock(folder)
    rows = []
    for name, stem in GVF_FILES.items():
        path = existing_weight_file(folder / "gvf", stem)
        rel = str(path.relative_to(folder)) if path else None
        rows.append(WeightsEntry(name, path, path.stat().st_size if path else 0,
                                 sha256_file(path) if (path and with_hashes) else None, lock.get(rel)))
    dino = folder / "dinov2"
    dino_files = sorted(p for p in dino.glob("*") if p.is_file()) if dino.is_dir() else []
    rows.append(WeightsEntry("dinov2", dino if (dino / "config.json").is_file() else None,
                             sum(p.stat().st_size for p in dino_files)))
    decoder = existing_weight_file(folder / "gvf", GAUSSIAN_DECODER_FILE)
    rel = str(decoder.relative_to(folder)) if decoder else None
    rows.append(WeightsEntry("gaussian_decoder", decoder, decoder.stat().st_size if decoder else 0,
                             sha256_file(decoder) if (decoder and with_hashes) else None, lock.get(rel), optional=True))
    trellis = folder / "trellis"
    trellis_files = sorted(p for p in trellis.rglob("*") if p.is_file()) if trellis.is_dir() else []
    rows.append(WeightsEntry("trellis", trellis if (trellis / "pipeline.json").is_file() else None,
                             sum(p.stat().st_size for p in trellis_files), optional=True))
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
    for stem in (*GVF_FILES.values(), GAUSSIAN_DECODER_FILE):
        pt = folder / "gvf" / f"{stem}.pt"
        if pt.is_file() and not pt.with_suffix(".safetensors").is_file():
            out.append(convert_to_safetensors(pt))
    record_hashes(folder)
    return out


def download(folder: Path) -> None:
    try:
        from huggingface_hub import hf_hub_download, snapshot_download
        for stem in (*GVF_FILES.values(), GAUSSIAN_DECODER_FILE):
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
