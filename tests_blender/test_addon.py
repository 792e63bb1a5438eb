"""The add-on in real Blender (bpy 5.0.1): register, import, keyframes, exports read back."""
import numpy as np
import pygltflib
import pytest

import bpy


def evaluated_points(obj, frame, without_instancing=True):
    scene = bpy.context.scene
    mod = obj.modifiers.get("GVF4D Splats")
    if mod is not None and without_instancing:
        mod.show_viewport = False
    scene.frame_set(int(frame // 1), subframe=frame % 1)
    ev = obj.evaluated_get(bpy.context.evaluated_depsgraph_get())
    me = ev.to_mesh()
    co = np.empty(len(me.vertices) * 3, np.float32)
    me.vertices.foreach_get("co", co)
    ev.to_mesh_clear()
    if mod is not None:
        mod.show_viewport = True
    return co.reshape(-1, 3)


def test_register_and_unregister(empty_scene):
    import gvf_blender
    gvf_blender.register()
    try:
        assert hasattr(bpy.types, "GVF4D_PT_panel")
        assert "import_result" in dir(bpy.ops.gvf4d) and "export_result" in dir(bpy.ops.gvf4d)
    finally:
        gvf_blender.unregister()
    assert not hasattr(bpy.types, "GVF4D_PT_panel")


def test_import_splats_positions_attributes_keyframes(empty_scene, fixture_dir):
    from gvf_blender import importer, splat_nodes
    exp = np.load(fixture_dir / "expected.npz")
    T, N = exp["positions"].shape[:2]
    obj = importer.import_splats(fixture_dir / "shot.gvf4d", frame_start=10)
    me = obj.data
    assert len(me.vertices) == N
    col = np.empty(N * 4, np.float32)
    me.attributes["color"].data.foreach_get("color", col)
    np.testing.assert_allclose(col.reshape(N, 4)[:, :3], exp["rgb"], atol=1e-5)
    op = np.empty(N, np.float32)
    me.attributes["opacity"].data.foreach_get("value", op)
    np.testing.assert_allclose(op, exp["opacity"], atol=1e-6)
    q = np.empty(N * 4, np.float32)
    me.attributes["rotation"].data.foreach_get("value", q)
    np.testing.assert_allclose(np.abs((q.reshape(N, 4) * exp["canonical_quats"]).sum(1)), 1.0, atol=1e-6)
    for t in range(T):   # every frame of the rotation track (float16 in the file, normalised on import)
        me.attributes[f"gvf_r_{t:04d}"].data.foreach_get("value", q)
        np.testing.assert_allclose(np.abs((q.reshape(N, 4) * exp["quats"][t]).sum(1)), 1.0, atol=2e-3)
    # every frame's positions are stored (gvf_p_0000..) and played by the animation modifier from frame 10
    for t in range(T):
        stored = np.empty(N * 3, np.float32)
        me.attributes[f"gvf_p_{t:04d}"].data.foreach_get("vector", stored)
        np.testing.assert_array_equal(stored.reshape(N, 3), exp["positions"][t])
        np.testing.assert_allclose(evaluated_points(obj, 10 + t), exp["positions"][t], atol=1e-6)
    # between frames the motion blends linearly; outside the range the ends hold
    np.testing.assert_allclose(evaluated_points(obj, 11.5), (exp["positions"][1] + exp["positions"][2]) / 2, atol=1e-5)
    np.testing.assert_allclose(evaluated_points(obj, 5), exp["positions"][0], atol=1e-6)
    np.testing.assert_allclose(evaluated_points(obj, 10 + T + 5), exp["positions"][-1], atol=1e-6)
    assert obj.data.shape_keys is None
    animation = obj.modifiers["GVF4D Animation"]
    assert animation.node_group.name == "GVF4D Animation"
    assert [splat_nodes.group_input(animation, n) for n in ("Start Frame", "Frames")] == [10, T]
    mod = obj.modifiers["GVF4D Splats"]
    assert mod.node_group.name == "GVF4D Splat" and "GVF4D Splat Material" in bpy.data.materials
    # the instanced splats evaluate to one quad per Gaussian
    bpy.context.scene.frame_set(10)
    dg = bpy.context.evaluated_depsgraph_get()
    instances = sum(1 for i in dg.object_instances if i.is_instance and i.parent and i.parent.original == obj)
    assert instances == N


def test_objects_of_an_older_add_on_keep_their_inputs_when_the_groups_are_rebuilt(empty_scene, fixture_dir):
    """A .blend saved by an earlier version holds its node groups at that version, its modifiers' inputs by socket
    identifier: the first import by this version rebuilds the groups in place, keeping the sockets (and adding a
    new one with its default), so the older objects still animate from their own start frame."""
    from gvf_blender import splat_nodes
    from gvf_blender.importer import import_splats
    exp = np.load(fixture_dir / "expected.npz")
    old = import_splats(fixture_dir / "shot.gvf4d", frame_start=10)
    group = old.modifiers["GVF4D Animation"].node_group
    group["gvf4d_version"] = splat_nodes.VERSION - 1          # as saved by the earlier add-on, without Frame Step
    group.interface.remove(next(i for i in group.interface.items_tree if i.item_type == "SOCKET"
                                and i.name == "Frame Step"))
    import_splats(fixture_dir / "shot.gvf4d", frame_start=1)
    assert group.get("gvf4d_version") == splat_nodes.VERSION
    assert [splat_nodes.group_input(old.modifiers["GVF4D Animation"], n)
            for n in ("Start Frame", "Frames", "Frame Step")] == [10, len(exp["positions"]), 1]
    np.testing.assert_allclose(evaluated_points(old, 12), exp["positions"][2], atol=1e-6)


def _with_stride(src, dest, stride):
    """A copy of a result whose footage metadata says it took every `stride`-th source frame."""
    import json
    import struct
    raw = src.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    meta = json.loads(header["__metadata__"]["gvf4d"])
    meta["footage"] = {**(meta.get("footage") or {}), "stride": stride}
    header["__metadata__"]["gvf4d"] = json.dumps(meta)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    dest.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n:])
    return dest


