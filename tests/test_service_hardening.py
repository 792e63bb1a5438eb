"""Issue 23 against a real `gvf4d serve` on 127.0.0.1 (subprocesses, real files and sockets, bounded loops):
the worker survives a failing store and reports its liveness, special files are refused, event streams do not
starve the API, one backend per data folder, signals remove the lock file, uploads are private, unique and
removed in every outcome, full disks answer 507, and uploads/ and cache/ are bounded.

The failing job store is the one in-process server here: SQLite is made to refuse writes (PRAGMA query_only)
through the server's own connection, which a subprocess's store does not offer. Everything else is a subprocess.
"""
import http.client
import json
import os
import resource
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from gvf4d.service.client import BackendClient, BackendError
from gvf4d.service.lock import DataFolderLock, is_held, write_info
from gvf4d.service.retention import RetentionPolicy, prune, remove_temporaries
from test_service import Server, job_body, raw, wait


@pytest.fixture(scope="module")
def shot(shot_files):
    return shot_files[0]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("hardened") / "data", "--upload-timeout", "1.5",
                 "--max-upload-bytes", str(10**15)).start()
    yield srv
    srv.stop()


def auth(server) -> dict:
    return {"Authorization": f"Bearer {server.info['token']}"}


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def connect(server, timeout=10.0) -> http.client.HTTPConnection:
    return http.client.HTTPConnection(server.info["host"], server.info["port"], timeout=timeout)


def put(server, name: str, body: bytes, upload_id="00c0ffee") -> tuple[int, dict]:
    c = connect(server, 30)
    c.request("PUT", f"/v1/uploads/{upload_id}/{name}", body=body, headers=auth(server))
    r = c.getresponse()
    return r.status, json.loads(r.read())


def send_headers(server, path: str, length: int) -> socket.socket:
    """A PUT whose headers announce `length` bytes; the body is the caller's to send (or not)."""
    s = socket.create_connection((server.info["host"], server.info["port"]), timeout=10)
    s.sendall((f"PUT {path} HTTP/1.1\r\nHost: {server.info['host']}:{server.info['port']}\r\n"
               f"Authorization: Bearer {server.info['token']}\r\nContent-Length: {length}\r\n\r\n").encode())
    return s


def response_status(s: socket.socket) -> int:
    data = b""
    while b"\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    return int(data.split(b" ")[1])


