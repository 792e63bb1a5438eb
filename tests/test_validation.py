"""The request validation the API and the CLI share (gvf4d.validation), on real files, FIFOs and devices, and the
CLI's refusals before any work: one line naming the input and the problem, exit 2."""
import os
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from gvf4d.cli import main
from gvf4d.footage import open_footage
from gvf4d.limits import Limits
from gvf4d.models.weights import sha256_file
from gvf4d.pipelines.request import GenerateRequest
from gvf4d.progress import Cancelled
from gvf4d.validation import (RequestError, check_footage, check_name, check_output, check_path_text, check_request,
                              count, existing_file, existing_folder, finite, mesh_face_count, open_regular_file,
                              ply_vertex_count, within_budget)


@pytest.fixture(scope="module")
def shot(shot_files):
    return shot_files[0]


@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "pipe.ply"
    os.mkfifo(path)
    return path


def refused(call, *args, match: str, status: int = 422, **kw):
    with pytest.raises(RequestError, match=match) as e:
        call(*args, **kw)
    assert e.value.status == status and "\n" not in str(e.value)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), "nan", "x", None])
def test_numbers_must_be_finite(value):
    refused(finite, "guidance", value, match="guidance must be a (finite )?number")


def test_number_ranges_and_budgets():
    assert finite("fps", "24") == 24.0
    refused(finite, "fps", -1, 0.0, low_open=True, match="fps must be greater than 0")
    refused(finite, "fps", 0, 0.0, low_open=True, match="fps must be greater than 0")
    refused(count, "frames", 0, 1, match="frames must be at least 1, got 0")
    refused(count, "frames", True, 1, match="whole number")
    refused(count, "frames", 2.0, 1, match="whole number")
    refused(count, "fit size", 2000, 16, 1024, match="fit size must be at most 1024, got 2000")
    refused(within_budget, Limits(max_frames=3000), "max_frames", "frames", 3001, status=413,
            match="frames 3,001 is over the limit of 3,000 frames per shot \\(GVF4D_MAX_FRAMES, gvf4d serve --max-frames\\)")
    assert within_budget(Limits(max_frames=3000), "max_frames", "frames", 3000) == 3000


@pytest.mark.parametrize("name, problem", [("", "not a file name"), ("..", "not a file name"),
                                           (".take", "hidden file"), ("a\0b", "NUL byte"), ("a/b", "no folders"),
                                           ("é" * 128 + ".gvf4d", "longer than 255 bytes")])
def test_name_rules(name, problem):
    refused(check_name, "name", name, match=problem)


def test_name_rules_allow_ordinary_names():
    assert check_name("name", "take 1 (é).gvf4d") == "take 1 (é).gvf4d"


def test_path_text_rules():
    refused(check_path_text, "footage", "/tmp/a\0b.mp4", match="NUL byte")
    refused(check_path_text, "footage", f"/tmp/{'x' * 256}/a.mp4", match="component .* longer than 255 bytes")
    refused(check_path_text, "footage", "/" + "d/" * 2100 + "a.mp4", match="longer than 4096 bytes")
    assert check_path_text("footage", f"/tmp/{'x' * 255}") == Path(f"/tmp/{'x' * 255}")


def test_only_regular_files_and_folders(tmp_path, fifo):
    regular = tmp_path / "splat.ply"
    regular.write_bytes(b"ply\n")
    (tmp_path / "link.ply").symlink_to(regular)
    assert existing_file("canonical splat", tmp_path / "link.ply") == tmp_path / "link.ply"
    refused(existing_file, "canonical splat", fifo, match=f"{fifo} is a FIFO \\(named pipe\\), not a regular file")
    refused(existing_file, "canonical mesh", tmp_path, match="is a folder, not a regular file")
    refused(existing_file, "canonical splat", tmp_path / "missing.ply", match="missing.ply does not exist")
    refused(existing_folder, "weights", regular, match="not a folder")
    if os.path.exists("/dev/zero"):
        refused(existing_file, "canonical splat", "/dev/zero", match="/dev/zero is a character device")
        refused(check_footage, "/dev/zero", match="footage /dev/zero is a character device")


def test_footage_images_must_all_be_regular_files(tmp_path, shot):
    folder = tmp_path / "frames"
    folder.mkdir()
    for f in sorted((shot / "footage").glob("*.png")):
        (folder / f.name).write_bytes(f.read_bytes())
    assert check_footage(folder) == folder
    os.mkfifo(folder / "frame_9999.png")
    refused(check_footage, folder, match="frame_9999.png is a FIFO")
    refused(check_footage, next(folder.glob("frame_0000.png")), match="frame_9999.png is a FIFO")   # one image of it


