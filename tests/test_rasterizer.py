import math

import pytest
import torch

from gvf4d.rendering import footage_camera, gsplat_available, orbit_cameras, rasterize
from gvf4d.rendering.cameras import intrinsics, orbit_position
from gvf4d.rendering.rasterize_reference import rasterize_reference

W = H = 33  # odd: pixel 16's centre (16.5) is the principal point


def _gauss(centres, scale, opac):
    n = len(centres)
    return (torch.tensor(centres, dtype=torch.float64), torch.tensor([[1.0, 0, 0, 0]] * n, dtype=torch.float64),
            torch.full((n, 3), scale, dtype=torch.float64), torch.tensor(opac, dtype=torch.float64))


def _render(means, quats, scales, opac, colours, bg=(0.0, 0.0, 1.0)):
    cam = footage_camera(W, H)
    rgb, alpha = rasterize_reference(means, quats, scales, opac, torch.tensor(colours, dtype=torch.float64),
                                     cam.viewmats.double(), cam.Ks.double(), W, H,
                                     backgrounds=torch.tensor([bg], dtype=torch.float64))
    return rgb[0], alpha[0, ..., 0]


def _sigma2(f, s, z):
    return (f * s / z) ** 2 + 0.3


def test_camera_frame_matches_blender_front_view():
    cam = footage_camera(W, H)
    R = cam.viewmats[0, :3, :3]
    # camera right = +X, down = -Z, forward = +Y; camera centre at (0, -2, 0)
    torch.testing.assert_close(R, torch.tensor([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]]))
    torch.testing.assert_close(-R.T @ cam.viewmats[0, :3, 3], torch.tensor([0.0, -2.0, 0.0]))
    torch.testing.assert_close(orbit_position(90, 0, 2), torch.tensor([2.0, 0.0, 0.0]), atol=1e-6, rtol=0)


def test_one_gaussian_against_hand_computation():
    s, o = 0.05, 0.8
    rgb, alpha = _render(*_gauss([[0.0, 0.0, 0.0]], s, [o]), [[1.0, 0.0, 0.0]])
    f = float(intrinsics(49.1, W, H)[0, 0])
    var = _sigma2(f, s, 2.0)
    assert alpha[16, 16].item() == pytest.approx(o, abs=1e-12)
    torch.testing.assert_close(rgb[16, 16], torch.tensor([o, 0.0, 1 - o], dtype=torch.float64))
    for dx, dy in ((3, 0), (0, 2), (2, -2)):
        a = o * math.exp(-0.5 * (dx * dx + dy * dy) / var)
        expect = a if a >= 1 / 255 else 0.0
        assert alpha[16 + dy, 16 + dx].item() == pytest.approx(expect, rel=1e-9)
    # image x follows world +X, image y follows world -Z
    rgb2, alpha2 = _render(*_gauss([[0.3, 0.0, 0.2]], s, [o]), [[1.0, 0.0, 0.0]])
    yy, xx = divmod(int(alpha2.argmax()), W)
    assert xx > 16 and yy < 16


def test_two_overlapping_gaussians_composite_front_to_back():
    s = 0.04
    means, quats, scales, opac = _gauss([[0.0, 0.0, 0.0], [0.0, -0.5, 0.0]], s, [0.6, 0.5])
    rgb, alpha = _render(means, quats, scales, opac, [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    a_back, a_front = 0.6, 0.5  # both centred on pixel (16, 16); the green one is nearer (depth 1.5)
    expect = torch.tensor([(1 - a_front) * a_back, a_front, (1 - a_front) * (1 - a_back)], dtype=torch.float64)
    torch.testing.assert_close(rgb[16, 16], expect)
    assert alpha[16, 16].item() == pytest.approx(1 - (1 - a_front) * (1 - a_back))


def test_opaque_stack_stops_at_transmittance_floor():
    means, quats, scales, opac = _gauss([[0.0, 0.0, 0.0], [0.0, -0.3, 0.0], [0.0, -0.6, 0.0]], 0.05, [1.0, 1.0, 1.0])
    rgb, alpha = _render(means, quats, scales, opac, [[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]], bg=(0, 0, 0))
    # nearest (blue) with alpha 0.999; the next would drop transmittance to 1e-6 < 1e-4, so it and all behind are skipped
    torch.testing.assert_close(rgb[16, 16], torch.tensor([0.0, 0.0, 0.999], dtype=torch.float64))


def test_reference_is_differentiable():
    torch.manual_seed(0)
    means = (torch.randn(3, 3, dtype=torch.float64) * 0.1).requires_grad_()
    opac = torch.tensor([0.5, 0.6, 0.7], dtype=torch.float64, requires_grad=True)
    quats = torch.nn.functional.normalize(torch.randn(3, 4, dtype=torch.float64), dim=-1)
    scales = torch.full((3, 3), 0.08, dtype=torch.float64)
    colours = torch.rand(3, 3, dtype=torch.float64)
    cam = orbit_cameras([20.0], 10.0, width=12, height=12)

    def f(m, o):
        rgb, _ = rasterize_reference(m, quats, scales, o, colours, cam.viewmats.double(), cam.Ks.double(), 12, 12)
        return rgb
    assert torch.autograd.gradcheck(f, (means, opac), eps=1e-6, atol=1e-5)


def test_batched_cameras_equal_one_by_one():
    torch.manual_seed(1)
    n = 40
    means, quats = torch.randn(n, 3) * 0.2, torch.nn.functional.normalize(torch.randn(n, 4), dim=-1)
    scales, opac, col = torch.rand(n, 3) * 0.05 + 0.01, torch.rand(n), torch.rand(n, 3)
    cams = orbit_cameras([0, 45, 200], [0, 20, -10], width=24, height=20)
    rgb, alpha = rasterize(means, quats, scales, opac, col, cams.viewmats, cams.Ks, 24, 20)
    for i in range(3):
        r1, a1 = rasterize(means, quats, scales, opac, col, cams.viewmats[i:i + 1], cams.Ks[i:i + 1], 24, 20)
        torch.testing.assert_close(rgb[i], r1[0])
        torch.testing.assert_close(alpha[i], a1[0])


@pytest.mark.skipif(not gsplat_available(), reason="gsplat with CUDA only (run on the GPU machine: tools/gpu_checks.py)")
def test_gsplat_agrees_with_reference():
    torch.manual_seed(2)
    n = 500
    means, quats = torch.randn(n, 3) * 0.25, torch.nn.functional.normalize(torch.randn(n, 4), dim=-1)
    scales, opac, col = torch.rand(n, 3) * 0.04 + 0.005, torch.rand(n) * 0.9 + 0.05, torch.rand(n, 3)
    cams = orbit_cameras([0, 90, 180, 270], 15, width=64, height=64)
    ref, ref_a = rasterize(means, quats, scales, opac, col, cams.viewmats, cams.Ks, 64, 64, backend="reference")
    dev = [x.cuda() for x in (means, quats, scales, opac, col, cams.viewmats, cams.Ks)]
    gs, gs_a = rasterize(*dev, 64, 64, backend="gsplat")
    assert (gs.cpu() - ref).abs().mean() < 2e-3 and (gs_a.cpu() - ref_a).abs().mean() < 2e-3
