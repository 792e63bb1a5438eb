"""Exports read back in real Blender (bpy 5.0.1): the 3DGS PLY sequence (also through plyfile in the backend's
environment), the KHR_gaussian_splatting glTF, the morph-target glTF of a deformed mesh, Alembic through
Blender's importer, and the export operator."""
import json
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

import bpy
from mathutils import Matrix, Vector   # importable once bpy is
from test_addon import _with_stride
from test_splat_fidelity import srgb_to_linear

ROOT = Path(__file__).resolve().parents[1]
KHR = "KHR_gaussian_splatting"
PLY_NAMES = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", *(f"f_rest_{i}" for i in range(45)),
             "opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
Y_UP = np.array([[1.0, 0, 0], [0, 0, 1], [0, -1, 0]])   # glTF (x, y, z) = Blender (x, z, -y)


def read_ply(path):
    """-> (property names, (N, P) float32 values) of a binary little-endian PLY of float properties."""
    data = Path(path).read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    lines = data[:end].decode("ascii").splitlines()
    assert lines[:2] == ["ply", "format binary_little_endian 1.0"] and lines[-1] == "end_header"
    count = int(lines[2].split()[2])
    names = [line.split()[2] for line in lines[3:-1]]
    assert all(line.split()[:2] == ["property", "float"] for line in lines[3:-1])
    assert len(data) - end == count * len(names) * 4
    return names, np.frombuffer(data, "<f4", offset=end).reshape(count, len(names))


def read_glb(path):
    """-> (glTF JSON, binary chunk), checking the container: header, chunk types, lengths, 4-byte alignment."""
    data = Path(path).read_bytes()
    magic, version, length = struct.unpack_from("<III", data)
    assert (magic, version, length) == (0x46546C67, 2, len(data))
    json_len, json_type = struct.unpack_from("<II", data, 12)
    assert json_type == 0x4E4F534A and json_len % 4 == 0
    doc = json.loads(data[20:20 + json_len])
    rest = data[20 + json_len:]
    bin_len, bin_type = struct.unpack_from("<II", rest)
    assert bin_type == 0x004E4942 and bin_len % 4 == 0 and len(rest) == 8 + bin_len
    assert doc["buffers"] == [{"byteLength": bin_len}]
    return doc, rest[8:]


def accessor(doc, blob, index):
    """An accessor's values, (count, width), checked to lie inside its buffer view and the buffer."""
    acc = doc["accessors"][index]
    width = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}[acc["type"]]
    dtype = {5126: "<f4", 5125: "<u4"}[acc["componentType"]]
    if "bufferView" not in acc:
        return np.zeros((acc["count"], width), np.float32)
    view = doc["bufferViews"][acc["bufferView"]]
    offset = view["byteOffset"] + acc.get("byteOffset", 0)
    assert offset % 4 == 0 and acc["count"] * width * 4 <= view["byteLength"]
    assert view["byteOffset"] + view["byteLength"] <= len(blob)
    return np.frombuffer(blob, dtype, acc["count"] * width, offset).reshape(acc["count"], width)


def rotation_matrices(q):
    """(N, 4) w-x-y-z quaternions -> (N, 3, 3)."""
    w, x, y, z = (q / np.linalg.norm(q, axis=1, keepdims=True)).T
    return np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
                     2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
                     2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1).reshape(-1, 3, 3)


def sh_colour(sh_dc, sh_rest, d):
    """Colour (N, 3) towards unit directions d (N, 3) from SH degrees 0-3 ((N, 3), (N, 15, 3)): the formula of
    KHR_gaussian_splatting's Lighting section (3DGS's), written out here independently of the add-on."""
    x, y, z = d.T
    xx, yy, zz = x * x, y * y, z * z
    basis = np.stack([
        -0.4886025119029199 * y, 0.4886025119029199 * z, -0.4886025119029199 * x,
        1.092548430592079 * x * y, -1.092548430592079 * y * z, 0.31539156525252 * (2 * zz - xx - yy),
        -1.092548430592079 * x * z, 0.5462742152960395 * (xx - yy),
        -0.5900435899266435 * y * (3 * xx - yy), 2.890611442640554 * x * y * z,
        -0.4570457994644657 * y * (4 * zz - xx - yy), 0.3731763325901154 * z * (2 * zz - 3 * xx - 3 * yy),
        -0.4570457994644657 * x * (4 * zz - xx - yy), 1.445305721320277 * z * (xx - yy),
        -0.5900435899266435 * x * (xx - 3 * yy)], -1)
    return 0.2820947917738781 * sh_dc + np.einsum("nk,nkc->nc", basis, sh_rest) + 0.5


