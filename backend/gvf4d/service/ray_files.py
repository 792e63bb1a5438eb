"""The files of a job on a Ray actor without the service's filesystem: its inputs (footage, canonical file,
masks) packed as bytes for Ray's object store and written out on the actor's node, and the result files it
returns written into the job's folder. Inputs in a shared folder (mounted at the same path on every node) stay
where they are."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from ..atomic import atomic_output
from ..footage.reader import IMAGE_SUFFIXES
from .jobs import job_kind


def under(path: Path, folder: Optional[Path]) -> bool:
    """path lies inside folder (None: no folder)."""
    return folder is not None and Path(folder).resolve() in Path(path).resolve().parents


def _read_files(paths: list[Path]) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in paths}


def pack_inputs(request: dict, shared: Optional[Path]) -> dict[str, dict]:
    """The files a job reads, as bytes for an actor without the service's filesystem: {role: {"name": what the
    request names inside the role's folder ("" for the folder itself), "files": {file name: bytes}}} for the
    roles "footage", "canonical" and "masks" (a render job's: "result"). Inputs under `shared` are left out (read
    in place)."""
    if job_kind(request) == "render":
        result = Path(request["result"])
        return {} if under(result, shared) else {"result": {"name": result.name, "files": _read_files([result])}}
    bundle = {}
    footage = Path(request["footage"])
    if not under(footage, shared):
        if footage.is_dir():
            files = [p for p in footage.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
            bundle["footage"] = {"name": "", "files": _read_files(files)}
        elif footage.suffix.lower() in IMAGE_SUFFIXES:      # one image of a numbered sequence: its siblings too
            files = [p for p in footage.parent.iterdir() if p.is_file() and p.suffix.lower() == footage.suffix.lower()]
            bundle["footage"] = {"name": footage.name, "files": _read_files(files)}
        else:
            bundle["footage"] = {"name": footage.name, "files": _read_files([footage])}
    canonical = request.get("canonical_path")
    if canonical and not under(Path(canonical), shared):
        bundle["canonical"] = {"name": Path(canonical).name, "files": _read_files([Path(canonical)])}
    matte = request.get("matte", "")
    if matte.startswith("masks:") and not under(Path(matte[6:]), shared):
        masks = [p for p in Path(matte[6:]).iterdir() if p.is_file()]
        bundle["masks"] = {"name": "", "files": _read_files(masks)}
    return bundle


def unpack_inputs(request: dict, bundle: dict[str, dict], folder: Path) -> dict:
    """Writes a bundle's files under folder/<role>/ and returns the request naming them there; the result still
    records the footage path the job was submitted with (`recorded_footage`), where the client finds its plate."""
    request = dict(request)
    for role, entry in bundle.items():
        root = folder / role
        root.mkdir(parents=True, exist_ok=True)
        for name, data in entry["files"].items():
            (root / Path(name).name).write_bytes(data)
        path = str(root / entry["name"]) if entry["name"] else str(root)
        if role == "footage":
            request["recorded_footage"] = request.get("recorded_footage") or request["footage"]
            request["footage"] = path
        elif role == "canonical":
            request["canonical_path"] = path
        elif role == "result":
            request["result"] = path
        else:
            request["matte"] = f"masks:{path}"
    return request


def write_result_files(job_dir: Path, files: dict[str, bytes]) -> None:
    """Writes an actor's result files into the job's folder, each to a temp name renamed into place, the result
    (the first) last, so a reader never sees a result without its exports."""
    root = job_dir.resolve()
    for name in [*list(files)[1:], *list(files)[:1]]:
        dest = (root / name).resolve()
        if root not in dest.parents:
            raise ValueError(f"an actor returned a result file outside the job's folder: {name!r}")
        with atomic_output(dest) as tmp:
            tmp.write_bytes(files[name])
