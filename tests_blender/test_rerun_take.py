"""Iterating on a take in real Blender: the imported splat edited in edit mode (points deleted, moved, rescaled,
recoloured) animates with its edits, goes to the backend as a 3DGS PLY of exactly the edited Gaussians in the
result's space, and a rerun against a real backend makes a new take whose canonical is those Gaussians."""
from pathlib import Path

import numpy as np
import pytest

import bpy
import bmesh  # noqa: I001  (bpy makes Blender's bundled modules importable)
from mathutils import Vector
from test_backend_flow import addon, backend, follow  # noqa: F401  (fixtures: a real backend, the registered add-on)

SH_C0 = 0.28209479177387814
START = 7
MOVE = np.array([0.05, -0.08, 0.03], np.float32)


def evaluated_positions(obj, frame, subframe=0.0):
    """The animation modifier's output positions (the display modifier off)."""
    mod = obj.modifiers["GVF4D Splats"]
    mod.show_viewport = False
    bpy.context.scene.frame_set(frame, subframe=subframe)
    ev = obj.evaluated_get(bpy.context.evaluated_depsgraph_get())
    me = ev.to_mesh()
    co = np.empty(len(me.vertices) * 3, np.float32)
    me.vertices.foreach_get("co", co)
    ev.to_mesh_clear()
    mod.show_viewport = True
    return co.reshape(-1, 3)


def edit_in_edit_mode(obj, every: int, moved: int) -> list[int]:
    """Deletes every `every`-th point and moves point `moved` by MOVE, in edit mode through bmesh.
    Returns the original indices of the points kept, in order."""
    bpy.context.view_layer.objects.active = obj
    bpy.ops.object.mode_set(mode="EDIT")
    bm = bmesh.from_edit_mesh(obj.data)
    bm.verts.ensure_lookup_table()
    bm.verts[moved].co += Vector(MOVE.tolist())
    doomed = [v for v in bm.verts if v.index % every == 0 and v.index != moved]
    bmesh.ops.delete(bm, geom=doomed, context="VERTS")
    bmesh.update_edit_mesh(obj.data)
    bpy.ops.object.mode_set(mode="OBJECT")
    return [i for i in range(len(doomed) + len(obj.data.vertices)) if i % every or i == moved]


def read_ply(path) -> dict[str, np.ndarray]:
    """The vertex properties of a binary little-endian PLY of float properties."""
    header, body = Path(path).read_bytes().split(b"end_header\n", 1)
    lines = header.decode("ascii").splitlines()
    assert lines[:2] == ["ply", "format binary_little_endian 1.0"]
    count = next(int(line.split()[2]) for line in lines if line.startswith("element vertex"))
    names = [line.split()[2] for line in lines if line.startswith("property")]
    assert all(line.split()[1] == "float" for line in lines if line.startswith("property"))
    columns = np.frombuffer(body, "<f4").reshape(count, len(names))
    return {name: columns[:, i] for i, name in enumerate(names)}


@pytest.fixture()
def imported(empty_scene, fixture_dir):
    """fidelity.gvf4d (every track moves, degree-3 SH, placed away from the origin) and its file."""
    from gvf_blender import importer
    from gvf_blender.result_file import GVF4DFile
    path = fixture_dir / "fidelity.gvf4d"
    return importer.import_splats(path, frame_start=START), GVF4DFile(path)


def test_points_moved_in_edit_mode_stay_moved_in_every_frame(imported):
    from gvf_blender import rerun
    obj, f = imported
    co = np.empty(len(obj.data.vertices) * 3, np.float32)
    obj.data.vertices.foreach_get("co", co)
    np.testing.assert_array_equal(co.reshape(-1, 3), f.array("canonical.position"))   # the canonical is edited
    assert not rerun.is_edited(obj)
    kept = edit_in_edit_mode(obj, every=4, moved=1)
    assert rerun.is_edited(obj) and len(obj.data.vertices) == len(kept) < f.num_gaussians
    moved = kept.index(1)
    for t in (0, 3):
        expected = f.frame("frames.position", t)[kept]
        expected[moved] += MOVE
        np.testing.assert_allclose(evaluated_positions(obj, START + t), expected, atol=1e-5)
    halfway = (f.frame("frames.position", 1) + f.frame("frames.position", 2))[kept] / 2
    halfway[moved] += MOVE
    np.testing.assert_allclose(evaluated_positions(obj, START + 1, 0.5), halfway, atol=1e-5)


