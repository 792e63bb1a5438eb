"""`gvf4d doctor` through the real CLI, on this CPU machine."""
import json
import os
import subprocess
import sys

ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def doctor(*args, env=ENV):
    r = subprocess.run([sys.executable, "-m", "gvf4d.cli", "doctor", *args], capture_output=True, text=True,
                       timeout=300, env=env)
    return r


def weights_folder(root, with_gvf=True):
    """A weights folder as `gvf4d weights` sees it (presence only: doctor does not load or hash the weights)."""
    from gvf4d.pipelines.gvf import GVF_FILES
    (root / "gvf").mkdir(parents=True)
    for sub in ("dinov2", "clip"):
        (root / sub).mkdir()
        (root / sub / "config.json").write_text("{}")
    for stem in GVF_FILES.values() if with_gvf else ():
        (root / "gvf" / f"{stem}.safetensors").write_bytes(b"x" * 1024)
    return root


def test_cpu_machine_runs_and_says_what_is_off(tmp_path):
    weights = weights_folder(tmp_path / "weights")
    r = doctor("--json", "--weights", str(weights), "--data", str(tmp_path / "data"), "--warm")
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads(r.stdout)
    rows = {c["name"]: c for c in report["checks"]}
    assert report["ok"] is True
    assert rows["torch"]["status"] == "ok" and rows["torch"]["data"]["version"].startswith("2.")
    assert rows["backend"]["status"] == "ok"
    assert rows["gpu"]["status"] == "warn" and "CPU" in rows["gpu"]["detail"]
    for kernel in ("triton", "nvrtc_kernel"):
        assert rows[kernel]["status"] == "off" and "needs a CUDA GPU" in rows[kernel]["detail"]
    assert rows["gsplat"]["status"] == "off" and "PyTorch rasterizer" in rows["gsplat"]["detail"]
    assert rows["spconv"]["status"] == "off"            # the test pins install spconv's CPU build
    assert rows["weights"]["status"] == "ok" and set(rows["weights"]["data"]["present"]) >= {"dit", "dinov2", "clip"}
    assert set(rows["weights"]["data"]["absent"]) == {"gaussian_decoder", "trellis", "matting"}
    assert rows["data_folder"]["status"] == "ok" and rows["data_folder"]["data"]["free"] > 0
    assert rows["warm"]["status"] == "off" and "no CUDA GPU" in rows["warm"]["detail"]
    assert not (tmp_path / "data").exists()            # a check writes nothing


def test_exits_non_zero_only_when_the_backend_cannot_run(tmp_path):
    # missing weights only warn (the fit engine runs without them); a data folder that cannot be made (its
    # parent is a file) fails
    weights = weights_folder(tmp_path / "weights", with_gvf=False)
    (tmp_path / "a_file").write_text("x")
    r = doctor("--weights", str(weights), "--data", str(tmp_path / "a_file" / "data"))
    assert r.returncode == 1, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "gvf4d doctor"
    rows = {line.split()[0]: line.split(None, 2)[1:] for line in lines[1:]}
    assert rows["weights"][0] == "warn" and "missing dit" in rows["weights"][1] and "--download" in rows["weights"][1]
    assert rows["data_folder"][0] == "fail" and "cannot be written" in rows["data_folder"][1]
    assert [name for name, (status, _) in rows.items() if status == "fail"] == ["data_folder"]
    # a torch that does not import (shadowed by a broken package): doctor still answers, and says so
    broken = tmp_path / "shadow" / "torch"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise ImportError('this torch is broken')\n")
    r = doctor("--json", "--data", str(tmp_path), env={**ENV, "PYTHONPATH": str(tmp_path / "shadow")})
    assert r.returncode == 1, r.stderr
    rows = {c["name"]: c for c in json.loads(r.stdout)["checks"]}
    assert rows["torch"]["status"] == "fail" and "this torch is broken" in rows["torch"]["detail"]
    assert rows["data_folder"]["status"] == "ok"
