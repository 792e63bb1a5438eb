"""Shots longer than the model's clips: every frame of the range, the gvf engine's overlapping windows (their seams
as smooth as their insides), the fit engine over the whole range, and the decode's memory bounded on a GPU."""
import math

import numpy as np
import pytest
import torch

from gvf4d.pipelines.gvf import GVFEngine, GVFSettings
from gvf4d.representations.gvf_gaussians import GVFGaussians
from gvf4d.samplers import TemporalWindows, WindowedNoise
from gvf4d.synthetic import make_synthetic_shot

from conftest import synthetic_shot_files

SEAM_MARGIN = 1.25      # the frame-to-frame change across seams may exceed the inside's by at most this factor


@pytest.fixture(scope="module")
def long_shot_files(tmp_path_factory):
    """An 80-frame synthetic shot on disk."""
    return synthetic_shot_files(tmp_path_factory, "long_shot", 80)


def frame_changes(positions: torch.Tensor) -> torch.Tensor:
    """(T, N, 3) -> (T - 1,): the mean distance the Gaussians move from each frame to the next."""
    return (positions[1:] - positions[:-1]).norm(dim=-1).mean(-1)


def seam_and_inside_changes(positions: torch.Tensor, windows: TemporalWindows) -> tuple[float, float]:
    """The mean frame-to-frame change over the transitions that touch a frame two windows share (the seams), and
    over those between frames of one window only."""
    cover = torch.zeros(windows.frames, dtype=torch.int64)
    for s in windows.starts:
        cover[s:s + windows.length] += 1
    at_seam = (cover[1:] > 1) | (cover[:-1] > 1)
    changes = frame_changes(positions)
    return float(changes[at_seam].mean()), float(changes[~at_seam].mean())


def test_long_shot_windows_cover_the_shot_and_blend_to_a_partition_of_unity():
    for frames, length, overlap, multiple in ((80, 32, 8, 1), (300, 32, 8, 1), (300, 32, 8, 5), (96, 4, 1, 1),
                                              (33, 32, 8, 1), (32, 32, 8, 1), (7, 32, 8, 1)):
        w = TemporalWindows.cover(frames, length, overlap, multiple)
        assert w.starts[0] == 0 and w.starts[-1] + w.length == frames and w.count % multiple == 0
        assert all(b + w.length - a >= min(overlap, w.length) for a, b in zip(w.starts[1:], w.starts))  # overlaps
        shares = torch.zeros(frames, dtype=torch.float64)
        for k, s in enumerate(w.starts):
            shares[s:s + w.length] += w.weights(dtype=torch.float64)[k]
        torch.testing.assert_close(shares, torch.ones(frames, dtype=torch.float64))
        x = torch.randn(1, frames, 3, 2)
        torch.testing.assert_close(w.blend(w.gather(x)), x)
    assert TemporalWindows.cover(300, 32, 8).count == 13              # ceil((300 - 8) / 24)
    # two windows over an 8-frame overlap: linear ramps, 1/9 ... 8/9 in, the complement out
    w = TemporalWindows.cover(56, 32, 8)
    assert w.starts == (0, 24)
    ramp = torch.arange(1, 9) / 9
    torch.testing.assert_close(w.weights()[1, :8], ramp)
    torch.testing.assert_close(w.weights()[0, 24:], 1 - ramp)
    # per window a constant prediction -> blended, the overlap moves from one to the other in equal steps
    blended = WindowedNoise(w, lambda first, last, x, t: torch.arange(first, last).float()[:, None].expand(-1, 32),
                            per_call=1)(torch.zeros(1, 56), torch.tensor(0.5))
    steps = blended[0, 1:] - blended[0, :-1]
    assert torch.allclose(steps[23:32], torch.full((9,), 1 / 9)) and steps[:23].abs().max() == 0
    with pytest.raises(ValueError, match="overlap of 32 frames"):
        TemporalWindows.cover(80, 32, 32)


def test_long_shot_windows_batched_give_what_one_window_per_call_gives(small_weights):
    """Batching windows in one DiT call (with the guidance branches) changes no window's prediction."""
    engine = GVFEngine.from_folder(small_weights / "gvf")
    canonical = GVFGaussians.from_gaussians(make_synthetic_shot(num_frames=2, gaussians_per_part=40, seed=3)
                                            .animated.canonical)
    cond = engine.conditions(canonical, torch.randn(20, 10, engine.dit.config.image_cond_channels,
                                                    generator=torch.Generator().manual_seed(0)))
    runs = [engine.sample_windows(cond, 20, GVFSettings(method="multistep", steps=3, guidance_scale=1.5,
                                                        guidance_scale2=3.0, windows_per_call=per_call))
            for per_call in (1, 7)]
    (one, nfe_one, w_one), (batched, nfe_batched, w_batched) = runs
    assert w_one["starts"] == w_batched["starts"] and len(w_one["starts"]) == 7 and w_batched["per_call"] == 7
    assert nfe_one == nfe_batched == 3
    torch.testing.assert_close(one, batched, rtol=1e-4, atol=1e-5)


