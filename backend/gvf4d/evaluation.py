"""Scoring an animated splat against ground truth: renders from the input view and held-out views, and the
error of the tracks."""
from __future__ import annotations

from dataclasses import replace

import torch

from .metrics import psnr, ssim
from .rendering import orbit_cameras, render_gaussians
from .representations import AnimatedGaussians

VIEWS = {"input": (0.0, 0.0), "side": (90.0, 0.0), "back": (180.0, 0.0), "top": (0.0, 80.0)}


def map_points(animated: AnimatedGaussians, fn, scale: float) -> AnimatedGaussians:
    """Applies a similarity (points -> fn(points), sizes x scale) to every frame and the canonical splat."""
    c = animated.canonical
    canonical = replace(c, means=fn(c.means), scales=c.scales * scale)
    return replace(animated, canonical=canonical, positions=fn(animated.positions),
                   scales=None if animated.scales is None else animated.scales * scale)


@torch.no_grad()
def score(pred: AnimatedGaussians, truth: AnimatedGaussians, size: int = 128) -> dict:
    """PSNR/SSIM per view over all frames (white background) and the mean position error (same Gaussians)."""
    out: dict = {}
    for name, (az, el) in VIEWS.items():
        cam = orbit_cameras([az], el, width=size, height=size)
        p = torch.stack([render_gaussians(pred.frame(t), cam).rgb[0] for t in range(pred.num_frames)])
        g = torch.stack([render_gaussians(truth.frame(t), cam).rgb[0] for t in range(truth.num_frames)])
        out[name] = {"psnr": float(psnr(p, g).mean()), "ssim": float(ssim(p, g).mean())}
    if pred.positions.shape == truth.positions.shape:
        out["position_error"] = float((pred.positions - truth.positions).norm(dim=-1).mean())
    return out


def format_scores(s: dict, baseline: dict | None = None) -> str:
    """A small table; with a baseline, its figures in a second pair of columns."""
    head = f"  {'view':6s} {'PSNR':>7s} {'SSIM':>6s}" + (f"   {'static PSNR':>11s} {'SSIM':>6s}" if baseline else "")
    lines = [head]
    for name in VIEWS:
        row = f"  {name:6s} {s[name]['psnr']:7.2f} {s[name]['ssim']:6.3f}"
        if baseline:
            row += f"   {baseline[name]['psnr']:11.2f} {baseline[name]['ssim']:6.3f}"
        lines.append(row)
    if "position_error" in s:
        extra = f" (static: {baseline['position_error']:.4f})" if baseline else ""
        lines.append(f"  mean position error {s['position_error']:.4f}{extra} (object size 1)")
    return "\n".join(lines)