def test_each_result_frame_lands_on_its_source_frame(empty_scene, fixture_dir, tmp_path):
    """With stride 3, result frame t plays on scene frame start + 3t; the frames between blend."""
    from gvf_blender import exporters, importer
    exp = np.load(fixture_dir / "expected.npz")
    T = exp["positions"].shape[0]
    obj = importer.import_splats(_with_stride(fixture_dir / "shot.gvf4d", tmp_path / "s.gvf4d", 3), frame_start=10)
    for t in range(T):
        np.testing.assert_allclose(evaluated_points(obj, 10 + 3 * t), exp["positions"][t], atol=1e-6)
    np.testing.assert_allclose(evaluated_points(obj, 14), (2 * exp["positions"][1] + exp["positions"][2]) / 3,
                               atol=1e-5)
    assert exporters.frame_range(obj) == (10, 10 + 3 * (T - 1))
    paths = exporters.export_ply_sequence(obj, tmp_path / "ply" / "s.ply")
    assert len(paths) == T and paths[1].endswith("_0013.ply")


def test_import_operator_mesh_mode_and_errors(empty_scene, fixture_dir, tmp_path):
    import gvf_blender
    gvf_blender.register()
    try:
        exp = np.load(fixture_dir / "expected.npz")
        assert bpy.ops.gvf4d.import_result(filepath=str(fixture_dir / "shot.gvf4d"), mode="MESH", frame_start=1) == {"FINISHED"}
        obj = bpy.context.view_layer.objects.active
        assert len(obj.data.polygons) == len(exp["faces"])
        # vertex colours (display values in the file) held linear, as Blender's colour attributes are
        col = np.empty(len(obj.data.vertices) * 4, np.float32)
        obj.data.attributes["color"].data.foreach_get("color", col)
        rgb = exp["rgb"][:40]
        linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
        np.testing.assert_allclose(col.reshape(-1, 4)[:, :3], linear, atol=1e-5)
        np.testing.assert_allclose(evaluated_points(obj, 4), exp["mesh_frames"][3], atol=1e-5)
        bad = tmp_path / "bad.gvf4d"
        bad.write_bytes(b"\x01" * 40)
        # a readable report naming the file and the problem (bpy raises reports as RuntimeError when scripted)
        with pytest.raises(RuntimeError, match=r"bad.gvf4d: header length .* does not fit the file size 40"):
            bpy.ops.gvf4d.import_result(filepath=str(bad))
    finally:
        gvf_blender.unregister()


