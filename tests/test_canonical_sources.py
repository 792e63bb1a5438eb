"""The canonical stage's sources (TRELLIS, an artist's mesh, a splat), alignment, and mesh extraction."""
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch
import trimesh

from gvf4d.canonical.align import align_to_footage
from gvf4d.canonical.azimuth import rotate_about_z, search_azimuth
from gvf4d.canonical.mesh import MeshError, SurfaceMesh, read_mesh, sample_surface_gaussians
from gvf4d.mesh_extraction import deform_vertices, extract_mesh
from gvf4d.rendering import footage_camera, render_gaussians
from gvf4d.representations import AnimatedGaussians
from gvf4d.representations.rotation import quat_multiply, rotmat_to_quat
from gvf4d.synthetic import make_synthetic_shot
from gvf_blender.result_file import GVF4DFile

RADIUS = 0.4


@pytest.fixture(scope="module")
def sphere_splat():
    s = trimesh.creation.icosphere(subdivisions=4, radius=RADIUS)
    colors = np.where(s.vertices[:, 2:3] > 0, [0.9, 0.1, 0.1], [0.1, 0.1, 0.9])
    return sample_surface_gaussians(SurfaceMesh(np.asarray(s.vertices), np.asarray(s.faces), vertex_colors=colors),
                                    30_000, seed=0)


def test_alignment_recovers_a_known_rotation_and_scale():
    splat = make_synthetic_shot(num_frames=1, gaussians_per_part=150, seed=1).animated.canonical
    cam = footage_camera(96, 96)
    truth = rotate_about_z(splat, 60.0)
    truth = replace(truth, means=truth.means * 1.4 + torch.tensor([0.05, 0.0, -0.03]), scales=truth.scales * 1.4)
    seen = render_gaussians(truth, cam)
    found = search_azimuth(splat, seen.rgb[0], seen.alpha[0, ..., 0], azimuths_deg=range(-180, 180, 10))
    assert abs(((found.azimuth_deg + 60.0) + 180) % 360 - 180) <= 10
    alignment = align_to_footage(rotate_about_z(splat, -found.azimuth_deg), seen.rgb[0], seen.alpha[0, ..., 0], cam)
    assert abs(alignment.scale / 1.4 - 1) < 0.05, alignment.scale


def test_surface_sampling_is_area_weighted_flat_and_coloured(sphere_splat):
    g = sphere_splat
    r = g.means.norm(dim=1)
    assert (r - RADIUS).abs().max() < RADIUS * 0.01                       # on the (faceted) sphere
    assert abs(float((g.means[:, 2] > 0).float().mean()) - 0.5) < 0.02    # uniform over the area
    normal_axis = torch.nn.functional.normalize(g.means, dim=1)
    from gvf4d.representations.rotation import quat_to_rotmat
    thin_axis = quat_to_rotmat(g.quats)[:, :, 2]
    assert (torch.einsum("nd,nd->n", thin_axis, normal_axis).abs() > 0.98).float().mean() > 0.99
    assert (g.scales[:, 2] < 0.2 * g.scales[:, 0]).all()
    top = g.rgb[g.means[:, 2] > 0.1]
    assert (top[:, 0] > 0.8).all() and (top[:, 2] < 0.2).all()


