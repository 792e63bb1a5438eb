"""`gvf4d batch SHOTS`: a sequence of shots submitted to a running backend (local or `--ray`) and followed to the
end, then a table of results and failures.

SHOTS is a CSV file (a header row, then one shot per row) or a TOML file (one `[[shot]]` table per shot). Columns
or keys: `footage`, `canonical` (trellis | mesh | splat, or the kind and the path: "splat assets/a.ply"),
`canonical_path`, `engine`, and any other field of a job (`gvf4d submit`'s options: frames, start, end, stride,
matte, fps, seed, method, steps, guidance, precision, fit_size, fit_iterations, refine, azimuth_step, mesh,
mesh_faces, mesh_samples, export, weights, name), with dashes or underscores. In a CSV an empty cell keeps the
default and a list is written with spaces ("ply glb", "1.5 1"). Relative paths are relative to the list's folder.
Every row is checked before the first is submitted.
"""
from __future__ import annotations

import csv
import re
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, get_args

from pydantic import ValidationError

from .service.client import BackendClient, BackendError
from .service.jobs import JobRequest, request_from_json

FINISHED = ("done", "failed", "cancelled", "interrupted")
PATH_FIELDS = ("footage", "canonical_path", "weights")
ALIASES = {"export": "exports"}          # the CLI's flag --export is the request's list `exports`
RECONNECT_S = 600.0                      # how long a backend may be unreachable (restarting) before batch gives up


@dataclass
class Shot:
    label: str            # the row's `name`, else the footage's file or folder name
    where: str            # "FILE, row N", for messages
    request: dict         # the job's JSON, as POST /v1/jobs takes it


@dataclass
class ShotOutcome:
    shot: Shot
    job: dict             # the job as the backend last reported it ({"state": "refused", "error"} when not taken)
    downloaded: Optional[Path] = None


def _one_line(error: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(x) for x in e['loc']) or 'row'}: {e['msg']}" for e in error.errors())


def _is_list(name: str) -> bool:
    annotation = JobRequest.model_fields[name].annotation
    return getattr(annotation, "__origin__", None) in (list, tuple) or any(
        getattr(a, "__origin__", None) in (list, tuple) for a in get_args(annotation))


def _request(values: dict, base: Path, where: str) -> dict:
    """One row's values (CSV text or TOML values) as a job request: keys normalised, lists split, paths resolved
    against base, types checked by JobRequest."""
    request: dict = {}
    for key, value in values.items():
        name = ALIASES.get(key.strip().lower().replace("-", "_"), key.strip().lower().replace("-", "_"))
        if name not in JobRequest.model_fields:
            raise ValueError(f"{where}: unknown column {key!r} (known: {', '.join(sorted(JobRequest.model_fields))})")
        if value is None:
            continue                      # a CSV row shorter than its header: the default
        if isinstance(value, str):
            value = value.strip()
            if value == "":
                continue                  # an empty CSV cell: the default
            if _is_list(name):
                value = [v for v in re.split(r"[\s,;]+", value) if v]
        request[name] = value
    kind = request.get("canonical")
    if isinstance(kind, str) and len(kind.split(None, 1)) == 2:         # "splat assets/a.ply"
        request["canonical"], request["canonical_path"] = kind.split(None, 1)
    for name in PATH_FIELDS:
        if isinstance(request.get(name), str):
            request[name] = str((base / request[name]).resolve())
    matte = request.get("matte")
    if isinstance(matte, str) and matte.startswith("masks:"):
        request["matte"] = f"masks:{(base / matte[6:]).resolve()}"
    try:
        return JobRequest.model_validate(request).model_dump(mode="json")
    except ValidationError as e:
        raise ValueError(f"{where}: {_one_line(e)}") from None


def _label(request: dict, base: Path) -> str:
    """The shot's name: its `name`, else its footage relative to the list's folder without the suffix
    ("clips/a" for clips/a.mp4)."""
    if request["name"] != JobRequest.model_fields["name"].default:
        return request["name"]
    footage = Path(request["footage"])
    return str(footage.relative_to(base.resolve()).with_suffix("") if base.resolve() in footage.parents
               else footage.with_suffix("").name)


def read_shots(path: Path, check_files: bool = True) -> list[Shot]:
    """The shots of a CSV or TOML list, each checked as the backend checks a job (with check_files, the files it
    names too: for a backend on this machine). ValueError naming the file and row for the first refused."""
    path = Path(path)
    if path.suffix.lower() == ".toml":
        with open(path, "rb") as f:
            rows = tomllib.load(f).get("shot", [])
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise ValueError(f"{path}: expected [[shot]] tables, one per shot")
    else:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = [r for r in csv.DictReader(f) if any((v or "").strip() for v in r.values())]
    if not rows:
        raise ValueError(f"{path}: no shots")
    shots = []
    for n, row in enumerate(rows, 1):
        where = f"{path.name}, row {n}"
        if None in row:
            raise ValueError(f"{where}: more cells than the header has columns")
        request = _request(row, path.parent, where)
        try:
            request_from_json(request, Path(tempfile.gettempdir()), paths=check_files)
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
        shots.append(Shot(_label(request, path.parent), where, request))
    return shots