def unit_directions(n, seed):
    d = np.random.default_rng(seed).normal(size=(n, 3))
    return d / np.linalg.norm(d, axis=1, keepdims=True)


def test_ply_sequence_holds_every_frame(empty_scene, fixture_dir, tmp_path):
    from gvf_blender import exporters, importer
    from gvf_blender.result_file import GVF4DFile
    exp = np.load(fixture_dir / "expected.npz")
    f = GVF4DFile(fixture_dir / "shot.gvf4d")
    T, N = f.num_frames, f.num_gaussians
    obj = importer.import_splats(fixture_dir / "shot.gvf4d", frame_start=10)
    assert obj.matrix_world == Matrix.Identity(4)
    paths = exporters.export_ply_sequence(obj, tmp_path / "take.ply")
    assert [Path(p).name for p in paths] == [f"take_{10 + t:04d}.ply" for t in range(T)]   # scene frames
    track = lambda name, t: f.frame(f"frames.{name}", t) if f.has(f"frames.{name}") else f.array(f"canonical.{name}")
    for t, path in enumerate(paths):
        names, v = read_ply(path)
        assert names == PLY_NAMES and len(v) == N
        col = lambda *ps: v[:, [names.index(p) for p in ps]]
        np.testing.assert_array_equal(col("x", "y", "z"), exp["positions"][t])
        np.testing.assert_array_equal(col("nx", "ny", "nz"), 0)
        np.testing.assert_array_equal(col("f_dc_0", "f_dc_1", "f_dc_2"), track("sh_dc", t))
        np.testing.assert_array_equal(col(*(f"f_rest_{i}" for i in range(45))), 0)      # the file has no bands
        np.testing.assert_allclose(1 / (1 + np.exp(-col("opacity")[:, 0])), track("opacity", t), atol=1e-6)
        np.testing.assert_allclose(np.exp(col("scale_0", "scale_1", "scale_2")), track("scale", t), rtol=1e-6)
        q = track("rotation", t)
        np.testing.assert_allclose(col("rot_0", "rot_1", "rot_2", "rot_3"),
                                   q / np.linalg.norm(q, axis=1, keepdims=True), atol=1e-6)
        np.testing.assert_allclose(np.abs((col("rot_0", "rot_1", "rot_2", "rot_3") * exp["quats"][t]).sum(1)), 1,
                                   atol=2e-3)   # the backend's values before they were stored as float16
    # an independent reader: plyfile in the backend's environment
    script = ("import json, sys, numpy as np; from plyfile import PlyData; v = PlyData.read(sys.argv[1])['vertex'];"
              "print(json.dumps([len(v), list(v.data.dtype.names), np.asarray(v['x'], float).tolist()]))")
    out = subprocess.run([str(ROOT / ".venv" / "bin" / "python"), "-c", script, paths[-1]], capture_output=True,
                         text=True, timeout=120, check=True)
    count, names, x = json.loads(out.stdout)
    assert count == N and names == PLY_NAMES
    np.testing.assert_array_equal(np.float32(x), exp["positions"][-1][:, 0])


def test_ply_sequence_follows_the_object_into_the_scene(empty_scene, fixture_dir, tmp_path):
    """fidelity.gvf4d sits where the artist's asset was (turned, scaled, offset), turned further by hand: every
    Gaussian follows, its SH bands too (the colour towards R·d is the file's colour towards d)."""
    from gvf_blender import exporters, importer
    from gvf_blender.result_file import GVF4DFile
    f = GVF4DFile(fixture_dir / "fidelity.gvf4d")
    obj = importer.import_splats(fixture_dir / "fidelity.gvf4d", frame_start=1)
    obj.matrix_world = Matrix.Rotation(0.7, 4, Vector((1, 2, 3)).normalized()) @ obj.matrix_world
    m = np.array(obj.matrix_world)
    scale = np.cbrt(np.linalg.det(m[:3, :3]))
    turn = m[:3, :3] / scale
    assert scale != pytest.approx(1) and not np.allclose(turn, np.eye(3))
    t = 3
    names, v = read_ply(exporters.export_ply_sequence(obj, tmp_path / "a.ply")[t])
    col = lambda *ps: v[:, [names.index(p) for p in ps]].astype(np.float64)
    np.testing.assert_allclose(col("x", "y", "z"), f.frame("frames.position", t) @ m[:3, :3].T + m[:3, 3], atol=1e-5)
    np.testing.assert_allclose(np.exp(col("scale_0", "scale_1", "scale_2")), scale * f.frame("frames.scale", t),
                               rtol=1e-5)
    np.testing.assert_allclose(rotation_matrices(col("rot_0", "rot_1", "rot_2", "rot_3")),
                               turn @ rotation_matrices(f.frame("frames.rotation", t).astype(np.float64)), atol=1e-5)
    np.testing.assert_allclose(1 / (1 + np.exp(-col("opacity")[:, 0])), f.frame("frames.opacity", t), atol=1e-6)
    sh_dc = f.frame("frames.sh_dc", t)
    rest = col(*(f"f_rest_{i}" for i in range(45))).reshape(-1, 3, 15).transpose(0, 2, 1)
    d = unit_directions(len(v), 0)
    np.testing.assert_allclose(sh_colour(sh_dc, rest, d @ turn.T),
                               sh_colour(sh_dc, np.asarray(f.array("canonical.sh_rest"), np.float64), d), atol=1e-5)
    obj.scale = (1, 2, 1)
    bpy.context.view_layer.update()
    with pytest.raises(ValueError, match="same positive scale on all three axes"):
        exporters.export_ply_sequence(obj, tmp_path / "b.ply")


