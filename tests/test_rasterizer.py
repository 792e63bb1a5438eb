import math

import numpy as np
import pytest
import torch
from scipy.special import sph_harm_y

from gvf4d.rendering import footage_camera, gsplat_available, orbit_cameras, rasterize
from gvf4d.rendering.cameras import intrinsics, orbit_position
from gvf4d.rendering.rasterize_reference import rasterize_reference
from gvf4d.rendering.spherical_harmonics import sh_to_colors
from gvf4d.representations import sh_dc_to_rgb

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


def test_expected_depth_of_two_overlapping_gaussians():
    means, quats, scales, opac = _gauss([[0.0, 0.0, 0.0], [0.0, -0.5, 0.0]], 0.04, [0.6, 0.5])
    cam = footage_camera(W, H)
    colours = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
    bg = torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64)
    args = (means, quats, scales, opac, colours, cam.viewmats.double(), cam.Ks.double(), W, H)
    rgb, alpha, depth = rasterize_reference(*args, backgrounds=bg, render_depth=True)
    # at the centre pixel the green Gaussian (camera z 1.5) weighs 0.5, the red one (z 2.0) (1 - 0.5) * 0.6
    w_front, w_back = 0.5, 0.5 * 0.6
    assert depth[0, 16, 16, 0].item() == pytest.approx((w_front * 1.5 + w_back * 2.0) / (w_front + w_back), rel=1e-12)
    assert depth[0, 0, 0, 0].item() == 0.0 and alpha[0, 0, 0, 0].item() == 0.0          # nothing drawn there
    covered = alpha[0, ..., 0] > 0
    assert ((depth[0, ..., 0][covered] >= 1.5 - 1e-9) & (depth[0, ..., 0][covered] <= 2.0 + 1e-9)).all()
    rgb0, alpha0 = rasterize_reference(*args, backgrounds=bg)                          # colours as without depth
    torch.testing.assert_close(rgb, rgb0, rtol=0, atol=0)
    torch.testing.assert_close(alpha, alpha0, rtol=0, atol=0)


def _real_sh_scipy(degree: int, dirs: torch.Tensor) -> torch.Tensor:
    """3DGS's real SH basis from scipy's complex SH (Condon-Shortley phase included): sqrt(2) Re Y_l^m for m > 0,
    sqrt(2) Im Y_l^|m| for m < 0, Y_l^0 for m = 0, ordered band by band, m = -l..l."""
    d = torch.nn.functional.normalize(dirs.double(), dim=-1).numpy()
    polar, azimuth = np.arccos(np.clip(d[..., 2], -1, 1)), np.arctan2(d[..., 1], d[..., 0])
    cols = []
    for l in range(degree + 1):
        for m in range(-l, l + 1):
            y = sph_harm_y(l, abs(m), polar, azimuth)
            cols.append(y.real if m == 0 else math.sqrt(2) * (y.real if m > 0 else y.imag))
    return torch.from_numpy(np.stack(cols, -1))


def test_sh_degree_0_gives_todays_colours():
    torch.manual_seed(3)
    n = 60
    means, quats = torch.randn(n, 3) * 0.2, torch.nn.functional.normalize(torch.randn(n, 4), dim=-1)
    scales, opac, sh_dc = torch.rand(n, 3) * 0.05 + 0.01, torch.rand(n), torch.randn(n, 3) * 1.5
    cams = orbit_cameras([0, 130], [10, -20], width=24, height=20)
    torch.testing.assert_close(sh_to_colors(0, sh_dc[:, None], means, cams.viewmats), sh_dc_to_rgb(sh_dc).expand(2, -1, -1))
    today = rasterize(means, quats, scales, opac, sh_dc_to_rgb(sh_dc), cams.viewmats, cams.Ks, 24, 20)
    with_sh = rasterize(means, quats, scales, opac, sh_dc[:, None], cams.viewmats, cams.Ks, 24, 20, sh_degree=0)
    for a, b in zip(today, with_sh):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("degree", [1, 2, 3])