def _glb_accessor(doc, blob, i):
    """Float accessor values, dense or sparse (the exporter writes mostly-zero morph targets sparsely)."""
    acc = doc.accessors[i]
    n = {"SCALAR": 1, "VEC3": 3, "VEC4": 4}[acc.type]
    if acc.bufferView is None:
        out = np.zeros((acc.count, n), np.float32)
    else:
        view = doc.bufferViews[acc.bufferView]
        out = np.frombuffer(blob, np.float32, acc.count * n, view.byteOffset + (acc.byteOffset or 0)).reshape(acc.count, n).copy()
    if acc.sparse is not None:
        sp = acc.sparse
        iv, vv = doc.bufferViews[sp.indices.bufferView], doc.bufferViews[sp.values.bufferView]
        dtype = {5121: np.uint8, 5123: np.uint16, 5125: np.uint32}[sp.indices.componentType]
        idx = np.frombuffer(blob, dtype, sp.count, iv.byteOffset + (sp.indices.byteOffset or 0))
        out[idx] = np.frombuffer(blob, np.float32, sp.count * n, vv.byteOffset + (sp.values.byteOffset or 0)).reshape(-1, n)
    return out


def test_export_gltf_morph_targets_and_weights(empty_scene, fixture_dir, tmp_path):
    from gvf_blender import exporters, importer
    exp = np.load(fixture_dir / "expected.npz")
    T = exp["positions"].shape[0]
    obj = importer.import_splats(fixture_dir / "shot.gvf4d", frame_start=1)
    path = exporters.export_gltf(obj, tmp_path / "a.glb")
    doc = pygltflib.GLTF2().load(path)
    blob = doc.binary_blob()
    prim = doc.meshes[0].primitives[0]
    assert prim.mode == pygltflib.POINTS and len(prim.targets) == T
    base = _glb_accessor(doc, blob, prim.attributes.POSITION)
    to_yup = lambda p: np.stack([p[:, 0], p[:, 2], -p[:, 1]], 1)    # glTF is Y-up
    # the exporter may reorder points: compare as sorted sets of rows
    order = lambda a: a[np.lexsort(a.T)]
    for t in (0, 3):
        disp = _glb_accessor(doc, blob, prim.targets[t]["POSITION"])
        np.testing.assert_allclose(order(base + disp), order(to_yup(exp["positions"][t])), atol=1e-4)
    channels = [c for a in doc.animations for c in a.channels if c.target.path == "weights"]
    assert channels
    sampler = doc.animations[0].samplers[channels[0].sampler]
    weights = _glb_accessor(doc, blob, sampler.output).reshape(-1, T)
    assert weights.max() == pytest.approx(1.0) and np.allclose(weights.sum(1), 1.0, atol=1e-5)


def test_export_alembic_and_read_back(empty_scene, fixture_dir, tmp_path):
    from gvf_blender import exporters, importer
    exp = np.load(fixture_dir / "expected.npz")
    obj = importer.import_splats(fixture_dir / "shot.gvf4d", frame_start=1)
    path = exporters.export_alembic(obj, tmp_path / "a.abc")
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.wm.alembic_import(filepath=path)
    back = [o for o in bpy.context.scene.objects if o.type == "MESH"][0]
    for t in (0, 4):
        np.testing.assert_allclose(evaluated_points(back, 1 + t), exp["positions"][t], atol=1e-4)


class _Layout:
    """Records the panel's calls (Blender gives no UILayout outside a window)."""

    def __init__(self, log):
        self.log = log

    def __getattr__(self, name):
        def call(*args, **kwargs):
            self.log.append((name, args, kwargs.get("text")))
            return self
        return call


def test_panel_draws_settings_and_takes(empty_scene):
    import gvf_blender
    from gvf_blender import takes
    gvf_blender.register()
    try:
        scene = bpy.context.scene
        scene.gvf4d.footage = "/footage/clip.mp4"
        takes.add_take(scene, "/footage/clip.mp4", {"engine": "fit", "fit_iterations": 5, "seed": 0}, "job1")
        log = []
        panel = type("P", (), {"layout": _Layout(log)})()
        bpy.types.GVF4D_PT_panel.draw(panel, bpy.context)
        labels = [t for name, _, t in log if name == "label"]
        assert any(t and t.startswith("0: queued, 5 steps") for t in labels), labels
        assert ("operator", ("gvf4d.generate",), None) in [(n, a[:1], None) for n, a, _ in log if n == "operator"]
        scene.gvf4d.source = "CLIP"          # no clip loaded: the panel still draws
        bpy.types.GVF4D_PT_panel.draw(panel, bpy.context)
    finally:
        gvf_blender.unregister()