def until(condition, timeout=10.0, step=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return condition()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*")) if folder.exists() else []


# ---------------------------------------------------------------------------------------------------- real server

def test_files_are_private(server, shot):
    c = server.client
    status, info = put(server, "canonical.ply", (shot / "canonical.ply").read_bytes(), upload_id="0a0a0a0a")
    assert status == 201
    job = wait(c, c.submit(job_body(shot, canonical_path=info["file"], exports=["ply"]))["id"])
    assert job["state"] == "done", job
    data = server.data
    assert mode(data) == 0o700
    for f in ("backend.lock.json", "backend.lock", "jobs.sqlite"):
        assert mode(data / f) == 0o600, f
    assert mode(Path(info["folder"])) == 0o700 and mode(Path(info["file"])) == 0o600
    for root in (data / "jobs" / job["id"], data / "cache"):
        paths = list(root.rglob("*"))
        assert any(p.is_file() for p in paths)
        for p in paths:
            assert mode(p) == (0o700 if p.is_dir() else 0o600), p


def test_special_files_are_refused_before_submit(server, shot, tmp_path):
    fifo = tmp_path / "splat.ply"
    os.mkfifo(fifo)
    frames = tmp_path / "frames"
    frames.mkdir()
    for f in (shot / "footage").glob("*.png"):
        (frames / f.name).write_bytes(f.read_bytes())
    os.mkfifo(frames / "frame_0099.png")
    before = len(server.client.jobs())
    for body, message in ((job_body(shot, canonical_path=str(fifo)), f"{fifo} is a FIFO"),
                          (job_body(shot, canonical_path="/dev/zero"), "/dev/zero is a character device"),
                          (job_body(shot, footage=str(frames)), "frame_0099.png is a FIFO"),
                          (job_body(shot, canonical_path=str(shot)), "is a folder, not a regular file")):
        t0 = time.monotonic()
        with pytest.raises(BackendError, match=f"422 .*{message}"):
            server.client.submit(body)
        assert time.monotonic() - t0 < 5
    assert len(server.client.jobs()) == before
    assert server.client.health()["status"] == "ok"


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts the server's sockets in /proc")
def test_event_streams_do_not_starve_the_api(server, shot):
    """60 open streams on a job that does not change: the API still answers at once, and closing the clients
    releases the streams (the server's sockets go)."""
    c = server.client
    busy = c.submit(job_body(shot, fit_size=16, fit_iterations=1000))
    wait(c, busy["id"], states=("running",))
    idle = c.submit(job_body(shot))                       # queued behind `busy`: it does not change
    fds = Path(f"/proc/{server.proc.pid}/fd")

    def sockets() -> int:
        """The server's open sockets (the running job's file descriptors come and go: not counted)."""
        count = 0
        for fd in fds.iterdir():
            try:
                count += os.readlink(fd).startswith("socket:")
            except OSError:          # closed while listing
                pass
        return count
    # the earlier requests' connections close within moments: the baseline is the count once they have gone
    samples = []
    for _ in range(10):
        samples.append(sockets())
        time.sleep(0.1)
    baseline = min(samples)
    streams = []
    try:
        for _ in range(60):
            s = connect(server)
            s.request("GET", f"/v1/jobs/{idle['id']}/events", headers=auth(server))
            r = s.getresponse()
            assert r.status == 200 and r.readline().startswith(b"data: ")     # the stream is live
            streams.append(s)
        t0 = time.monotonic()
        health = BackendClient(server.info["url"], server.info["token"], timeout=5).health()
        assert time.monotonic() - t0 < 2 and health["status"] == "ok"
        assert len(c.jobs()) >= 2 and time.monotonic() - t0 < 4
        assert sockets() >= baseline + 60
    finally:
        for s in streams:
            s.close()
        c.cancel(idle["id"])
        c.cancel(busy["id"])
    assert until(lambda: sockets() < baseline + 5), sockets()
    assert wait(c, busy["id"], timeout=60)["state"] == "cancelled"


def test_concurrent_uploads_to_one_name_never_share_a_file(server):
    payloads = [secrets.token_bytes(3 << 20), secrets.token_bytes(2 << 20)]
    results = [None, None]

    def upload(k):
        results[k] = put(server, "clip.mp4", payloads[k])
    threads = [threading.Thread(target=upload, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert [r[0] for r in results] == [201, 201]
    assert [r[1]["bytes"] for r in results] == [len(p) for p in payloads]
    folder = Path(results[0][1]["folder"])
    assert (folder / "clip.mp4").read_bytes() in payloads          # one whole upload, never a mix
    assert leftovers(folder) == []


def test_aborted_and_stalled_uploads_leave_nothing(server):
    folder = server.data / "uploads" / "0badf00d"
    s = send_headers(server, "/v1/uploads/0badf00d/aborted.mp4", 10 << 20)
    s.sendall(b"\0" * (256 << 10))
    assert until(lambda: leftovers(folder) != [])                 # the upload is under way in its temp file
    s.close()                                                     # the client goes away mid-body
    assert until(lambda: leftovers(folder) == []), leftovers(folder)
    assert not (folder / "aborted.mp4").exists()
    s = send_headers(server, "/v1/uploads/0badf00d/stalled.mp4", 1000)
    s.sendall(b"\0" * 10)                                         # then nothing: the server gives up after 1.5 s
    t0 = time.monotonic()
    assert response_status(s) == 408 and time.monotonic() - t0 < 8
    s.close()
    assert leftovers(folder) == [] and not (folder / "stalled.mp4").exists()


def test_sizes_are_refused_from_the_headers_before_reading(server):
    for length, status in ((2 * 10**15, 413), (10**14, 507)):    # over the cap; under it, but over the free space
        s = send_headers(server, "/v1/uploads/5eed5eed/huge.mp4", length)   # the body never comes
        t0 = time.monotonic()
        assert response_status(s) == status and time.monotonic() - t0 < 5
        s.close()
    assert leftovers(server.data / "uploads") == []


def test_a_resumed_job_removes_what_a_killed_export_left(server, shot, tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video" * 20)
    c = server.client
    job = wait(c, c.submit(job_body(shot, footage=str(junk)))["id"])
    assert job["state"] == "failed"
    job_dir = server.data / "jobs" / job["id"]
    (job_dir / "result_ply").mkdir(parents=True)
    (job_dir / "result_ply" / ".frame_0003.ply.k2j4h5g6.tmp").write_bytes(b"partial")
    (job_dir / ".result.gvf4d.abcd1234.tmp").write_bytes(b"partial")
    c._request("POST", f"/v1/jobs/{job['id']}/resume")
    assert wait(c, job["id"])["state"] == "failed"
    assert leftovers(job_dir) == []


# ------------------------------------------------------------------------------------- lifecycle: lock and signals

def test_one_backend_per_data_folder_and_signals_remove_the_lock(tmp_path):
    data = tmp_path / "data"
    # what a killed backend left, and entries past the retention given below
    old = time.time() - 3 * 86400
    (data / "uploads" / "0000aaaa").mkdir(parents=True)
    (data / "uploads" / "0000aaaa" / "clip.mp4").write_bytes(b"old")
    (data / "uploads" / "1111bbbb").mkdir()
    (data / "uploads" / "1111bbbb" / ".clip.mp4.zzzzzzzz.tmp").write_bytes(b"partial")
    (data / "uploads" / "2222cccc").mkdir()
    (data / "uploads" / "2222cccc" / "clip.mp4").write_bytes(b"new")
    for stage, key in (("ingest", "old"), ("canonical", "new")):
        (data / "cache" / stage / key).mkdir(parents=True)
        (data / "cache" / stage / key / "frames.npz").write_bytes(b"x" * 4096)
    (data / "cache" / "ingest" / ".key.partial").mkdir()
    for p in (data / "uploads" / "0000aaaa", data / "uploads" / "0000aaaa" / "clip.mp4", data / "cache" / "ingest" / "old",
              data / "cache" / "ingest" / "old" / "frames.npz"):
        os.utime(p, (old, old))

    first = Server(data, "--uploads-max-age", "1", "--cache-max-size", str(6000 / 2**30)).start()
    try:
        assert sorted(p.name for p in (data / "uploads").iterdir()) == ["1111bbbb", "2222cccc"]
        assert leftovers(data) == [] and not (data / "cache" / "ingest" / "old").exists()
        assert (data / "cache" / "canonical" / "new" / "frames.npz").is_file()

        second = subprocess.run([sys.executable, "-m", "gvf4d.cli", "serve", "--data", str(data)],
                                capture_output=True, text=True, timeout=120)
        assert second.returncode != 0
        assert f"pid {first.proc.pid}" in second.stderr and first.info["url"] in second.stderr
        assert json.loads((data / "backend.lock.json").read_text())["token"] == first.info["token"]
        assert first.client.health()["status"] == "ok"
        status = subprocess.run([sys.executable, "-m", "gvf4d.cli", "status", "--data", str(data)],
                                capture_output=True, text=True, timeout=120)
        assert status.returncode == 0, status.stderr
    finally:
        first.stop(signal.SIGTERM)
    assert first.proc.returncode == 128 + signal.SIGTERM
    assert not (data / "backend.lock.json").exists() and not is_held(data)

    srv = Server(data).start()
    srv.stop(signal.SIGINT)
    assert not (data / "backend.lock.json").exists() and not is_held(data)

    srv = Server(data).start()
    srv.stop(signal.SIGKILL)                                  # no chance to clean: the lock goes with the process
    assert (data / "backend.lock.json").exists() and not is_held(data)
    status = subprocess.run([sys.executable, "-m", "gvf4d.cli", "status", "--data", str(data)],
                            capture_output=True, text=True, timeout=120)
    assert status.returncode == 2 and "no backend running" in status.stderr
    assert not (data / "backend.lock.json").exists()


def test_a_full_disk_answers_507_and_fails_jobs_cleanly(tmp_path, shot):
    """The backend may write files of at most 1 MiB (RLIMIT_FSIZE): writes past it fail as on a full disk."""
    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
    srv = Server(tmp_path / "data", preexec=limit).start()
    try:
        s = send_headers(srv, "/v1/uploads/00c0ffee/clip.mp4", 2 << 20)
        s.sendall(b"\0" * (2 << 20))
        assert response_status(s) == 507
        s.close()
        assert leftovers(srv.data / "uploads") == []
        job = wait(srv.client, srv.client.submit(job_body(shot, fit_size=16, exports=["ply", "glb"]))["id"])
        assert job["state"] == "failed" and job["error"].startswith("the backend's disk is full"), job
        assert srv.client.health()["status"] == "ok"
    finally:
        srv.stop()


# ------------------------------------------------------------------------------ in process: the job store fails

class InProcessServer:
    """create_app + Worker + uvicorn in this process, on a loopback port."""

    def __init__(self, data: Path):
        import uvicorn

        from gvf4d.service.app import create_app
        from gvf4d.service.store import JobStore
        from gvf4d.service.worker import Worker
        self.store = JobStore(data / "jobs.sqlite")
        self.worker = Worker(self.store, data)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        token = secrets.token_urlsafe(16)
        app = create_app(self.store, self.worker, token, {f"127.0.0.1:{port}"})
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.client = BackendClient(f"http://127.0.0.1:{port}", token)

    def __enter__(self):
        self.worker.start()
        self.thread.start()
        assert until(lambda: self.server.started)
        return self

    def __exit__(self, *exc):
        self.worker.stop()
        self.server.should_exit = True
        self.thread.join(10)

    def read_only(self, on: bool) -> None:
        """SQLite refuses every write ("attempt to write a readonly database") while on."""
        with self.store._lock:
            self.store._db.execute(f"PRAGMA query_only = {int(on)}")


def test_worker_survives_a_store_that_cannot_record(tmp_path, shot):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video" * 20)
    with InProcessServer(tmp_path / "data") as srv:
        c = srv.client
        # recording an outcome fails: the worker keeps trying, stays alive, and records it once the store recovers
        running = c.submit(job_body(shot, fit_size=16, fit_iterations=1000))
        wait(c, running["id"], states=("running",))
        srv.read_only(True)
        c.cancel(running["id"])
        with pytest.raises(BackendError, match="503 the backend's job store failed"):
            c.submit(job_body(shot))                     # the API answers, never 500
        assert until(lambda: srv.worker.current is None, timeout=30)
        time.sleep(1.5)                                  # a few failed attempts to record "cancelled"
        health = c.health()
        assert health["status"] == "ok" and health["workers"][0]["alive"]
        assert c.job(running["id"])["state"] == "running"
        srv.read_only(False)
        assert wait(c, running["id"], timeout=60)["state"] == "cancelled"

        # starting a job fails: it stays queued and runs once the store recovers
        queued = srv.store.create(job_body(shot, footage=str(junk)))
        srv.read_only(True)
        srv.worker.submit(queued.id)
        time.sleep(1.5)
        assert c.job(queued.id)["state"] == "queued" and c.health()["workers"][0]["alive"]
        srv.read_only(False)
        failed = wait(c, queued.id, timeout=60)
        assert failed["state"] == "failed" and "junk.mp4: cannot be decoded" in failed["error"]

        # and the next job runs
        assert wait(c, c.submit(job_body(shot))["id"])["state"] == "done"

        # no worker alive: /v1/health says so with 503
        srv.worker.stop()
        with pytest.raises(BackendError, match='503 .*"status": ?"degraded"'):
            c.health()


# ----------------------------------------------------------------------------------------- the parts on their own

def test_the_data_folder_lock_is_exclusive(tmp_path):
    with DataFolderLock(tmp_path) as first:
        assert first.acquire() and is_held(tmp_path)
        assert not DataFolderLock(tmp_path).acquire()
    assert not is_held(tmp_path) and DataFolderLock(tmp_path).acquire()


def test_lock_info_is_private_and_never_written_through_a_link(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("keep")
    (tmp_path / "backend.lock.json").symlink_to(victim)
    path = write_info(tmp_path, {"pid": 1})
    assert victim.read_text() == "keep" and not path.is_symlink() and mode(path) == 0o600
    assert json.loads(path.read_text()) == {"pid": 1} and leftovers(tmp_path) == []


def test_retention_by_age_then_size(tmp_path):
    now = time.time()
    for name, age_days, size in (("a", 10, 10), ("b", 3, 40), ("c", 2, 40), ("d", 0, 40), ("e", 3, 5)):
        d = tmp_path / name
        d.mkdir()
        (d / "f").write_bytes(b"x" * size)
        for p in (d, d / "f"):
            os.utime(p, (now - age_days * 86400, now - age_days * 86400))
    removed = prune(tmp_path, 1, RetentionPolicy(max_age_s=5 * 86400, max_bytes=50), keep={tmp_path / "e"}, now=now)
    # a is too old; then the oldest go until the rest fit in 50 bytes: b and c (e is kept, d fits beside it)
    assert sorted(p.name for p in removed) == ["a", "b", "c"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "e"]


def test_temporaries_are_removed_by_age(tmp_path):
    (tmp_path / "x").mkdir()
    young, old = tmp_path / "x" / ".young.tmp", tmp_path / "x" / ".old.tmp"
    young.write_text("")
    old.write_text("")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    assert remove_temporaries(tmp_path, min_age_s=3600) == [old]
    assert remove_temporaries(tmp_path) == [young] and (tmp_path / "x").is_dir()