def test_mesh_files_glb_up_axis_texture_and_errors(tmp_path):
    quad = trimesh.Trimesh(vertices=[[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], faces=[[0, 1, 2], [0, 2, 3]],
                           process=False)
    texture = np.zeros((8, 8, 3), np.uint8)
    texture[:, :4] = [255, 0, 0]
    texture[:, 4:] = [0, 255, 0]
    from PIL import Image
    material = trimesh.visual.material.PBRMaterial(baseColorTexture=Image.fromarray(texture),
                                                   baseColorFactor=[255, 255, 255, 255])
    quad.visual = trimesh.visual.TextureVisuals(uv=[[0, 0], [1, 0], [1, 1], [0, 1]], material=material)
    quad.export(tmp_path / "quad.glb")
    m = read_mesh(tmp_path / "quad.glb")
    np.testing.assert_allclose(m.vertices[2], [1, 0, 1], atol=1e-6)       # glTF +Y up -> +Z up
    g = sample_surface_gaussians(m, 2000)
    left = g.rgb[g.means[:, 0] < 0.4]
    right = g.rgb[g.means[:, 0] > 0.6]
    assert (left[:, 0] > 0.9).all() and (left[:, 1] < 0.1).all() and (right[:, 1] > 0.9).all()

    (tmp_path / "points.ply").write_text("ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\n"
                                         "property float z\nend_header\n0 0 0\n1 0 0\n0 1 0\n")
    with pytest.raises(MeshError, match="points.ply: the mesh has no triangles"):
        read_mesh(tmp_path / "points.ply")
    with pytest.raises(MeshError, match="non-finite"):
        SurfaceMesh(np.array([[0, 0, 0], [1, 0, np.nan], [0, 1, 0]]), np.array([[0, 1, 2]])).validate("x.obj")
    with pytest.raises(MeshError, match="surface area is 0"):
        SurfaceMesh(np.array([[0, 0, 0], [1, 0, 0], [2, 0, 0]]), np.array([[0, 1, 2]])).validate("line.obj")
    (tmp_path / "junk.obj").write_bytes(b"\x00\x01garbage")
    with pytest.raises(MeshError, match="junk.obj"):
        read_mesh(tmp_path / "junk.obj")


def test_extracted_mesh_is_closed_near_the_true_surface_and_coloured(sphere_splat):
    mesh = extract_mesh(sphere_splat, resolution=96, target_faces=3000)
    r = np.linalg.norm(mesh.vertices, axis=1)
    voxel = 2 * RADIUS * 1.1 / 95
    surface_error = np.abs(r - RADIUS)
    print(f"sphere r={RADIUS}: mean surface error {surface_error.mean():.4f} max {surface_error.max():.4f} "
          f"(voxel {voxel:.4f}), faces {len(mesh.faces)}")
    assert surface_error.mean() < 2 * voxel and surface_error.max() < 3 * voxel
    tm = trimesh.Trimesh(mesh.vertices, mesh.faces)
    assert tm.is_watertight and tm.volume > 0                             # one closed outward-facing surface
    assert len(mesh.faces) <= 3000
    top = mesh.colors[mesh.vertices[:, 2] > 0.1]
    assert (top[:, 0] > 0.7).all()


def test_mesh_deformation_follows_rigid_and_twisting_motion(sphere_splat):
    g = sphere_splat
    verts = extract_mesh(g, resolution=64, target_faces=1500).vertices
    angles = torch.tensor([0.0, 0.3, 0.8])

    def rot_z(a):
        c, s = torch.cos(a), torch.sin(a)
        return torch.stack([torch.stack([c, -s, torch.zeros(())]), torch.stack([s, c, torch.zeros(())]),
                            torch.tensor([0.0, 0.0, 1.0])])

    # rigid: every Gaussian turns about Z and shifts; the mesh must move exactly with them
    rs = torch.stack([rot_z(a) for a in angles])
    shift = torch.tensor([[0, 0, 0], [0.1, 0, 0], [0.2, 0.1, 0]], dtype=torch.float32)
    positions = torch.einsum("tij,nj->tni", rs, g.means) + shift[:, None]
    quats = torch.stack([quat_multiply(rotmat_to_quat(r)[None].expand(len(g), 4), g.quats) for r in rs])
    moved = deform_vertices(verts, AnimatedGaussians(g, positions, quats=quats))
    expected = torch.einsum("tij,vj->tvi", rs, torch.as_tensor(verts)) + shift[:, None]
    rigid_error = (moved - expected).norm(dim=-1)
    assert rigid_error.max() < 1e-4
    # twist: the turn grows with height; vertices follow to within the Gaussians' spacing
    twist = lambda p, k: torch.einsum("nij,nj->ni", torch.stack([rot_z(k * z) for z in p[:, 2]]), p)  # noqa: E731
    positions = torch.stack([twist(g.means, k) for k in (0.0, 1.0)])
    moved = deform_vertices(verts, AnimatedGaussians(g, positions))
    twist_error = (moved[1] - twist(torch.as_tensor(verts), 1.0)).norm(dim=-1)
    print(f"twist 1 rad/unit: mean vertex error {twist_error.mean():.4f}, max {twist_error.max():.4f}")
    assert twist_error.mean() < 0.01


def test_generate_with_trellis_canonical_and_mesh(tmp_path, small_weights, shot_files):
    root, _ = shot_files
    out = tmp_path / "t.gvf4d"
    r = subprocess.run([sys.executable, "-m", "gvf4d.cli", "generate", str(root / "footage"), "--out", str(out),
                        "--canonical", "trellis", "--weights", str(small_weights), "--frames", "3", "--engine", "gvf",
                        "--method", "multistep", "--steps", "2", "--azimuth-step", "45", "--seed", "5",
                        "--mesh", "--mesh-faces", "2000"], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr
    f = GVF4DFile(out)
    c = f.metadata["canonical"]
    assert c["source"] == "trellis" and c["seed"] == 5 and c["gaussians"] == 8 * c["voxels"] == f.num_gaussians
    assert c["facing"]["step_deg"] == 45 and c["facing"]["azimuth_deg"] % 45 == 0
    assert c["facing"]["scorer"] == "clip"                                          # <weights>/clip/ is used
    assert c["alignment"]["applied"] is False and c["alignment"]["scale"] > 0      # the render-time factor
    faces, verts = np.asarray(f.array("mesh.faces")), np.asarray(f.array("mesh.vertices"))
    assert 0 < len(faces) <= 2000 and np.asarray(f.array("frames.mesh_vertices")).shape == (3, *verts.shape)


def test_generate_with_mesh_canonical(tmp_path, shot_files):
    root, _ = shot_files
    box = trimesh.creation.box(extents=[0.6, 0.4, 0.8])
    box.visual.vertex_colors = np.tile([200, 120, 40, 255], (len(box.vertices), 1))
    box.export(tmp_path / "box.ply")
    out = tmp_path / "m.gvf4d"
    r = subprocess.run([sys.executable, "-m", "gvf4d.cli", "generate", str(root / "footage"), "--out", str(out),
                        "--canonical", "mesh", str(tmp_path / "box.ply"), "--mesh-samples", "3000", "--frames", "3",
                        "--fit-size", "32", "--fit-iterations", "1"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    f = GVF4DFile(out)
    assert f.num_gaussians == 3000 and f.metadata["canonical"]["source"] == "mesh"
    rgb = 0.28209479177387814 * np.asarray(f.array("canonical.sh_dc")) + 0.5
    np.testing.assert_allclose(rgb.mean(0), [200 / 255, 120 / 255, 40 / 255], atol=0.01)
    r = subprocess.run([sys.executable, "-m", "gvf4d.cli", "generate", str(root / "footage"), "--out", str(out),
                        "--canonical", "mesh"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "--canonical mesh needs a file" in r.stderr