def test_the_rerun_ply_holds_exactly_the_edited_gaussians_in_result_space(imported, tmp_path):
    from gvf_blender import rerun
    obj, f = imported
    assert not np.allclose(np.array(obj.matrix_world), np.eye(4))        # placed: the PLY must not bake it
    kept = edit_in_edit_mode(obj, every=3, moved=2)
    moved = kept.index(2)
    scale, color = obj.data.attributes["scale"], obj.data.attributes["color"]
    scale.data[0].vector = [v * 2 for v in scale.data[0].vector]          # rescaled and recoloured Gaussians
    color.data[5].color = (0.9, 0.2, 0.1, 1.0)
    assert rerun.is_edited(obj)
    ply = read_ply(rerun.write_edited_canonical(obj, tmp_path / "edited.ply"))
    assert len(ply["x"]) == len(kept)
    position = f.array("canonical.position")[kept]
    position[moved] += MOVE
    np.testing.assert_array_equal(np.stack([ply["x"], ply["y"], ply["z"]], 1), position)
    scales = f.array("canonical.scale")[kept]
    scales[0] *= 2
    np.testing.assert_allclose(np.exp(np.stack([ply[f"scale_{i}"] for i in range(3)], 1)), scales, rtol=1e-6)
    rgb = 0.5 + SH_C0 * f.array("canonical.sh_dc")[kept]
    rgb[5] = (0.9, 0.2, 0.1)
    np.testing.assert_allclose(0.5 + SH_C0 * np.stack([ply[f"f_dc_{i}"] for i in range(3)], 1), rgb, atol=1e-6)
    opacity = 1 / (1 + np.exp(-ply["opacity"].astype(np.float64)))
    np.testing.assert_allclose(opacity, f.array("canonical.opacity")[kept], atol=1e-6)
    q = f.array("canonical.rotation")[kept]
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    np.testing.assert_allclose(np.abs((np.stack([ply[f"rot_{i}"] for i in range(4)], 1) * q).sum(1)), 1.0, atol=1e-6)
    sh_rest = np.asarray(f.array("canonical.sh_rest"), np.float32)[kept]               # (N, 15, 3)
    rest = np.stack([ply[f"f_rest_{i}"] for i in range(45)], 1).reshape(-1, 3, 15)    # channel-major
    np.testing.assert_array_equal(rest.transpose(0, 2, 1), sh_rest)


def test_rerun_on_the_edited_splat_against_a_real_backend(backend, addon, fixture_dir):  # noqa: F811
    from gvf_blender import paths, rerun, takes
    from gvf_blender.result_file import GVF4DFile
    s = bpy.context.scene.gvf4d
    s.footage, s.canonical = str(fixture_dir / "footage"), str(fixture_dir / "canonical.ply")
    s.frames, s.fit_iterations, s.frame_start = 3, 1, START
    assert bpy.ops.gvf4d.check_backend() == {"FINISHED"}
    assert bpy.ops.gvf4d.generate() == {"FINISHED"}
    follow()
    shot = str(fixture_dir / "footage")
    first = next(o for o in bpy.context.scene.objects if o.get("gvf4d_take") == 0)
    kept = edit_in_edit_mode(first, every=4, moved=1)
    edited = rerun.edited_splat(first)
    assert bpy.ops.gvf4d.rerun_take(index=0) == {"FINISHED"}        # the edited splat: the object was edited
    follow()
    history = takes.takes(bpy.context.scene, shot)
    assert [t["state"] for t in history] == ["done", "done"], history
    assert history[1]["settings"]["canonical_exact"] is True
    assert history[1]["reused_stages"] == ["ingest"]                  # the new splat file redoes the rest
    old, new = (GVF4DFile(paths.to_absolute(t["result"])) for t in history)
    assert new.num_gaussians == len(kept) == len(edited)               # the backend read the edited Gaussians
    np.testing.assert_array_equal(new.array("canonical.position"), edited.position)
    np.testing.assert_allclose(new.array("canonical.scale"), edited.scale, rtol=1e-6)
    np.testing.assert_allclose(new.array("canonical.opacity"), edited.opacity, atol=1e-6)
    np.testing.assert_allclose(new.array("canonical.sh_dc"), edited.sh_dc, atol=1e-6)
    space = lambda f: (f.metadata["canonical"]["facing"]["azimuth_deg"],                      # noqa: E731
                       *(f.metadata["canonical"]["alignment"][k] for k in ("scale", "offset", "azimuth_deg")))
    assert space(new) == space(old)                                   # the take's facing and alignment, given
    assert new.metadata["coordinates"]["normalisation"] == old.metadata["coordinates"]["normalisation"]
    second = next(o for o in bpy.context.scene.objects if o.get("gvf4d_take") == 1)
    np.testing.assert_allclose(np.array(second.matrix_world), np.array(first.matrix_world), atol=1e-6)
    assert first.hide_viewport and not second.hide_viewport
    assert not rerun.is_edited(second)
