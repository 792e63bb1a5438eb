import json
import subprocess
import sys

import av
import pygltflib

from gvf_blender.result_file import GVF4DFile


def _gvf4d(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "gvf4d.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=600)


def test_demo_writes_a_valid_result_and_exports(tmp_path):
    out = tmp_path / "demo"
    r = _gvf4d("demo", "--out", str(out), "--frames", "5", "--gaussians-per-part", "60",
               "--footage-size", "64", "--fit-size", "48", "--fit-iterations", "5", "--preview-size", "48")
    assert r.returncode == 0, r.stderr
    f = GVF4DFile(out / "result.gvf4d")
    assert (f.num_frames, f.num_gaussians) == (5, 360)
    assert f.metadata["footage"]["frame_indices"] == [0, 1, 2, 3, 4]
    assert len(f.metadata["footage"]["sha256"]) == 64
    assert sorted(p.name for p in (out / "ply").iterdir()) == [f"frame_{t:04d}.ply" for t in range(5)]
    doc = pygltflib.GLTF2().load(str(out / "result.glb"))
    assert len(doc.meshes[0].primitives[0].targets) == 5
    with av.open(str(out / "preview.mp4")) as c:
        assert sum(1 for _ in c.decode(video=0)) == 5 + 48
    assert len(list((out / "footage").glob("*.png"))) == 5

    info = _gvf4d("info", str(out / "result.gvf4d"))
    assert info.returncode == 0 and "360 Gaussians x 5 frames" in info.stdout
    js = json.loads(_gvf4d("info", "--json", str(out / "result.gvf4d")).stdout)
    assert js["frames"] == 5 and js["metadata"]["engine"]["name"]


def test_info_on_a_bad_file_says_what_is_wrong(tmp_path):
    bad = tmp_path / "x.gvf4d"
    bad.write_bytes(b"\x00" * 3)
    r = _gvf4d("info", str(bad))
    assert r.returncode == 2 and "x.gvf4d" in r.stderr and "Traceback" not in r.stderr