def test_gltf_khr_gaussian_splatting(empty_scene, fixture_dir, tmp_path):
    """The canonical splat as the extension defines it: a POINTS primitive with the extension object, its
    attributes (rotation x-y-z-w, linear scale and opacity, SH degrees 0-3), in glTF's Y-up space."""
    from gvf_blender import exporters, importer
    from gvf_blender.result_file import GVF4DFile
    f = GVF4DFile(fixture_dir / "fidelity.gvf4d")
    N = f.num_gaussians
    obj = importer.import_splats(fixture_dir / "fidelity.gvf4d", frame_start=1, placement="ORIGIN")
    m = np.array(obj.matrix_world)      # the recorded alignment: scale 0.9 and an offset
    scale = np.cbrt(np.linalg.det(m[:3, :3]))
    assert scale == pytest.approx(0.9)
    doc, blob = read_glb(exporters.export_gltf_splat(obj, tmp_path / "a.glb"))
    assert doc["asset"]["version"] == "2.0" and doc["extensionsUsed"] == [KHR] and "extensionsRequired" not in doc
    assert doc["scenes"][doc["scene"]]["nodes"] == [0] and doc["nodes"][0]["mesh"] == 0
    assert "matrix" not in doc["nodes"][0] and "animations" not in doc       # placement baked in; no animation
    (prim,) = doc["meshes"][0]["primitives"]
    assert prim["mode"] == 0 and prim["extensions"][KHR]["kernel"] == "ellipse"
    assert prim["extensions"][KHR]["colorSpace"] == "srgb_rec709_display"
    sh_names = [f"{KHR}:SH_DEGREE_{l}_COEF_{n}" for l in (1, 2, 3) for n in range(2 * l + 1)]
    expected = {"POSITION": "VEC3", "COLOR_0": "VEC4", f"{KHR}:ROTATION": "VEC4", f"{KHR}:SCALE": "VEC3",
                f"{KHR}:OPACITY": "SCALAR", f"{KHR}:SH_DEGREE_0_COEF_0": "VEC3", **dict.fromkeys(sh_names, "VEC3")}
    assert set(prim["attributes"]) == set(expected)
    values = {}
    for name, kind in expected.items():
        acc = doc["accessors"][prim["attributes"][name]]
        assert (acc["type"], acc["componentType"], acc["count"]) == (kind, 5126, N), name
        assert doc["bufferViews"][acc["bufferView"]]["target"] == 34962
        values[name] = accessor(doc, blob, prim["attributes"][name]).astype(np.float64)
    position = values["POSITION"]
    acc = doc["accessors"][prim["attributes"]["POSITION"]]
    np.testing.assert_array_equal(acc["min"], position.min(0).astype(np.float32))
    np.testing.assert_array_equal(acc["max"], position.max(0).astype(np.float32))
    to_gltf = Y_UP @ m[:3, :3]
    np.testing.assert_allclose(position, f.array("canonical.position") @ to_gltf.T + Y_UP @ m[:3, 3], atol=1e-5)
    xyzw = values[f"{KHR}:ROTATION"]
    np.testing.assert_allclose(np.linalg.norm(xyzw, axis=1), 1, atol=1e-6)
    turn = Y_UP @ m[:3, :3] / scale
    np.testing.assert_allclose(rotation_matrices(xyzw[:, [3, 0, 1, 2]]),
                               turn @ rotation_matrices(np.asarray(f.array("canonical.rotation"))), atol=1e-5)
    np.testing.assert_allclose(values[f"{KHR}:SCALE"], scale * f.array("canonical.scale"), rtol=1e-6)
    np.testing.assert_allclose(values[f"{KHR}:OPACITY"][:, 0], f.array("canonical.opacity"), atol=1e-7)
    sh_dc = values[f"{KHR}:SH_DEGREE_0_COEF_0"]
    np.testing.assert_array_equal(sh_dc, f.array("canonical.sh_dc"))
    rest = np.stack([values[name] for name in sh_names], 1)                  # (N, 15, 3), m = -l..l per degree
    d = unit_directions(N, 1)                                                # in the file's space
    np.testing.assert_allclose(sh_colour(sh_dc, rest, d @ turn.T),
                               sh_colour(sh_dc, np.asarray(f.array("canonical.sh_rest"), np.float64), d), atol=1e-5)
    # the fallback colour: the diffuse colour clamped, decoded from sRGB to linear; opacity in alpha
    srgb = np.clip(0.5 + 0.282095 * sh_dc, 0, 1)
    linear = np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)
    np.testing.assert_allclose(values["COLOR_0"], np.concatenate([linear, values[f"{KHR}:OPACITY"]], 1), atol=1e-5)