def test_outputs_are_files_with_ordinary_names(tmp_path):
    refused(check_output, "--out", tmp_path, match="is an existing folder")
    (tmp_path / "file").write_text("")
    refused(check_output, "--out", tmp_path / "file" / "r.gvf4d", match="is not a folder")
    refused(check_output, "--out", tmp_path / ".r.gvf4d", match="hidden file")
    assert check_output("--out", tmp_path / "new" / "r.gvf4d") == tmp_path / "new" / "r.gvf4d"


def test_a_fifo_is_refused_at_open_without_waiting_for_a_writer(fifo):
    outcome = []
    reader = threading.Thread(target=lambda: outcome.append(pytest.raises(RequestError, open_regular_file, fifo)),
                              daemon=True)
    reader.start()
    reader.join(10)
    assert outcome and "FIFO" in str(outcome[0].value)
    with pytest.raises(RequestError, match="FIFO"):
        sha256_file(fifo)


def test_hashing_honours_cancel_between_chunks(tmp_path, shot):
    big = tmp_path / "big.bin"
    big.write_bytes(b"\0" * (9 << 20))           # three chunks
    calls = []
    with pytest.raises(Cancelled):
        sha256_file(big, lambda: calls.append(1) or len(calls) > 1)
    assert len(calls) == 2
    assert sha256_file(big) == sha256_file(big, lambda: False)
    with pytest.raises(Cancelled):
        open_footage(shot / "footage").content_hash(lambda: True)


def test_limits_from_the_environment():
    assert Limits.from_env({}) == Limits()
    assert Limits.from_env({"GVF4D_MAX_FRAMES": "12"}).max_frames == 12
    with pytest.raises(ValueError, match="GVF4D_MAX_FRAMES='many' is not a whole number"):
        Limits.from_env({"GVF4D_MAX_FRAMES": "many"})
    with pytest.raises(ValueError, match="must be at least 1"):
        Limits.from_env({"GVF4D_MAX_GAUSSIANS": "0"})


def test_request_budgets_come_from_limits(tmp_path, shot):
    req = GenerateRequest(footage=shot / "footage", out=tmp_path / "r.gvf4d", canonical=("mesh", shot / "canonical.ply"),
                          frames=40, mesh_samples=5000)
    assert check_request(req, Limits()) is req
    refused(check_request, req, Limits(max_frames=39), match="frames 40 is over the limit of 39", status=413)
    refused(check_request, req, Limits(max_gaussians=4999), match="mesh samples 5,000 is over", status=413)
    splat = replace(req, canonical=("splat", shot / "canonical.ply"), mesh_samples=200)
    gaussians = ply_vertex_count(shot / "canonical.ply")
    assert gaussians == 240 and check_request(splat, Limits(max_gaussians=240)) is splat
    refused(check_request, splat, Limits(max_gaussians=239), status=413,
            match=f"canonical splat {shot / 'canonical.ply'}: 240 is over the limit of 239 Gaussians")
    remote = GenerateRequest(footage=Path("/elsewhere/clip.mp4"), out=tmp_path / "r.gvf4d",
                             canonical=("splat", Path("/elsewhere/s.ply")))
    assert check_request(remote, paths=False) is remote          # a remote backend's paths are its own to check
    refused(check_request, remote, match="footage /elsewhere/clip.mp4 does not exist")


