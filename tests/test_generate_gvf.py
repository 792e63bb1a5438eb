"""`gvf4d generate --engine gvf` end to end on CPU, with small random weights made here (shape-level check)."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from gvf4d.pipelines.gvf import CONFIG_FILE, GVF_FILES
from gvf_blender.result_file import GVF4DFile

from small_weights import DIT, IMAGE_CHANNELS, VAE


def test_dinov2_features_layout(small_weights):
    from gvf4d.models.dinov2_features import DinoV2Features
    feats = DinoV2Features.from_folder(small_weights / "dinov2")
    frames = np.random.default_rng(0).integers(0, 255, (2, 512, 512, 3), dtype=np.uint8)
    out = feats(frames)
    assert out.shape == (2, 1370, IMAGE_CHANNELS)
    from gvf4d.models.dinov2_features import preprocess_frames
    h = feats.model(pixel_values=preprocess_frames(frames), output_hidden_states=True).hidden_states[-1]
    torch.testing.assert_close(out[:, -1], h[:, 0])          # CLS last
    torch.testing.assert_close(out[:, :1369], h[:, 5:])      # patches, registers dropped, no final norm


def test_generate_end_to_end_with_small_weights(tmp_path, small_weights, shot_files):
    root, shot = shot_files
    out = tmp_path / "take1.gvf4d"
    r = subprocess.run([sys.executable, "-m", "gvf4d.cli", "generate", str(root / "footage"), "--out", str(out),
                        "--canonical", "splat", str(root / "canonical.ply"), "--weights", str(small_weights),
                        "--frames", "4", "--engine", "gvf", "--method", "multistep", "--steps", "3", "--seed", "7", "--guidance", "1.5", "3"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    f = GVF4DFile(out)
    n = len(shot.animated.canonical)
    assert (f.num_frames, f.num_gaussians) == (4, n)
    for name in ("frames.position", "frames.scale", "frames.rotation", "frames.opacity", "frames.sh_dc"):
        assert f.has(name)
    pos = np.asarray(f.array("frames.position"))
    assert np.isfinite(pos).all() and np.abs(pos - pos[0]).max() > 0     # random weights move things
    m = f.metadata
    assert m["sampler"]["network_evaluations"] == 3 and m["sampler"]["guidance_scale2"] == 3.0
    assert {c["name"] for c in m["engine"]["checkpoints"]} >= {"dit", "motion_vae", "static_mean"}
    assert all(len(c["sha256"]) == 64 for c in m["engine"]["checkpoints"])
    assert m["footage"]["frame_indices"] == [0, 1, 2, 3] and m["seed"] == 7
    assert abs(m["coordinates"]["normalisation"]["scale"] - 1.0) < 0.5
    # the same take refined against the footage (--refine N fit steps per frame)
    refined = tmp_path / "take1_refined.gvf4d"
    r = subprocess.run([sys.executable, "-m", "gvf4d.cli", "generate", str(root / "footage"), "--out", str(refined),
                        "--canonical", "splat", str(root / "canonical.ply"), "--weights", str(small_weights),
                        "--frames", "4", "--engine", "gvf", "--method", "multistep", "--steps", "3", "--seed", "7",
                        "--guidance", "1.5", "3", "--refine", "3", "--fit-size", "32"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    g = GVF4DFile(refined)
    assert g.metadata["engine"]["refine"]["iterations_per_frame"] == 3 and "alignment" in g.metadata["canonical"]
    np.testing.assert_array_equal(np.asarray(g.array("frames.opacity")), np.asarray(f.array("frames.opacity")))
    assert np.abs(np.asarray(g.array("frames.position")) - pos).max() > 1e-4


def test_generate_without_weights_or_with_wrong_weights_is_clear(tmp_path, small_weights, shot_files):
    root, _ = shot_files
    base = [sys.executable, "-m", "gvf4d.cli", "generate", str(root / "footage"), "--out", str(tmp_path / "x.gvf4d"),
            "--canonical", "splat", str(root / "canonical.ply"), "--frames", "4", "--engine", "gvf"]
    r = subprocess.run(base + ["--weights", str(tmp_path / "nowhere")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "nowhere does not exist" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "empty").mkdir()
    r = subprocess.run(base + ["--weights", str(tmp_path / "empty")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "ema_diffusion_0.9999_500000.pt: missing" in r.stderr and "Traceback" not in r.stderr
    cfg = small_weights / "gvf" / CONFIG_FILE
    saved = cfg.read_text()
    try:
        cfg.write_text(json.dumps({"dit": {**DIT, "num_blocks": 3}, "motion_vae": VAE}))
        r = subprocess.run(base + ["--weights", str(small_weights)], capture_output=True, text=True, timeout=300)
        assert r.returncode == 2 and "missing keys: blocks.2." in r.stderr
    finally:
        cfg.write_text(saved)
    assert not (tmp_path / "x.gvf4d").exists()


def test_weights_command_reports_and_converts(small_weights, tmp_path):
    small_weights = Path(shutil.copytree(small_weights, tmp_path / "weights"))   # converted and tampered with here
    r = subprocess.run([sys.executable, "-m", "gvf4d.cli", "weights", "--weights", str(small_weights), "--convert", "--verify"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    # the GVF files, GVF's Gaussian decoder, and the dinov2/, trellis/ and clip/ folders, each file hashed
    assert r.stdout.count(" ok ") == len(GVF_FILES) + 4 and "dinov2" in r.stdout
    assert "trellis" in r.stdout and "absent (optional)" in r.stdout.splitlines()[-1]   # only matting/ is absent
    assert (small_weights / "gvf" / f"{GVF_FILES['dit']}.safetensors").is_file()
    lock = json.loads((small_weights / "weights.lock.json").read_text())
    (small_weights / "gvf" / "static_std.safetensors").write_bytes(b"tampered")
    r = subprocess.run([sys.executable, "-m", "gvf4d.cli", "weights", "--weights", str(small_weights), "--verify"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "HASH MISMATCH" in r.stdout
    assert "gvf/static_std.safetensors" in lock


def test_generate_fit_engine_with_stage_cache_and_exports(tmp_path, shot_files):
    root, shot = shot_files
    base = [sys.executable, "-m", "gvf4d.cli", "generate", str(root / "footage"), "--canonical", "splat",
            str(root / "canonical.ply"), "--frames", "4", "--fit-size", "48", "--cache", str(tmp_path / "cache")]
    r1 = subprocess.run(base + ["--out", str(tmp_path / "a.gvf4d"), "--fit-iterations", "2", "--export", "glb"],
                        capture_output=True, text=True, timeout=600)
    assert r1.returncode == 0, r1.stderr
    assert "reused" not in r1.stderr and (tmp_path / "a.glb").is_file()
    r2 = subprocess.run(base + ["--out", str(tmp_path / "b.gvf4d"), "--fit-iterations", "3"],
                        capture_output=True, text=True, timeout=600)
    assert r2.returncode == 0, r2.stderr
    assert "reused stages: ingest, canonical, align" in r2.stderr
    a, b = GVF4DFile(tmp_path / "a.gvf4d"), GVF4DFile(tmp_path / "b.gvf4d")
    assert a.metadata["engine"]["name"] == "fit" and b.metadata["reused_stages"] == ["ingest", "canonical", "align"]
    assert a.metadata["canonical"]["alignment"] == b.metadata["canonical"]["alignment"]
    assert np.abs(np.asarray(a.array("frames.position")) - np.asarray(b.array("frames.position"))).max() > 0


def test_generate_finds_the_side_of_a_turned_splat(tmp_path, shot_files):
    """The artist's splat faces another way than the footage: --azimuth-step searches for the facing side."""
    from gvf4d.canonical.azimuth import rotate_about_z
    from gvf4d.exporters import write_splat_ply
    root, shot = shot_files
    turned = write_splat_ply(tmp_path / "turned.ply", rotate_about_z(shot.animated.canonical, 90.0))
    out = tmp_path / "t.gvf4d"
    r = subprocess.run([sys.executable, "-m", "gvf4d.cli", "generate", str(root / "footage"), "--out", str(out),
                        "--canonical", "splat", str(turned), "--frames", "4", "--fit-size", "48",
                        "--fit-iterations", "2", "--azimuth-step", "30"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert GVF4DFile(out).metadata["canonical"]["alignment"]["azimuth_deg"] == 90.0


def test_engine_returns_to_the_loaded_float32_weights_after_half_precision():
    """A warm engine (the service) runs jobs of any precision: half-precision weights are made from the float32
    ones as loaded, and a later float32 job gets those back exactly, not the rounded values."""
    from gvf4d.models.gvf_dit import GVFDiT, GVFDiTConfig
    from gvf4d.models.motion_vae import MotionVAE, MotionVAEConfig
    from gvf4d.pipelines.gvf import GVFEngine
    torch.manual_seed(0)
    engine = GVFEngine(GVFDiT(GVFDiTConfig(**DIT)), MotionVAE(MotionVAEConfig(**VAE)), {})
    loaded = {k: v.clone() for k, v in engine.vae.state_dict().items()}
    probe = engine.vae.proj.weight
    assert engine._cast_weights(engine.vae, probe, torch.bfloat16, engine.vae.cast_decoder)
    assert probe.dtype == torch.bfloat16 and engine.vae.position_encoding[0].omega.dtype == loaded[
        "position_encoding.0.omega"].dtype
    assert engine._cast_weights(engine.vae, probe, torch.float16, engine.vae.cast_decoder)     # via float32
    assert torch.equal(engine.vae.proj.weight, loaded["proj.weight"].half())
    assert engine._cast_weights(engine.vae, probe, torch.float32, engine.vae.cast_decoder)
    assert not engine._cast_weights(engine.vae, probe, torch.float32, engine.vae.cast_decoder)
    for k, v in engine.vae.state_dict().items():
        assert v.dtype == loaded[k].dtype and torch.equal(v, loaded[k]), k