def test_sh_bands_match_an_independent_evaluation(degree):
    torch.manual_seed(4 + degree)
    n = 50
    means = torch.randn(n, 3, dtype=torch.float64) * 0.3
    coeffs = torch.randn(n, 16, 3, dtype=torch.float64) * 0.4             # more bands than used: the rest is ignored
    cams = orbit_cameras([0, 75, 210], [0, 35, -50], width=16, height=16)
    viewmats = cams.viewmats.double()
    got = sh_to_colors(degree, coeffs, means, viewmats)                    # (C, N, 3)
    centres = torch.linalg.inv(viewmats)[:, :3, 3]
    k = (degree + 1) ** 2
    for c in range(3):
        bases = _real_sh_scipy(degree, means - centres[c])                # (N, k)
        expect = torch.clamp_min(0.5 + torch.einsum("nk,nkd->nd", bases, coeffs[:, :k]), 0.0)
        torch.testing.assert_close(got[c], expect, rtol=0, atol=1e-10)
    assert (got[0] != got[1]).any()                                        # the colour depends on the view


def test_rasterizer_evaluates_sh_per_camera():
    torch.manual_seed(5)
    n = 40
    means, quats = torch.randn(n, 3) * 0.2, torch.nn.functional.normalize(torch.randn(n, 4), dim=-1)
    scales, opac, coeffs = torch.rand(n, 3) * 0.05 + 0.02, torch.rand(n) * 0.8 + 0.2, torch.randn(n, 9, 3) * 0.5
    cams = orbit_cameras([0, 60, 150], 20, width=20, height=18)
    colours = sh_to_colors(2, coeffs, means, cams.viewmats)                # (C, N, 3)
    expect = rasterize(means, quats, scales, opac, colours, cams.viewmats, cams.Ks, 20, 18, render_depth=True)
    shared = rasterize(means, quats, scales, opac, coeffs, cams.viewmats, cams.Ks, 20, 18, sh_degree=2,
                       render_depth=True)
    per_camera = rasterize(means, quats, scales, opac, coeffs[None].expand(3, -1, -1, -1).clone(), cams.viewmats,
                           cams.Ks, 20, 18, sh_degree=2, render_depth=True)
    for got in (shared, per_camera):
        for a, b in zip(got, expect):
            torch.testing.assert_close(a, b)


@pytest.mark.skipif(not gsplat_available(), reason="gsplat with CUDA only (run on the GPU machine: tools/gpu_checks.py)")
def test_gsplat_agrees_with_reference_on_sh_and_depth():
    torch.manual_seed(6)
    n = 500
    means, quats = torch.randn(n, 3) * 0.25, torch.nn.functional.normalize(torch.randn(n, 4), dim=-1)
    scales, opac = torch.rand(n, 3) * 0.04 + 0.005, torch.rand(n) * 0.9 + 0.05
    coeffs = torch.randn(n, 16, 3) * 0.3
    cams = orbit_cameras([0, 90, 180, 270], 15, width=64, height=64)
    args = (means, quats, scales, opac)
    for colours in (coeffs, coeffs[None].expand(4, -1, -1, -1).clone()):
        ref = rasterize(*args, colours, cams.viewmats, cams.Ks, 64, 64, sh_degree=3, render_depth=True,
                        backend="reference")
        gs = rasterize(*[x.cuda() for x in (*args, colours, cams.viewmats, cams.Ks)], 64, 64, sh_degree=3,
                       render_depth=True, backend="gsplat")
        rgb, alpha, depth = (x.cpu() for x in gs)
        assert (rgb - ref[0]).abs().mean() < 2e-3 and (alpha - ref[1]).abs().mean() < 2e-3
        covered = (ref[1] > 0.1) & (alpha > 0.1)
        assert (depth - ref[2])[covered].abs().mean() < 2e-3


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