class BatchRun:
    """Submits shots to a backend and follows them to the end. `connect` gives a client (again after the backend
    became unreachable: a restarted backend has a new address and token in its lock file)."""

    def __init__(self, connect: Callable[[], BackendClient], log: Callable[[str], None] = lambda s: print(s, file=sys.stderr),
                 poll_s: float = 1.0, reconnect_s: float = RECONNECT_S):
        self.connect, self.log, self.poll_s, self.reconnect_s = connect, log, poll_s, reconnect_s
        self.client = connect()

    def run(self, shots: list[Shot], out: Optional[Path] = None) -> list[ShotOutcome]:
        """Submits every shot (one the backend refuses is recorded "refused"), waits for all, and with `out`
        downloads each result as OUT/<shot name>.gvf4d (folders in the name joined by "_")."""
        files = [f"{s.label.replace('/', '_')}.gvf4d" for s in shots]
        if out is not None:
            twice = sorted({f for f in files if files.count(f) > 1})
            if twice:
                raise ValueError(f"shots would be downloaded to the same file ({', '.join(twice)}): give each row "
                                 "its own `name`")
            Path(out).mkdir(parents=True, exist_ok=True)
        outcomes = []
        for i, shot in enumerate(shots, 1):
            try:
                job = self.client.submit(shot.request)
                self.log(f"[{i}/{len(shots)}] {shot.label}: job {job['id']}")
            except BackendError as e:
                job = {"id": "", "state": "refused", "stage": "", "error": str(e)}
                self.log(f"[{i}/{len(shots)}] {shot.label}: refused: {e}")
            outcomes.append(ShotOutcome(shot, job))
        self._follow([o for o in outcomes if o.job["id"]])
        if out is not None:
            for o, name in zip(outcomes, files):
                if o.job["state"] == "done":
                    o.downloaded = self.client.download(o.job["id"], o.job["result"], Path(out) / name)
        return outcomes

    def _jobs(self) -> dict[str, dict]:
        """The backend's jobs by id, waiting out a backend that is restarting (up to reconnect_s)."""
        deadline = time.monotonic() + self.reconnect_s
        while True:
            try:
                return {j["id"]: j for j in self.client.jobs()}
            except (BackendError, OSError) as e:     # OSError: no lock file yet, a connection cut mid-answer
                if time.monotonic() > deadline:
                    raise BackendError(f"the backend stayed unreachable for {self.reconnect_s:g} s ({e})") from None
                time.sleep(self.poll_s)
                try:
                    self.client = self.connect()
                except (BackendError, OSError):
                    pass

    def _follow(self, outcomes: list[ShotOutcome]) -> None:
        shown = {o.job["id"]: None for o in outcomes}
        while outcomes:
            jobs = self._jobs()
            for o in outcomes:
                job = jobs.get(o.job["id"])
                if job is None:
                    o.job = {**o.job, "state": "failed", "error": "the job was deleted from the backend"}
                else:
                    o.job = job
                now = (o.job["state"], o.job["stage"])
                if now != shown[o.job["id"]]:
                    shown[o.job["id"]] = now
                    self.log(f"{o.shot.label}: {o.job['state']} {o.job['stage']}".rstrip())
            if all(o.job["state"] in FINISHED for o in outcomes):
                return
            time.sleep(self.poll_s)


def format_table(outcomes: list[ShotOutcome]) -> str:
    """One line per shot: name, job, state, seconds from submission to the end, the result or the error; then
    the counts."""
    rows = [("shot", "job", "state", "time", "result / error")]
    for o in outcomes:
        j = o.job
        seconds = f"{j['updated'] - j['created']:.1f} s" if j["state"] in FINISHED and "created" in j else ""
        detail = str(o.downloaded or j.get("result") or "") if j["state"] == "done" else (j.get("error") or "")
        rows.append((o.shot.label, j["id"], j["state"], seconds, detail))
    widths = [max(len(r[k]) for r in rows) for k in range(4)]
    lines = ["  ".join([*(r[k].ljust(widths[k]) for k in range(4)), r[4]]).rstrip() for r in rows]
    done = sum(o.job["state"] == "done" for o in outcomes)
    lines.append(f"{len(outcomes)} shots: {done} done, {len(outcomes) - done} not")
    return "\n".join(lines)
