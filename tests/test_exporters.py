import av
import numpy as np
import pygltflib
import pytest
import torch
from plyfile import PlyData

from gvf4d.exporters import read_splat_ply, write_ply_frames, write_points_glb, write_preview_video
from gvf4d.exporters.ply import SplatPlyError


def test_ply_frames_standard_layout(tmp_path, small_shot):
    anim = small_shot.animated
    paths = write_ply_frames(tmp_path / "ply", anim)
    assert len(paths) == anim.num_frames
    v = PlyData.read(str(paths[2]))["vertex"].data
    names = list(v.dtype.names)
    assert names[:9] == ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    assert names[9:54] == [f"f_rest_{i}" for i in range(45)]
    assert names[54:] == ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    g = anim.frame(2)
    np.testing.assert_allclose(np.stack([v["x"], v["y"], v["z"]], -1), g.means.numpy(), rtol=0, atol=0)
    np.testing.assert_allclose(1 / (1 + np.exp(-v["opacity"])), g.opacities.numpy(), rtol=1e-5)
    np.testing.assert_allclose(np.exp(np.stack([v["scale_0"], v["scale_1"], v["scale_2"]], -1)), g.scales.numpy(), rtol=1e-5)
    np.testing.assert_allclose(np.stack([v[f"rot_{i}"] for i in range(4)], -1), g.quats.numpy(), atol=1e-6)
    back = read_splat_ply(paths[2])
    torch.testing.assert_close(back.means, g.means)
    torch.testing.assert_close(back.scales, g.scales, rtol=1e-5, atol=1e-7)
    assert back.sh_rest.shape == (len(g), 15, 3) and back.sh_rest.abs().max() == 0


def test_ply_keeps_higher_sh_in_3dgs_order(tmp_path, small_shot):
    g = small_shot.animated.canonical
    rest = torch.randn(len(g), 3, 3)   # degree 1: K = 3
    g1 = type(g)(g.means, g.scales, g.quats, g.opacities, g.sh_dc, rest)
    from gvf4d.exporters import write_splat_ply
    p = write_splat_ply(tmp_path / "sh.ply", g1, sh_degree=1)
    v = PlyData.read(str(p))["vertex"].data
    # channel-major: f_rest_0..2 are the red coefficients of bands 1..3
    np.testing.assert_allclose(np.stack([v["f_rest_0"], v["f_rest_1"], v["f_rest_2"]], -1), rest[:, :, 0].numpy())
    torch.testing.assert_close(read_splat_ply(p).sh_rest, rest)


def test_malformed_ply_is_named(tmp_path):
    p = tmp_path / "mesh.ply"
    p.write_text("ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nproperty float y\nproperty float z\nend_header\n0 0 0\n")
    with pytest.raises(SplatPlyError, match=r"mesh.ply: is not a 3DGS splat PLY: missing properties \['f_dc_0'"):
        read_splat_ply(p)
    (tmp_path / "junk.ply").write_bytes(b"garbage")
    with pytest.raises(SplatPlyError, match="junk.ply: not a readable PLY"):
        read_splat_ply(tmp_path / "junk.ply")


def _accessor(doc, blob, index):
    acc = doc.accessors[index]
    view = doc.bufferViews[acc.bufferView]
    comps = {"SCALAR": 1, "VEC3": 3, "VEC4": 4}[acc.type]
    data = np.frombuffer(blob, np.float32, acc.count * comps, view.byteOffset + (acc.byteOffset or 0))
    return data.reshape(acc.count, comps)


def test_glb_morph_targets_and_weights_animation(tmp_path, small_shot):
    anim = small_shot.animated
    path = write_points_glb(tmp_path / "a.glb", anim, fps=12.0)
    doc = pygltflib.GLTF2().load(str(path))
    blob = doc.binary_blob()
    prim = doc.meshes[0].primitives[0]
    assert prim.mode == pygltflib.POINTS and len(prim.targets) == anim.num_frames
    base = _accessor(doc, blob, prim.attributes.POSITION)
    for t in (0, 2, anim.num_frames - 1):
        disp = _accessor(doc, blob, prim.targets[t]["POSITION"])
        np.testing.assert_allclose(base + disp, anim.positions[t].numpy(), atol=1e-6)
        acc = doc.accessors[prim.targets[t]["POSITION"]]
        np.testing.assert_allclose(acc.min, disp.min(0), rtol=1e-6)   # bounds required by the spec
    colours = _accessor(doc, blob, prim.attributes.COLOR_0)
    np.testing.assert_allclose(colours[:, :3], anim.canonical.rgb.clamp(0, 1).numpy(), atol=1e-6)
    ch = doc.animations[0].channels[0]
    assert ch.target.path == "weights" and ch.target.node == 0
    sampler = doc.animations[0].samplers[ch.sampler]
    times = _accessor(doc, blob, sampler.input)[:, 0]
    np.testing.assert_allclose(times, np.arange(anim.num_frames) / 12.0, atol=1e-7)
    weights = _accessor(doc, blob, sampler.output).reshape(anim.num_frames, anim.num_frames)
    np.testing.assert_array_equal(weights, np.eye(anim.num_frames))


def test_preview_video_front_then_orbit(tmp_path, small_shot):
    anim = small_shot.animated
    path = write_preview_video(tmp_path / "p.mp4", anim, fps=12.0, size=64, orbit_frames=8)
    with av.open(str(path)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        rate = c.streams.video[0].average_rate
    assert len(frames) == anim.num_frames + 8 and frames[0].shape == (64, 64, 3) and float(rate) == 12.0
    f0 = frames[0].astype(int)
    assert (f0[:4, :4] > 240).all()                       # white background in the corner
    assert (f0[24:40, 24:40].sum(-1) < 600).mean() > 0.5  # the coloured object in the middle
    assert np.abs(frames[anim.num_frames + 4].astype(int) - f0).mean() > 3   # the orbit sees another side
