"""`gvf4d weights --download`: the files a setup needs, fetched from the model hub through huggingface_hub, with
progress, resume, a free-space check before the first byte and sha256 verification.

The published lock (weights.lock.json, `weights_folder.published_lock`) names each file's repo, revision and hash.
Setups: "gvf" (the GVF engine: its checkpoints and DINOv2), "trellis" (the TRELLIS canonical: TRELLIS-image-large,
GVF's Gaussian decoder and DINOv2), "all" (both); CLIP and the matting model on request. The hub's endpoint is
huggingface_hub's (HF_ENDPOINT).

A file is fetched into <target>.part and renamed into place once its hash is checked: against the lock's sha256, or,
where the lock has none yet, against the hash the hub sends (its LFS sha256, or the git blob id of a small file). An
interrupted run leaves the .part, and the next run asks only for the rest (an HTTP range request); huggingface_hub's
hf_hub_download cannot serve here, as it deletes its partial file when a download fails.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from .models.weights import WeightsError, sha256_file
from .weights_folder import PARTIAL_SUFFIX, LockedFile, published_lock, read_record, write_record

SETUPS = {"gvf": ("gvf",), "trellis": ("trellis",), "all": ("gvf", "trellis")}
FREE_SPACE_MARGIN = 256 * 2**20      # left free after the download
_SHA256 = re.compile(r"[0-9a-f]{64}")
_GIT_SHA1 = re.compile(r"[0-9a-f]{40}")


def _said(error: Exception) -> str:
    """An exception in one line (huggingface_hub's carry a second line of links)."""
    return f"{type(error).__name__}: {(str(error).splitlines() or [''])[0]}"


def select_files(files: list[LockedFile], setup: str = "gvf", clip: bool = False,
                 matting: bool = False) -> list[LockedFile]:
    """The lock's files for a setup, plus CLIP's and the matting model's on request."""
    if setup not in SETUPS:
        raise ValueError(f"--setup {setup!r}: expected one of {', '.join(SETUPS)}")
    wanted = set(SETUPS[setup]) | ({"clip"} if clip else set()) | ({"matting"} if matting else set())
    return [f for f in files if wanted & set(f.setups)]


def git_blob_sha1(path: Path) -> str:
    """The git object id of a file's content (the hub's ETag for a file not stored in LFS)."""
    h = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class RemoteFile:
    """A locked file as the hub describes it now."""

    file: LockedFile
    url: str              # where its bytes are (after the hub's redirects)
    size: int
    etag: Optional[str]   # sha256 (LFS) or git blob id


def _remote(file: LockedFile, endpoint: Optional[str]) -> RemoteFile:
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    url = hf_hub_url(file.repo, file.path, revision=file.revision, endpoint=endpoint)
    try:
        meta = get_hf_file_metadata(url, endpoint=endpoint)
    except Exception as e:  # noqa: BLE001 — huggingface_hub raises many kinds (offline, 404, TLS, ...): each is said
        raise WeightsError(f"{file.repo}/{file.path}@{file.revision}: the hub does not answer for it "
                           f"({_said(e)})") from None
    if meta.size is None:
        raise WeightsError(f"{url}: the hub sent no size for it")
    if file.size is not None and meta.size != file.size:
        raise WeightsError(f"{file.repo}/{file.path}@{file.revision}: the hub's file is {meta.size} bytes, the lock "
                           f"records {file.size}: not the locked file")
    return RemoteFile(file, meta.location, meta.size, meta.etag)


def _reference(remote: RemoteFile) -> tuple[Optional[str], str]:
    """(expected hash, what it is) for a fetched file: the lock's sha256, else the hub's own hash."""
    if remote.file.sha256:
        return remote.file.sha256, "weights.lock.json"
    etag = (remote.etag or "").lower()
    if _SHA256.fullmatch(etag) or _GIT_SHA1.fullmatch(etag):
        return etag, "the hub's hash"
    return None, ""


def _matches(path: Path, expected: str) -> bool:
    return (sha256_file(path) if len(expected) == 64 else git_blob_sha1(path)) == expected


def _free_bytes(folder: Path) -> int:
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    return shutil.disk_usage(existing).free


def download(folder: Path, setup: str = "gvf", clip: bool = False, matting: bool = False,
             lock: Optional[Path] = None, endpoint: Optional[str] = None,
             log: Callable[[str], None] = print) -> list[Path]:
    """Fetches what the setup needs into folder and returns the files fetched. Files already present and matching
    their recorded hash are kept; a .part left by an interrupted run is resumed. Raises WeightsError (nothing
    written) when the disk lacks room for the rest, and for a file whose hash does not match (the file is not kept)."""
    from huggingface_hub.file_download import http_get
    from huggingface_hub.utils import build_hf_headers

    files = select_files(published_lock(lock), setup, clip, matting)
    record = read_record(folder)
    pending = []
    for f in files:
        target = folder / f.local_path
        reference = f.sha256 or record.get(f.local_path)
        if target.is_file() and reference and sha256_file(target) == reference:
            continue
        remote = _remote(f, endpoint)
        if not (target.is_file() and _kept(folder, remote, record)):
            pending.append(remote)
    if not pending:
        log(f"{folder}: every file of setup {setup!r} is present and checked")
        return []

    def part_of(r: RemoteFile) -> Path:
        return folder / (r.file.local_path + PARTIAL_SUFFIX)

    needed = sum(r.size - min(r.size, part_of(r).stat().st_size if part_of(r).is_file() else 0) for r in pending)
    free = _free_bytes(folder)
    if needed + FREE_SPACE_MARGIN > free:
        raise WeightsError(f"{folder}: the download needs {needed / 2**30:.2f} GiB (+{FREE_SPACE_MARGIN // 2**20} MiB "
                           f"left free), the disk has {free / 2**30:.2f} GiB free; nothing was downloaded")
    log(f"{folder}: fetching {len(pending)} files, {needed / 2**20:.1f} MiB")
    fetched = []
    for r in pending:
        target, part = folder / r.file.local_path, part_of(r)
        target.parent.mkdir(parents=True, exist_ok=True)
        done = part.stat().st_size if part.is_file() else 0
        if done > r.size:              # not a prefix of this file (the hub's file changed): start again
            part.unlink()
            done = 0
        log(f"  {r.file.repo}/{r.file.path}" + (f" (resuming at {done / 2**20:.1f} MiB)" if done else ""))
        try:
            with open(part, "ab") as out:
                http_get(r.url, out, resume_size=done, headers=build_hf_headers(), expected_size=r.size,
                         displayed_filename=r.file.path)
        except Exception as e:  # noqa: BLE001 — network and HTTP errors of every kind end the run the same way
            kept = part.stat().st_size if part.is_file() else 0
            raise WeightsError(f"{r.file.repo}/{r.file.path}: the download stopped ({_said(e)}); "
                               f"{kept} of {r.size} bytes are kept in {part}: run the same command again to "
                               "resume") from None
        expected, what = _reference(r)
        if expected and not _matches(part, expected):
            part.unlink()
            raise WeightsError(f"{r.file.repo}/{r.file.path}: HASH MISMATCH against {what} ({expected}); the "
                               "downloaded file was not kept")
        os.replace(part, target)
        if expected:                   # checked: its sha256 becomes this folder's record
            record[r.file.local_path] = sha256_file(target)
            write_record(folder, record)
        fetched.append(target)
    return fetched


def _kept(folder: Path, remote: RemoteFile, record: dict[str, str]) -> bool:
    """Whether a file present without a recorded hash is the hub's (then its hash is recorded and it is kept)."""
    expected, _ = _reference(remote)
    path = folder / remote.file.local_path
    if not expected or path.stat().st_size != remote.size or not _matches(path, expected):
        return False
    record[remote.file.local_path] = sha256_file(path)
    write_record(folder, record)
    return True