def test_gltf_morph_targets_of_the_deformed_mesh(empty_scene, fixture_dir, tmp_path):
    from gvf_blender import exporters, importer
    exp = np.load(fixture_dir / "expected.npz")
    T = len(exp["mesh_frames"])
    obj = importer.import_mesh(fixture_dir / "shot.gvf4d", frame_start=1)
    doc, blob = read_glb(exporters.export_gltf(obj, tmp_path / "mesh.glb"))
    (prim,) = doc["meshes"][0]["primitives"]
    assert prim["mode"] == 4 and len(prim["targets"]) == T
    np.testing.assert_array_equal(accessor(doc, blob, prim["indices"]).reshape(-1, 3), exp["faces"])
    base = accessor(doc, blob, prim["attributes"]["POSITION"])
    for t in range(T):
        target = doc["accessors"][prim["targets"][t]["POSITION"]]
        assert "min" in target and "max" in target            # glTF requires them on morph-target positions
        np.testing.assert_allclose(base + accessor(doc, blob, prim["targets"][t]["POSITION"]),
                                   exp["mesh_frames"][t] @ Y_UP.T, atol=1e-6)
    sampler = doc["animations"][0]["samplers"][0]
    times = accessor(doc, blob, sampler["input"])[:, 0]
    np.testing.assert_allclose(times, np.arange(T) / 24.0, rtol=1e-6)
    np.testing.assert_array_equal(accessor(doc, blob, sampler["output"]).reshape(T, T), np.eye(T))


def alembic_round_trip(obj, path):
    """Exports obj to Alembic, opens an empty scene and imports the file: -> the imported mesh object."""
    from gvf_blender import exporters
    exporters.export_alembic(obj, path)
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.wm.alembic_import(filepath=str(path))
    (back,) = [o for o in bpy.context.scene.objects if o.type == "MESH"]
    return back


def evaluated(obj, frame):
    bpy.context.scene.frame_set(frame)
    return obj.evaluated_get(bpy.context.evaluated_depsgraph_get()).data


def point_values(mesh, name, field, width):
    values = np.empty(len(mesh.attributes[name].data) * width, np.float32)
    mesh.attributes[name].data.foreach_get(field, values)
    return values.reshape(-1, width)


