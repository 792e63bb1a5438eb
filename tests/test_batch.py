"""`gvf4d batch` for real: the CLI against a real `gvf4d serve` on 127.0.0.1 (subprocesses, real files and HTTP)."""
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gvf4d.batch import read_shots
from gvf4d.result import ResultFile
from test_service import Server


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    """A list folder holding two 4-frame synthetic shots (shot0/, shot1/: footage/ and canonical.ply) and a
    file that only looks like a video."""
    from gvf4d.pipelines.demo import write_shot_files
    from gvf4d.synthetic import make_synthetic_shot
    root = tmp_path_factory.mktemp("batch")
    for seed in range(2):
        write_shot_files(make_synthetic_shot(num_frames=4, gaussians_per_part=40, seed=20 + seed), root / f"shot{seed}", 64)
    (root / "junk.mp4").write_bytes(b"not a video" * 20)
    return root


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("batch-backend") / "data").start()
    yield srv
    srv.stop()


def batch(list_file: Path, data: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gvf4d.cli", "batch", str(list_file), "--data", str(data), *args],
                          capture_output=True, text=True, timeout=timeout)


def test_batch_csv_runs_every_shot_and_prints_results_and_failures(server, shots, tmp_path):
    (shots / "sequence.csv").write_text(
        "footage,canonical,canonical_path,engine,frames,fit-size,fit_iterations,export,name\n"
        "shot0/footage,splat,shot0/canonical.ply,fit,4,32,2,glb,sh010\n"
        "shot1/footage,splat,shot1/canonical.ply,fit,3,32,2,,\n"
        "junk.mp4,splat,shot0/canonical.ply,fit,,32,2,,sh030\n")
    run = batch(shots / "sequence.csv", server.data, "--out", str(tmp_path / "results"))
    assert run.returncode == 1, run.stderr               # one shot failed
    lines = run.stdout.splitlines()
    assert lines[0].split()[:4] == ["shot", "job", "state", "time"]
    rows = {line.split()[0]: line for line in lines[1:4]}
    assert rows.keys() == {"sh010", "shot1/footage", "sh030"}
    assert " done " in rows["sh010"] and " done " in rows["shot1/footage"]
    assert " failed " in rows["sh030"] and "junk.mp4" in rows["sh030"]       # the failure says what went wrong
    assert lines[4] == "3 shots: 2 done, 1 not"
    assert ResultFile(tmp_path / "results" / "sh010.gvf4d").num_frames == 4
    assert ResultFile(tmp_path / "results" / "shot1_footage.gvf4d").num_frames == 3
    jobs = {j["request"]["name"]: j for j in server.client.jobs()}
    assert jobs["sh010"]["request"]["exports"] == ["glb"] and jobs["sh010"]["request"]["fit_size"] == 32


def test_batch_refuses_a_bad_list_before_submitting_anything(server, shots):
    before = len(server.client.jobs())
    for header, row, where, message in (
            ("footage,canonical,colour", "shot0/footage,splat shot0/canonical.ply,red", "row 1",
             "unknown column 'colour'"),
            ("footage,canonical,fit_iterations", "shot0/footage,splat shot0/canonical.ply,many", "row 2",
             "fit_iterations: Input should be a valid integer"),
            ("footage,canonical", "shot0/missing,splat shot0/canonical.ply", "row 2", "missing"),
            ("footage,canonical,fit_iterations", "shot0/footage,splat shot0/canonical.ply,5000", "row 2",
             "fit iterations")):
        (shots / "bad.csv").write_text(f"{header}\nshot1/footage,splat shot1/canonical.ply\n{row}\n")
        run = batch(shots / "bad.csv", server.data)
        assert run.returncode == 2 and f"bad.csv, {where}: " in run.stderr and message in run.stderr, run.stderr
    assert len(server.client.jobs()) == before


def test_batch_toml_list_reads_like_the_csv(shots):
    (shots / "sequence.toml").write_text(
        '[[shot]]\nfootage = "shot0/footage"\ncanonical = "splat shot0/canonical.ply"\nguidance = [1.5, 1.0]\n'
        'exports = ["ply", "glb"]\nmesh = true\n\n'
        '[[shot]]\nfootage = "shot1/footage"\ncanonical = "splat"\ncanonical_path = "shot1/canonical.ply"\n'
        'fit-iterations = 3\n')
    first, second = read_shots(shots / "sequence.toml")
    assert first.request["canonical_path"] == str(shots / "shot0" / "canonical.ply")
    assert first.request["guidance"] == [1.5, 1.0] and first.request["exports"] == ["ply", "glb"]
    assert first.request["mesh"] is True and first.label == "shot0/footage"
    assert second.request["fit_iterations"] == 3 and second.request["footage"] == str(shots / "shot1" / "footage")


def test_batch_waits_through_a_backend_restart(shots, tmp_path):
    srv = Server(tmp_path / "data").start()
    try:
        (shots / "long.csv").write_text("footage,canonical,fit_size,fit_iterations\n"
                                        + "".join(f"shot{i}/footage,splat shot{i}/canonical.ply,32,12\n"
                                                  for i in range(2)))
        with open(tmp_path / "batch.log", "w") as log:
            run = subprocess.Popen([sys.executable, "-m", "gvf4d.cli", "batch", str(shots / "long.csv"), "--data",
                                    str(srv.data)], stdout=subprocess.PIPE, stderr=log, text=True)
        deadline = time.monotonic() + 120
        while not any(j["state"] == "running" for j in srv.client.jobs()):
            assert time.monotonic() < deadline and run.poll() is None
            time.sleep(0.1)
        srv.stop(signal.SIGKILL)
        srv.start()
        out, _ = run.communicate(timeout=300)
        assert run.returncode == 0, (tmp_path / "batch.log").read_text()
        assert out.splitlines()[-1] == "2 shots: 2 done, 0 not"
        assert max(j["attempts"] for j in srv.client.jobs()) == 2      # the running one was queued again
    finally:
        srv.stop()
