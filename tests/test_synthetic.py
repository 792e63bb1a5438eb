import torch

from gvf4d.representations import quat_to_rotmat
from gvf4d.synthetic import make_synthetic_shot


def test_tracks_are_exact_images_of_the_canonical_gaussians():
    shot = make_synthetic_shot(num_frames=8, gaussians_per_part=50, seed=2)
    a = shot.animated
    c = a.canonical
    assert a.positions.shape == (8, len(c), 3)
    assert a.positions.abs().max() < 0.5                     # inside the unit cube in every frame
    move = (a.positions - c.means).norm(dim=-1)
    assert move[0].max() < 1e-5 < move[2].max()              # frame 0 is the rest pose; others move
    # parts that only rotate keep their Gaussian sizes; the torso squashes and stretches
    head = shot.part_ids == [p.name for p in shot.parts].index("head")
    torso = shot.part_ids == 0
    vol = lambda s: s.prod(-1)
    torch.testing.assert_close(vol(a.scales[3, head]), vol(c.scales[head]), rtol=1e-3, atol=0)
    torch.testing.assert_close(vol(a.scales[3, torso]), vol(c.scales[torso]), rtol=1e-3, atol=0)  # volume kept
    assert (a.scales[3, torso] - c.scales[torso]).abs().max() > 1e-4
    # the head moves by an affine map (torso squash after the nod): recover it from the positions and check
    # that every head Gaussian's covariance is exactly that map applied to its canonical covariance
    p0, p3 = c.means[head].double(), a.positions[3, head].double()
    X = torch.cat([p0, torch.ones(len(p0), 1, dtype=torch.float64)], 1)
    sol = torch.linalg.lstsq(X, p3).solution                  # (4, 3)
    torch.testing.assert_close(X @ sol, p3, atol=1e-5, rtol=0)  # affine, exactly
    M = sol[:3].T
    cov = lambda q, s: (quat_to_rotmat(q) * s[:, None, :]).double() @ (quat_to_rotmat(q) * s[:, None, :]).double().transpose(-1, -2)
    cov0, cov3 = cov(c.quats[head], c.scales[head]), cov(a.quats[3, head], a.scales[3, head])
    torch.testing.assert_close(M @ cov0 @ M.T, cov3, atol=1e-8, rtol=1e-3)


def test_seeds_differ_and_repeat():
    a = make_synthetic_shot(num_frames=4, gaussians_per_part=20, seed=0).animated
    b = make_synthetic_shot(num_frames=4, gaussians_per_part=20, seed=0).animated
    c = make_synthetic_shot(num_frames=4, gaussians_per_part=20, seed=5).animated
    torch.testing.assert_close(a.positions, b.positions)
    assert (a.positions - c.positions).abs().max() > 1e-3