def test_panel_says_where_a_results_frames_are(empty_scene, fixture_dir, tmp_path):
    import shutil
    import gvf_blender
    from gvf_blender import frame_cache, importer
    gvf_blender.register()
    try:
        result = tmp_path / "take.gvf4d"
        shutil.copy2(fixture_dir / "shot.gvf4d", result)
        labels = {}
        for frame_data in ("EMBEDDED", "REFERENCED"):
            obj = importer.import_splats(result, frame_data=frame_data)
            bpy.context.view_layer.objects.active = obj
            log = []
            bpy.types.GVF4D_PT_panel.draw(type("P", (), {"layout": _Layout(log)})(), bpy.context)
            labels[frame_data] = [t for name, _, t in log if name == "label"]
        assert "frames embedded in the .blend" in labels["EMBEDDED"]
        assert "frames read from take.frames/ beside the result" in labels["REFERENCED"]
        shutil.rmtree(frame_cache.folder_for(result))            # the .blend copied elsewhere without its folder
        log = []
        bpy.types.GVF4D_PT_panel.draw(type("P", (), {"layout": _Layout(log)})(), bpy.context)
        assert f"frame folder missing: {frame_cache.folder_for(result)} (import the result again)" in \
            [t for name, _, t in log if name == "label"]
    finally:
        gvf_blender.unregister()


def test_import_operator_camera_scene_and_look_options(empty_scene, fixture_dir):
    """The import's options for scripts: the footage camera becomes the scene's, the scene takes the result's
    frames, fps and plate size, and the look settings are set; none of it without being asked."""
    import gvf_blender
    from gvf_blender import scene_setup
    gvf_blender.register()
    try:
        scene = bpy.context.scene
        path = str(fixture_dir / "fidelity.gvf4d")
        before = (scene.frame_start, scene.frame_end, scene.render.fps, scene.camera)
        assert bpy.ops.gvf4d.import_result(filepath=path, frame_start=5) == {"FINISHED"}
        assert (scene.frame_start, scene.frame_end, scene.render.fps, scene.camera) == before
        assert scene_setup.unmet_requirements(scene)
        assert bpy.ops.gvf4d.import_result(filepath=path, frame_start=5, footage_camera=True, match_scene=True,
                                           look_settings=True) == {"FINISHED"}
        obj = bpy.context.active_object
        assert scene.camera is not None and scene.camera.type == "CAMERA"
        assert (scene.frame_start, scene.frame_end) == (5, 5 + obj["gvf4d_frames"] - 1)
        assert scene.render.resolution_x == 160 and scene.render.resolution_y == 120
        assert not scene_setup.unmet_requirements(scene)
        assert bpy.ops.gvf4d.set_display(display="points") == {"FINISHED"}
        assert obj.modifiers["GVF4D Splats"].node_group.name == "GVF4D Points"
    finally:
        gvf_blender.unregister()


def test_a_new_take_hides_the_previous_one(empty_scene, fixture_dir):
    import gvf_blender
    from gvf_blender import jobs, takes
    gvf_blender.register()
    try:
        scene, footage = bpy.context.scene, str(fixture_dir / "footage")
        for job in ("job0", "job1"):
            takes.add_take(scene, footage, {"engine": "fit"}, job, result=str(fixture_dir / "shot.gvf4d"))
        key = takes.key_of(scene, footage)
        first, second = (jobs.import_take(scene, key, take) for take in takes.takes(scene, footage))
        assert first.hide_render and first.hide_viewport
        assert not second.hide_render and not second.hide_viewport
    finally:
        gvf_blender.unregister()


def test_result_operators_add_the_footage_camera_and_match_the_scene(empty_scene, fixture_dir):
    import gvf_blender
    from gvf_blender import importer
    gvf_blender.register()
    try:
        scene = bpy.context.scene
        obj = importer.import_splats(fixture_dir / "fidelity.gvf4d", frame_start=3)
        bpy.context.view_layer.objects.active = obj
        assert scene.camera is None
        assert bpy.ops.gvf4d.add_footage_camera() == {"FINISHED"} and scene.camera is not None
        assert bpy.ops.gvf4d.match_scene() == {"FINISHED"}
        assert (scene.frame_start, scene.frame_end) == (3, 3 + obj["gvf4d_frames"] - 1)
    finally:
        gvf_blender.unregister()