def test_mesh_faces_are_counted_from_headers_before_loading(tmp_path, shot):
    """PLY, binary STL and GLB meshes declare their triangles in a header: a mesh over the budget is refused
    without reading its data (these files hold none past the header); OBJ has no count and is loaded as it is."""
    import json
    import struct
    ply = tmp_path / "big.ply"
    ply.write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 3\nproperty float x\n"
                    b"element face 30000000\nproperty list uchar int vertex_indices\nend_header\n")
    stl = tmp_path / "big.stl"
    stl.write_bytes(b"\0" * 80 + struct.pack("<I", 2) + b"\0" * 100)       # binary: 84 + 50 per triangle
    doc = json.dumps({"accessors": [{"count": 9}, {"count": 90_000_000}],
                      "meshes": [{"primitives": [{"attributes": {"POSITION": 0}, "indices": 1},
                                                 {"attributes": {"POSITION": 0}},
                                                 {"attributes": {"POSITION": 0}, "mode": 5},     # a strip: 7
                                                 {"attributes": {"POSITION": 0}, "mode": 1}]}]}).encode()
    doc += b" " * (-len(doc) % 4)
    glb = tmp_path / "big.glb"
    glb.write_bytes(struct.pack("<4sII", b"glTF", 2, 20 + len(doc)) + struct.pack("<I4s", len(doc), b"JSON") + doc)
    obj = tmp_path / "plain.obj"
    obj.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    ascii_stl = tmp_path / "ascii.stl"
    ascii_stl.write_text("solid x\nendsolid x\n")
    assert [mesh_face_count(p) for p in (ply, stl, glb, obj, ascii_stl)] == [30_000_000, 2, 30_000_010, None, None]
    base = GenerateRequest(footage=shot / "footage", out=tmp_path / "r.gvf4d", canonical=("mesh", obj))
    assert check_request(base) is base
    refused(check_request, replace(base, canonical=("mesh", ply)), status=413,
            match=f"canonical mesh {ply}: 30,000,000 is over the limit of 20,000,000 faces .*GVF4D_MAX_MESH_FACES")
    refused(check_request, replace(base, canonical=("mesh", glb)), Limits(max_mesh_faces=1000), status=413,
            match="30,000,010 is over the limit of 1,000 faces")
    assert check_request(replace(base, canonical=("mesh", stl)), Limits(max_mesh_faces=2)).canonical[1] == stl
    bad = tmp_path / "bad.glb"
    bad.write_bytes(struct.pack("<4sII", b"glTF", 2, 28) + struct.pack("<I4s", 8, b"JSON") + b"{nope!!}")
    refused(check_request, replace(base, canonical=("mesh", bad)), match="bad.glb: its glTF JSON chunk cannot be read")


def cli_generate(shot, *args):
    return ["generate", str(shot / "footage"), "--canonical", "splat", str(shot / "canonical.ply"), *args]


@pytest.mark.parametrize("args, message", [
    (["--frames", "0"], "frames must be at least 1, got 0"),
    (["--frames", "-5"], "frames must be at least 1, got -5"),
    (["--fps", "-1"], "fps must be greater than 0, got -1"),
    (["--fps", "inf"], "fps must be a finite number"),
    (["--guidance", "nan", "1"], "guidance must be a finite number"),
    (["--stride", "0"], "stride must be at least 1"),
    (["--fit-size", "100000"], "fit size must be at most 1024"),
    (["--mesh-samples", "100000000"], "mesh samples 100,000,000 is over the limit of 2,000,000 Gaussians"),
])
def test_cli_generate_refuses_bad_numbers_before_any_work(shot, tmp_path, capsys, args, message):
    out = tmp_path / "r.gvf4d"
    assert main(cli_generate(shot, "--out", str(out), *args)) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"gvf4d: error: {message}" or (err.startswith("gvf4d: error: ") and message in err), err
    assert not out.exists() and "\n" not in err


def test_cli_generate_refuses_bad_files_naming_them(shot, tmp_path, capsys, fifo):
    cases = [
        (["generate", str(shot / "footage"), "--canonical", "splat", str(fifo)], f"canonical splat {fifo} is a FIFO"),
        (["generate", str(shot / "footage"), "--canonical", "mesh", str(shot)], f"canonical mesh {shot} is a folder"),
        (["generate", str(fifo), "--canonical", "splat", str(shot / "canonical.ply")], f"footage {fifo} is a FIFO"),
        (cli_generate(shot, "--out", str(tmp_path)), f"result {tmp_path} is an existing folder"),
        (cli_generate(shot, "--out", str(tmp_path / ".hidden.gvf4d")), "would be a hidden file"),
        (cli_generate(shot, "--out", str(tmp_path / ("x" * 300))), "longer than 255 bytes"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe.ply"]       # nothing was written


def test_cli_says_no_backend_running(tmp_path, shot, capsys):
    data = tmp_path / "data"
    data.mkdir()
    assert main(["status", "--data", str(data)]) == 2
    assert "no backend running" in capsys.readouterr().err
    # a lock file left by a killed backend (nobody holds the data folder's lock) is stale: removed, not believed
    (data / "backend.lock.json").write_text('{"url": "http://127.0.0.1:9", "token": "t", "pid": 999999}')
    assert main(["submit", *cli_generate(shot)[1:], "--data", str(data)]) == 2
    assert "no backend running" in capsys.readouterr().err
    assert not (data / "backend.lock.json").exists()