@pytest.mark.parametrize("stride, start, frame_data", [(1, 1, "EMBEDDED"), (2, 3, "EMBEDDED"), (2, 3, "REFERENCED")])
def test_alembic_splat_positions_and_velocities(empty_scene, fixture_dir, tmp_path, stride, start, frame_data):
    """Every scene frame of the take: result frame t on scene frame start + t·stride, the frames between blended
    as the import plays them; velocities in metres per second of scene time, from the embedded frames or the
    frame folder."""
    from gvf_blender import exporters, importer
    exp = np.load(fixture_dir / "expected.npz")
    T = len(exp["positions"])
    path = fixture_dir / "shot.gvf4d" if stride == 1 else _with_stride(fixture_dir / "shot.gvf4d",
                                                                     tmp_path / "s.gvf4d", stride)
    obj = importer.import_splats(path, frame_start=start, frame_data=frame_data)
    modifiers, groups = [m.name for m in obj.modifiers], set(bpy.data.node_groups.keys())
    exporters.export_alembic(obj, tmp_path / "a.abc")
    # the object is left as it was: its modifiers, the splat display on, no export node groups
    assert [m.name for m in obj.modifiers] == modifiers and set(bpy.data.node_groups.keys()) == groups
    assert obj.modifiers["GVF4D Splats"].show_viewport and obj.modifiers["GVF4D Splats"].show_render
    back = alembic_round_trip(obj, tmp_path / "b.abc")
    fps = bpy.context.scene.render.fps / bpy.context.scene.render.fps_base
    p = exp["positions"]
    end = start + stride * (T - 1)
    for frame in range(start, end + 1):
        t, w = divmod(frame - start, stride)
        t0, w = (t, w / stride) if t < T - 1 else (T - 2, 1.0)          # the last frame: the step into it
        mesh = evaluated(back, frame)
        np.testing.assert_allclose(point_values(mesh, "position", "vector", 3), (1 - w) * p[t0] + w * p[t0 + 1],
                                   atol=1e-6)
        np.testing.assert_allclose(point_values(mesh, "velocity", "vector", 3), (p[t0 + 1] - p[t0]) * fps / stride,
                                   atol=1e-4)
        if bpy.app.version[:2] == (5, 0):     # what Blender 5.0's exporter drops from points, as the UI says
            assert not {"color", "opacity", "scale", "rotation"} & set(mesh.attributes.keys())
    # before and after the take the cache holds its first and last frames
    np.testing.assert_allclose(point_values(evaluated(back, start - 1), "position", "vector", 3), p[0], atol=1e-6)
    np.testing.assert_allclose(point_values(evaluated(back, end + 1), "position", "vector", 3), p[-1], atol=1e-6)


def test_alembic_deformed_mesh_keeps_vertex_colours(empty_scene, fixture_dir, tmp_path):
    from gvf_blender import importer
    from gvf_blender.result_file import GVF4DFile
    exp = np.load(fixture_dir / "expected.npz")
    colours = np.asarray(GVF4DFile(fixture_dir / "shot.gvf4d").array("mesh.colors"))
    obj = importer.import_mesh(fixture_dir / "shot.gvf4d", frame_start=1)
    back = alembic_round_trip(obj, tmp_path / "m.abc")
    mesh = evaluated(back, 3)
    np.testing.assert_allclose(point_values(mesh, "position", "vector", 3), exp["mesh_frames"][2], atol=1e-6)
    corner_colour = point_values(mesh, "color", "color", 4)
    assert mesh.attributes["color"].domain == "CORNER" and mesh.attributes["color"].data_type == "BYTE_COLOR"
    corner_vertex = np.empty(len(mesh.loops), np.int32)
    mesh.loops.foreach_get("vertex_index", corner_vertex)
    # the import's linear colours (the file's are display values), as 8-bit colours
    np.testing.assert_allclose(corner_colour[:, :3], srgb_to_linear(colours[corner_vertex]), atol=0.01)


class _Layout:
    """Records the dialog's calls (Blender gives no UILayout outside a window)."""

    def __init__(self, log):
        self.log = log

    def __getattr__(self, name):
        def call(*args, **kwargs):
            self.log.append((name, kwargs.get("text")))
            return self
        return call


def test_export_operator_formats_and_errors(empty_scene, fixture_dir, tmp_path):
    import gvf_blender
    from gvf_blender import exporters, importer
    from gvf_blender.operators.import_export import GVF4D_OT_export
    gvf_blender.register()
    try:
        obj = importer.import_splats(fixture_dir / "shot.gvf4d", frame_start=1)
        bpy.context.view_layer.objects.active = obj
        T = obj["gvf4d_frames"]
        for key, fmt in exporters.FORMATS.items():
            stem = tmp_path / key.lower() / "take"
            assert bpy.ops.gvf4d.export_result(filepath=str(stem) + ".anything", format=key) == {"FINISHED"}
            written = sorted(p.name for p in stem.parent.iterdir())
            if key == "PLY":
                assert written == [f"take.anything_{t + 1:04d}.ply" for t in range(T)]
            else:
                assert written == ["take.anything" + fmt.extension]
            log = []
            GVF4D_OT_export.draw(type("Dialog", (), {"layout": _Layout(log), "format": key})(), bpy.context)
            text = " ".join(t for name, t in log if name == "label")
            assert text.startswith("Keeps: ") and " Drops: " in text and fmt.keeps.split()[0] in text
        obj["gvf4d_path"] = str(tmp_path / "moved.gvf4d")
        with pytest.raises(RuntimeError, match=r"moved.gvf4d: cannot be read"):
            bpy.ops.gvf4d.export_result(filepath=str(tmp_path / "x.ply"), format="PLY")
    finally:
        gvf_blender.unregister()
