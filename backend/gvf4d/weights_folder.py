"""The weights folder: what is present, whether each file is the one it should be, conversion to safetensors.

Layout:  <weights>/gvf/<published GVF files>.pt|.safetensors   <weights>/dinov2/ (transformers folder)
         <weights>/trellis/ (TRELLIS-image-large: pipeline.json, ckpts/) — with gvf/<Gaussian decoder>, optional:
         only `--canonical trellis` needs them; <weights>/clip/ (optional: CLIP scores the facing search);
         <weights>/matting/ (optional: a matting model for footage without alpha)

A file is checked against a reference hash: the published one in the package's weights.lock.json (the hub's LFS
hash, `published_lock`), else the one this folder's own weights.lock.json recorded when `--download` fetched and
checked the file or `--convert` wrote or read it. A file with neither is "unverified", never "ok".
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from .atomic import atomic_output
from .footage.matting import MATTING_MODELS
from .models.weights import convert_to_safetensors, sha256_file
from .pipelines.gvf import GVF_FILES, existing_weight_file
from .pipelines.trellis import GAUSSIAN_DECODER_FILE

LOCK_FILE = "weights.lock.json"        # the folder's record of checked hashes: {relative path: sha256}
PUBLISHED_LOCK = Path(__file__).with_name("weights.lock.json")
LOCK_ENV = "GVF4D_WEIGHTS_LOCK"        # another published lock: a mirror's own revisions and hashes
GVF_CHECKPOINTS = (*GVF_FILES.values(), GAUSSIAN_DECODER_FILE)   # what gvf/ may hold, converted and downloaded alike
PARTIAL_SUFFIX = ".part"               # a download in progress (weights_download.py)
MODEL_FOLDERS = ("gvf", "dinov2", "trellis", "clip", "matting")


@dataclass(frozen=True)
class LockedFile:
    """One file of the published lock: where it comes from and what it hashes to (None: not recorded yet)."""

    source: str           # the lock's source name: gvf, gaussian_decoder, dinov2, trellis, clip, matting
    setups: tuple[str, ...]
    repo: str
    revision: str
    folder: str           # under the weights folder
    path: str             # in the repo, and under `folder`
    size: Optional[int]
    sha256: Optional[str]

    @property
    def local_path(self) -> str:
        return f"{self.folder}/{self.path}"


def published_lock(path: Optional[Path] = None) -> list[LockedFile]:
    """The files of a published lock: `path`, else $GVF4D_WEIGHTS_LOCK, else the package's weights.lock.json."""
    path = Path(path or os.environ.get(LOCK_ENV) or PUBLISHED_LOCK)
    try:
        lock = json.loads(path.read_text())
        return [LockedFile(s["name"], tuple(s["setups"]), s["repo"], s["revision"], s["folder"], f["path"],
                           f.get("size"), f.get("sha256")) for s in lock["sources"] for f in s["files"]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a readable weights lock ({type(e).__name__}: {e})") from None


def read_record(folder: Path) -> dict[str, str]:
    p = folder / LOCK_FILE
    return json.loads(p.read_text()) if p.is_file() else {}


def write_record(folder: Path, record: dict[str, str]) -> None:
    with atomic_output(folder / LOCK_FILE) as tmp:
        tmp.write_text(json.dumps(record, indent=2, sort_keys=True))


@dataclass
class FileCheck:
    """One file's hash against its reference."""

    relative: str
    sha256: str
    reference: Optional[str]
    against: Optional[str]          # "published" (weights.lock.json of the package) | "recorded" (the folder's)

    @property
    def status(self) -> str:
        if self.reference is None:
            return "unverified"
        return "ok" if self.sha256 == self.reference else "HASH MISMATCH"

    def describe(self) -> str:
        if self.reference is None:
            return f"{self.relative}: unverified: no recorded hash"
        source = "the published weights.lock.json" if self.against == "published" else "this folder's weights.lock.json"
        if self.status == "ok":
            return f"{self.relative}: ok against {source}"
        return f"{self.relative}: HASH MISMATCH: {source} records {self.reference}, the file hashes to {self.sha256}"


@dataclass
class WeightsEntry:
    name: str
    path: Optional[Path]
    size: int
    optional: bool = False                        # only some jobs need it (the TRELLIS canonical, CLIP, matting)
    checks: Optional[list[FileCheck]] = None      # with hashes: one per file
    files: list[Path] = field(default_factory=list)

    @property
    def status(self) -> str:
        """missing | absent (optional) | present (not hashed) | ok | HASH MISMATCH | unverified"""
        if self.path is None:
            return "absent (optional)" if self.optional else "missing"
        if self.checks is None:
            return "present"
        statuses = {c.status for c in self.checks}
        for worst in ("HASH MISMATCH", "unverified"):
            if worst in statuses:
                return worst
        return "ok"


def _hash_checks(folder: Path, files: list[Path], published: dict[str, str], record: dict[str, str]) -> list[FileCheck]:
    checks = []
    for p in files:
        rel = p.relative_to(folder).as_posix()
        ref, against = (published[rel], "published") if rel in published else (record.get(rel), "recorded")
        checks.append(FileCheck(rel, sha256_file(p), ref, against if ref else None))
    return checks


def _model_files(d: Path, pattern: str) -> list[Path]:
    """The files of a model folder: not hidden (huggingface_hub's .cache/), not a partial download."""
    if not d.is_dir():
        return []
    return sorted(p for p in d.glob(pattern) if p.is_file() and not p.name.endswith(PARTIAL_SUFFIX)
                  and not any(part.startswith(".") for part in p.relative_to(d).parts))


def report(folder: Path, with_hashes: bool = False) -> list[WeightsEntry]:
    """One row per checkpoint and model folder; with_hashes: every file hashed and checked (`FileCheck`)."""
    published = {f.local_path: f.sha256 for f in published_lock() if f.sha256} if with_hashes else {}
    record = read_record(folder) if with_hashes else {}

    def entry(name: str, path: Optional[Path], files: list[Path], optional: bool) -> WeightsEntry:
        checks = _hash_checks(folder, files, published, record) if (with_hashes and path) else None
        return WeightsEntry(name, path, sum(p.stat().st_size for p in files), optional, checks, files)

    def checkpoint(name: str, stem: str, optional: bool = False) -> WeightsEntry:
        path = existing_weight_file(folder / "gvf", stem)
        return entry(name, path, [path] if path else [], optional)

    def model_folder(sub: str, marker: str, pattern: str, optional: bool = False) -> WeightsEntry:
        d = folder / sub
        return entry(sub, d if (d / marker).is_file() else None, _model_files(d, pattern), optional)

    rows = [checkpoint(name, stem) for name, stem in GVF_FILES.items()]
    rows.append(model_folder("dinov2", "config.json", "*"))
    rows.append(checkpoint("gaussian_decoder", GAUSSIAN_DECODER_FILE, optional=True))
    rows.append(model_folder("trellis", "pipeline.json", "**/*", optional=True))
    rows.append(model_folder("clip", "config.json", "*", optional=True))
    matting = next((folder / m.path for m in MATTING_MODELS if (folder / m.path).is_file()), None)
    rows.append(entry("matting", matting, [matting] if matting else [], True))
    return rows


def record_hashes(folder: Path) -> dict:
    """Records the hash of every model file in the folder's weights.lock.json (what `--convert` read and wrote)."""
    record = read_record(folder)
    for sub in MODEL_FOLDERS:
        for p in _model_files(folder / sub, "**/*"):
            record[p.relative_to(folder).as_posix()] = sha256_file(p)
    write_record(folder, record)
    return record


def convert(folder: Path, trust_pickle: bool = False) -> list[Path]:
    """Writes a .safetensors beside each GVF .pt that has none; trust_pickle: also read .pt files that hold more than
    tensors (their pickled code runs: only for files from a source you trust)."""
    out = []
    for stem in GVF_CHECKPOINTS:
        pt = folder / "gvf" / f"{stem}.pt"
        if pt.is_file() and not pt.with_suffix(".safetensors").is_file():
            out.append(convert_to_safetensors(pt, trust_pickle=trust_pickle))
    record_hashes(folder)
    return out