def test_long_shot_gvf_engine_every_frame_and_seams_as_smooth_as_window_insides(tmp_path, small_weights,
                                                                                long_shot_files):
    """80 frames through `generate` with the gvf engine (small weights: windows of 4 frames, the motion VAE's
    num_timesteps): every frame in the result with its source index, and the seams' frame-to-frame change within
    SEAM_MARGIN of the inside's."""
    from gvf4d.pipelines.generate import generate
    from gvf4d.pipelines.request import GenerateRequest
    from gvf4d.result import ResultFile
    root, shot = long_shot_files
    req = GenerateRequest(footage=root / "footage", out=tmp_path / "long.gvf4d",
                          canonical=("splat", root / "canonical.ply"), engine="gvf", weights=small_weights,
                          fit_size=32, gvf=GVFSettings(method="multistep", steps=4, guidance_scale=1.5,
                                                       guidance_scale2=3.0))
    stages = []
    generate(req, progress=lambda stage, fraction: stages.append(stage))
    result = ResultFile(req.out)
    meta = result.metadata
    assert result.num_frames == 80 and meta["footage"]["frame_indices"] == list(range(80)) and meta["fps"] == 24.0
    windows = meta["sampler"]["windows"]
    assert windows["frames"] == 4 and windows["per_call"] == len(windows["starts"]) == 27
    assert any(s.startswith("sampling 27 windows of 4 frames, 27 per call (about") for s in stages)
    assert [s.split(" (")[0] for s in stages if s.startswith("decode window")] == \
        [f"decode window {k}/20" for k in range(1, 21)]
    positions = torch.from_numpy(np.stack([result.frame("frames.position", t) for t in range(80)]))
    assert torch.isfinite(positions).all() and frame_changes(positions).min() > 0      # every frame is its own
    seams, inside = seam_and_inside_changes(positions, TemporalWindows(80, 4, tuple(windows["starts"])))
    print(f"gvf engine, 80 frames, 27 windows of 4: mean frame-to-frame change at seams {seams:.5f}, "
          f"inside windows {inside:.5f} (ratio {seams / inside:.3f})")
    assert seams <= SEAM_MARGIN * inside


def _input_view_psnr(shot, size: int, settings) -> tuple[float, float]:
    """The fit engine on `shot`'s footage (rendered at size x size from the footage camera, over white), from its
    true canonical splat -> (mean over the frames of the input-view PSNR of its renders against the footage, the
    worst frame's)."""
    from gvf4d.engines.fit import fit_variation_field
    from gvf4d.metrics import psnr
    from gvf4d.rendering import footage_camera, render_gaussians
    from gvf4d.synthetic import render_footage
    rgba = render_footage(shot.animated, size, size).float() / 255
    alphas = rgba[..., 3]
    frames = rgba[..., :3] * alphas[..., None] + (1 - alphas[..., None])
    camera = footage_camera(size, size)
    animated = fit_variation_field(shot.animated.canonical, frames, alphas, camera, settings)
    values = torch.stack([psnr(render_gaussians(animated.frame(t), camera).rgb[0], frames[t])
                          for t in range(len(frames))])
    return float(values.mean()), float(values.min())


def test_long_shot_fit_engine_holds_its_quality_over_80_frames():
    """The fit engine, every frame started from its neighbour with the smoothness term against it, over 80 frames
    of the synthetic motion scores within 1 dB of 32 frames of it (input view, mean PSNR over the frames)."""
    from gvf4d.engines.fit import FitSettings
    settings = FitSettings(num_nodes=24, iterations_first=8, iterations=2)
    scores = {frames: _input_view_psnr(make_synthetic_shot(num_frames=frames, gaussians_per_part=20, seed=2), 24,
                                       settings) for frames in (32, 80)}
    print(f"fit engine input-view PSNR (mean, worst frame): 32 frames {scores[32][0]:.2f}, {scores[32][1]:.2f} dB; "
          f"80 frames {scores[80][0]:.2f}, {scores[80][1]:.2f} dB")
    assert scores[80][0] >= scores[32][0] - 1.0
    assert scores[80][1] >= scores[32][1] - 2.0       # no frame late in the long shot drifts away


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_long_shot_decode_memory_is_bounded_on_the_gpu():
    """The published motion VAE (random weights) decoding 64 and 256 frames of 100k Gaussians, window by window:
    the same peak GPU memory, about one window's deltas and tracks, not the shot's."""
    from gvf4d.models.gvf_dit import GVFDiT, GVFDiTConfig
    from gvf4d.models.motion_vae import MotionVAE, MotionVAEConfig
    from gvf4d.pipelines.gvf import identity_stats
    torch.manual_seed(0)
    vae = MotionVAE(MotionVAEConfig())
    for p in vae.parameters():
        torch.nn.init.normal_(p, std=0.02)
    tiny_dit = GVFDiT(GVFDiTConfig(resolution=512, model_channels=64, num_blocks=1, num_heads=4))
    engine = GVFEngine(tiny_dit, vae, identity_stats()).to("cuda")
    shot = make_synthetic_shot(num_frames=2, gaussians_per_part=16_667, seed=0)
    canonical = GVFGaussians.from_gaussians(shot.animated.canonical)
    n = len(shot.animated.canonical)
    peaks = {}
    for frames in (64, 256, 64):                     # the first run warms up (kernels, the decoder's CUDA graph)
        latent = torch.randn(frames, 512, 16, device="cuda")
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        animated = engine.decode_windows(latent, canonical, GVFSettings())
        torch.cuda.synchronize()
        peaks[frames] = torch.cuda.max_memory_allocated() - base
        assert animated.positions.shape == (frames, n, 3) and animated.positions.device.type == "cpu"
    window_bytes = 32 * n * (14 + 14) * 4           # one window's float32 deltas and tracks
    print(f"decode peak GPU memory above its inputs, {n} Gaussians: 64 frames {peaks[64] / 2**20:.0f} MiB, "
          f"256 frames {peaks[256] / 2**20:.0f} MiB (one window's deltas + tracks: {window_bytes / 2**20:.0f} MiB)")
    assert peaks[256] <= 1.05 * peaks[64]
    assert peaks[256] < 4 * window_bytes and math.isfinite(float(animated.positions.sum()))
