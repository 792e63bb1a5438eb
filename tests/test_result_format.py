"""The .gvf4d format: the writer (schema version 2) and the two readers (the backend's and the add-on's), which read
versions 1 and 2 and give the same verdict, message for message, on the same bytes."""
import json
import os
import struct
from dataclasses import replace
from fractions import Fraction

import numpy as np
import pytest
import torch

from gvf4d.representations import AnimatedGaussians
from gvf4d.result import TENSOR_SPECS, ResultFile, ResultFileError, read_result, write_result
from gvf_blender.result_file import GVF4DFile, GVF4DFileError

READERS = ((GVF4DFile, GVF4DFileError), (ResultFile, ResultFileError))
_DTYPE_NAMES = {np.float32: "F32", np.float16: "F16", np.int32: "I32", np.float64: "F64"}


def split_file(data: bytes) -> tuple[dict, dict, bytes]:
    """-> (header without __metadata__, the gvf4d metadata, the data section)."""
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    meta = json.loads(header.pop("__metadata__")["gvf4d"])
    return header, meta, data[8 + n:]


def join_file(header: dict, meta, data: bytes) -> bytes:
    """The container around a header, metadata (a dict, or JSON text as is) and a data section; nothing checked."""
    text = meta if isinstance(meta, str) else json.dumps(meta)
    raw = json.dumps({"__metadata__": {"gvf4d": text}, **header}).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def raw_file(arrays: dict[str, np.ndarray], meta: dict) -> bytes:
    """A file laid out from arrays without the writer: tensors back to back in the given order."""
    header, offset = {}, 0
    for name, a in arrays.items():
        header[name] = {"dtype": _DTYPE_NAMES[a.dtype.type], "shape": list(a.shape),
                        "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
    return join_file(header, meta, b"".join(np.ascontiguousarray(a).tobytes() for a in arrays.values()))


def read_everything(reader, error, path):
    """("rejected", problem) or ("accepted", metadata, {name or (track, t): array, or the problem reading it})."""
    try:
        f = reader(path)
    except error as e:
        assert e.path == str(path) and str(e) == f"{path}: {e.problem}"
        return ("rejected", e.problem)
    values = {}
    for name in TENSOR_SPECS:
        if not f.has(name):
            continue
        if name.startswith("frames."):
            for t in range(f.num_frames):
                try:
                    values[name, t] = f.frame(name, t)
                except error as e:
                    values[name, t] = e.problem
        else:
            try:
                values[name] = np.asarray(f.array(name))
            except error as e:
                values[name] = e.problem
    return ("accepted", f.metadata, values)


def same_verdict(path):
    """Both readers' verdict on a file, asserted equal (same problem text, or the same metadata and arrays)."""
    addon, backend = (read_everything(reader, error, path) for reader, error in READERS)
    assert addon[:2] == backend[:2]
    if addon[0] == "accepted":
        assert addon[2].keys() == backend[2].keys()
        for key, a in addon[2].items():
            b = backend[2][key]
            if isinstance(a, str) or isinstance(b, str):
                assert a == b, key
            else:
                assert a.dtype == b.dtype and a.shape == b.shape, key
                np.testing.assert_array_equal(a, b, err_msg=str(key))
    return addon


def rejected(path) -> str:
    verdict = same_verdict(path)
    assert verdict[0] == "rejected", verdict[:2]
    return verdict[1]


def _write(path, animated, **kw):
    meta = {"fps": 12.0, "seed": 3, **kw.pop("meta", {})}
    return write_result(path, animated, meta, **kw)


def make_meshed_shot():
    """A small shot with every kind of tensor: tracks, sh_rest and a mesh riding on the first 10 Gaussians."""
    from gvf4d.synthetic import make_synthetic_shot
    a = make_synthetic_shot(num_frames=3, gaussians_per_part=6, seed=4).animated
    n = len(a.canonical)
    canonical = replace(a.canonical, sh_rest=torch.linspace(-0.1, 0.1, n * 9).reshape(n, 3, 3))
    animated = AnimatedGaussians(canonical, a.positions, a.scales, a.quats, a.opacities, a.sh_dc)
    mesh = {"vertices": a.canonical.means[:10], "faces": torch.tensor([[0, i, i + 1] for i in range(1, 9)]),
            "colors": a.canonical.rgb[:10].clamp(0, 1), "frames": a.positions[:, :10]}
    return animated, mesh


@pytest.fixture(scope="module")
def meshed_shot():
    return make_meshed_shot()


@pytest.fixture(scope="module")
def base(meshed_shot, tmp_path_factory):
    """(arrays, metadata) of a valid schema 2 file with every tensor, for rebuilding with one thing wrong."""
    path = write_result(tmp_path_factory.mktemp("base") / "base.gvf4d", *meshed_shot[:1], {"fps": 24.0},
                        mesh=meshed_shot[1])
    f = ResultFile(path)
    return {k: np.array(f.array(k)) for k in sorted(f.names)}, f.metadata


# ---- version 2 as written, version 1 as it was -------------------------------------------------------------------

def test_roundtrip_backend_and_addon_readers_agree(tmp_path, small_shot):
    path = _write(tmp_path / "r.gvf4d", small_shot.animated)
    anim, meta = read_result(path)
    ref = small_shot.animated
    assert meta["schema_version"] == 2 and meta["frame_count"] == ref.num_frames and meta["fps"] == 12.0
    assert meta["coordinates"]["up"] == "+Z" and meta["values"] == "activated"
    assert "frames.position" in ResultFile(path).names                      # small: float32 absolute positions
    torch.testing.assert_close(anim.positions, ref.positions, rtol=0, atol=0)
    torch.testing.assert_close(anim.canonical.quats, ref.canonical.quats)
    torch.testing.assert_close(anim.scales, ref.scales, rtol=1e-3, atol=1e-6)  # float16 track
    assert anim.opacities is None and anim.sh_dc is None                   # not varied, not stored

    f = GVF4DFile(path)
    assert (f.num_frames, f.num_gaussians) == (ref.num_frames, len(ref.canonical))
    assert f.metadata == meta
    for t in (0, 3, ref.num_frames - 1):
        np.testing.assert_array_equal(f.frame("frames.position", t), ref.positions[t].numpy())
        assert f.frame("frames.position", t).flags.writeable   # the importer edits frames in place
        np.testing.assert_allclose(f.frame("frames.rotation", t), ref.quats[t].numpy(), atol=1e-3)
    np.testing.assert_array_equal(np.asarray(f.array("canonical.sh_dc")), ref.canonical.sh_dc.numpy())
    assert not f.has("frames.opacity")
    assert same_verdict(path)[0] == "accepted"


def test_position_deltas_read_as_absolute_float32_positions(tmp_path, small_shot):
    ref = small_shot.animated
    path = _write(tmp_path / "d.gvf4d", ref, position_storage="delta")
    header, meta, _ = split_file(path.read_bytes())
    assert "frames.position" not in header and header["frames.position_delta"]["dtype"] == "F16"
    assert meta["schema_version"] == 2
    assert same_verdict(path)[0] == "accepted"
    f, g = GVF4DFile(path), ResultFile(path)
    assert f.has("frames.position") and g.has("frames.position") and "frames.position_delta" in g.names
    delta = (ref.positions - ref.canonical.means).numpy()
    stored = np.asarray(f.array("frames.position_delta"))
    for t in range(ref.num_frames):
        got = f.frame("frames.position", t)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, ref.canonical.means.numpy() + stored[t].astype(np.float32))
        # float16 rounding: at most half an ulp of the delta, |delta| * 2^-11 (plus float32 rounding)
        assert (np.abs(got - ref.positions[t].numpy()) <= np.abs(delta[t]) * 2.0 ** -11 + 1e-7).all()
    torch.testing.assert_close(read_result(path)[0].positions, torch.from_numpy(np.asarray(g.array("frames.position"))))


@pytest.mark.parametrize("limit_offset, stored", [(-1, "frames.position_delta"), (0, "frames.position")])
def test_auto_storage_switches_to_deltas_past_the_size_limit(tmp_path, small_shot, monkeypatch, limit_offset, stored):
    import gvf4d.result.file as mod
    nbytes = small_shot.animated.positions.numel() * 4
    monkeypatch.setattr(mod, "POSITION_DELTA_ABOVE_BYTES", nbytes + limit_offset)
    names = ResultFile(_write(tmp_path / "a.gvf4d", small_shot.animated)).names
    assert names & {"frames.position", "frames.position_delta"} == {stored}


def test_default_limit_is_64_mib_of_float32_positions():
    import gvf4d.result.file as mod
    assert mod.POSITION_DELTA_ABOVE_BYTES == 64 * 2 ** 20


def test_version_1_files_still_read(tmp_path, small_shot):
    """The raw version 1 layout (absolute float32 positions, schema_version 1), laid out without the writer."""
    ref = small_shot.animated
    c = ref.canonical
    arrays = {"canonical.position": c.means.numpy(), "canonical.scale": c.scales.numpy(),
              "canonical.rotation": c.quats.numpy(), "canonical.opacity": c.opacities.numpy(),
              "canonical.sh_dc": c.sh_dc.numpy(), "frames.position": ref.positions.numpy(),
              "frames.rotation": ref.quats.numpy().astype(np.float16)}
    meta = {"schema_version": 1, "fps": 24, "frame_count": ref.num_frames, "num_gaussians": len(c),
            "values": "activated", "coordinates": {"up": "+Z"},
            "footage": {"frame_indices": list(range(ref.num_frames))}}
    path = tmp_path / "v1.gvf4d"
    path.write_bytes(raw_file(arrays, meta))
    verdict = same_verdict(path)
    assert verdict[0] == "accepted" and verdict[1]["schema_version"] == 1
    np.testing.assert_array_equal(verdict[2]["frames.position", 2], ref.positions[2].numpy())
    # deltas are version 2 only
    arrays["frames.position_delta"] = arrays.pop("frames.position").astype(np.float16)
    path.write_bytes(raw_file(arrays, meta))
    assert rejected(path) == "unknown tensor 'frames.position_delta' (schema version 1)"


def test_frame_read_touches_only_that_frame(tmp_path, small_shot):
    f = GVF4DFile(_write(tmp_path / "r.gvf4d", small_shot.animated))
    arr = f.array("frames.position")
    assert isinstance(arr, np.memmap)
    frame = arr[2]   # one contiguous slice of the mapped file
    assert frame.flags["C_CONTIGUOUS"] and frame.base is not None
    with pytest.raises(IndexError):
        f.frame("frames.position", small_shot.animated.num_frames)
    with pytest.raises(KeyError):
        f.frame("canonical.position", 0)


# ---- the writer ---------------------------------------------------------------------------------------------------

def test_write_is_atomic_and_keeps_the_old_file_on_failure(tmp_path, small_shot, monkeypatch):
    path = _write(tmp_path / "r.gvf4d", small_shot.animated)
    before = path.read_bytes()
    import gvf4d.result.file as mod

    def boom(path, *a, **k):
        path.write_bytes(b"half a file")      # a partial write, then the failure
        raise RuntimeError("disk full")
    monkeypatch.setattr(mod, "write_safetensors", boom)
    with pytest.raises(RuntimeError):
        _write(tmp_path / "r.gvf4d", small_shot.animated, meta={"seed": 4})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["r.gvf4d"]  # no temp file left behind


def test_a_killed_writers_temp_files_are_removed_by_the_next_write(tmp_path, small_shot):
    """A run killed while writing leaves `.r.gvf4d.<host>-<pid>.*.tmp` beside the output: the next write of the
    same output on this host removes it; a temp file of a writer that still runs, or of another host, is left."""
    import subprocess
    import sys
    dead = subprocess.Popen([sys.executable, "-c", ""])
    dead.wait()
    from gvf4d.atomic import _HOST
    stale = tmp_path / f".r.gvf4d.{_HOST}-{dead.pid}.k3j2.tmp"
    live = tmp_path / f".r.gvf4d.{_HOST}-{os.getppid()}.x9y8.tmp"
    other_output = tmp_path / f".other.gvf4d.{_HOST}-{dead.pid}.a1b2.tmp"
    other_host = tmp_path / f".r.gvf4d.0badf00d-{dead.pid}.c3d4.tmp"       # a machine sharing the folder
    for p in (stale, live, other_output, other_host):
        p.write_bytes(b"half a file")
    _write(tmp_path / "r.gvf4d", small_shot.animated)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other_output.name, other_host.name,
                                                                  "r.gvf4d"])


def _with(animated, **tracks):
    return AnimatedGaussians(**{"canonical": animated.canonical, "positions": animated.positions,
                                "scales": animated.scales, "quats": animated.quats, **tracks})


def _poisoned(track, value, t):
    out = track.clone()
    out[t, 1, 0] = value
    return out


@pytest.mark.parametrize("change, storage, problem", [
    (lambda a: _with(a, positions=_poisoned(a.positions, float("nan"), 2)), "absolute",
     "tensor frames.position holds NaN or infinite values in frame 2"),
    (lambda a: _with(a, positions=_poisoned(a.positions, float("inf"), 1)), "delta",
     "tensor frames.position_delta holds NaN or infinite values in frame 1"),
    (lambda a: _with(a, positions=_poisoned(a.positions, 1e5, 0)), "delta",       # beyond float16 as a delta
     "tensor frames.position_delta holds NaN or infinite values in frame 0"),
    (lambda a: _with(a, scales=_poisoned(a.scales, 7e4, 4)), "auto",              # beyond float16
     "tensor frames.scale holds NaN or infinite values in frame 4"),
    (lambda a: AnimatedGaussians(replace(a.canonical, opacities=a.canonical.opacities.clone().fill_(float("nan"))),
                                 a.positions), "auto",
     "tensor canonical.opacity holds NaN or infinite values"),
])
def test_writer_refuses_non_finite_values(tmp_path, small_shot, change, storage, problem):
    with pytest.raises(ResultFileError) as e:
        _write(tmp_path / "r.gvf4d", change(small_shot.animated), position_storage=storage)
    assert e.value.problem == problem
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("meta, problem", [
    ({"fps": 0}, "metadata fps 0 is not a finite number > 0"),
    ({"fps": -1.0}, "metadata fps -1.0 is not a finite number > 0"),
    ({"fps": "x"}, "metadata fps 'x' is not a finite number > 0"),
    ({"fps": float("inf")}, "metadata holds a number JSON cannot store (Out of range float values"),
    ({"fps": float("nan")}, "metadata holds a number JSON cannot store"),
    ({"timings": {"fit": float("nan")}}, "metadata holds a number JSON cannot store"),
    ({"fps": 24.0, "fps_rational": [24000, 1001]}, "metadata fps_rational [24000, 1001] disagrees with fps 24.0"),
    ({"fps_rational": [24000, 0]}, "metadata fps_rational [24000, 0] is not [numerator, denominator]"),
    ({"footage": {"frame_indices": [0, 1]}}, "metadata footage frame_indices [0, 1] is not a list of 6 source"),
])
def test_writer_refuses_bad_fps_and_metadata(tmp_path, small_shot, meta, problem):
    with pytest.raises(ResultFileError) as e:
        write_result(tmp_path / "r.gvf4d", small_shot.animated, meta)
    assert e.value.problem.startswith(problem)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("rational", [[24000, 1001], (30000, 1001), Fraction(24000, 1001)])
def test_writer_records_fractional_rates(tmp_path, small_shot, rational):
    path = write_result(tmp_path / "r.gvf4d", small_shot.animated, {"fps_rational": rational})
    meta = same_verdict(path)[1]
    num, den = (rational.numerator, rational.denominator) if isinstance(rational, Fraction) else rational
    assert meta["fps_rational"] == [num, den] and meta["fps"] == num / den


def test_writer_rejects_an_unknown_storage(tmp_path, small_shot):
    with pytest.raises(ValueError, match="position_storage"):
        _write(tmp_path / "r.gvf4d", small_shot.animated, position_storage="int8")


# ---- validity: both readers, one verdict ---------------------------------------------------------------------------

def _arrays(base, change):
    arrays, meta = dict(base[0]), json.loads(json.dumps(base[1]))
    change(arrays, meta)
    return raw_file(arrays, meta)


def _as(name, dtype):
    return lambda a, m: a.__setitem__(name, a[name].astype(dtype))


def _drop(*names):
    return lambda a, m: [a.pop(n) for n in names]


@pytest.mark.parametrize("change, problem", [
    (_as("frames.position", np.int32), "tensor frames.position has dtype 'I32'; allowed: F32"),          # issue 23
    (_as("frames.position", np.float16), "tensor frames.position has dtype 'F16'; allowed: F32"),
    (_as("canonical.scale", np.float64), "tensor canonical.scale has dtype 'F64'; allowed: F32"),
    (_as("canonical.rotation", np.float16), "tensor canonical.rotation has dtype 'F16'; allowed: F32"),
    (_as("mesh.faces", np.float32), "tensor mesh.faces has dtype 'F32'; allowed: I32"),
    (_as("frames.rotation", np.int32), "tensor frames.rotation has dtype 'I32'; allowed: F16, F32"),
    (lambda a, m: a.__setitem__("frames.position_delta", a["frames.position"].astype(np.float32)),
     "tensor frames.position_delta has dtype 'F32'; allowed: F16"),
    (lambda a, m: a.__setitem__("canonical.opacity", a["canonical.opacity"][:-1]),
     "tensor canonical.opacity has N=35, but other tensors have N=36"),
    (lambda a, m: a.__setitem__("frames.scale", a["frames.scale"][:2]),
     "tensor frames.scale has T=2, but other tensors have T=3"),
    (lambda a, m: a.__setitem__("canonical.rotation", a["canonical.rotation"][:, :3]),
     "tensor canonical.rotation has shape [36, 3], expected (N, 4)"),
    (lambda a, m: a.__setitem__("canonical.opacity", a["canonical.opacity"][:, None]),
     "tensor canonical.opacity has shape [36, 1], expected (N)"),
    (lambda a, m: a.__setitem__("frames.position_delta", a["frames.position"].astype(np.float16)),
     "holds frames.position and frames.position_delta; a file stores exactly one of frames.position or "
     "frames.position_delta"),
    (_drop("frames.position"), "holds no positions; a file stores exactly one of frames.position or frames"),
    (_drop("canonical.sh_dc"), "missing required tensors ['canonical.sh_dc']"),
    (_drop("mesh.colors"), "incomplete mesh: has ['mesh.vertices', 'mesh.faces', 'frames.mesh_vertices']"),
    (lambda a, m: a.__setitem__("frames.velocity", a["frames.position"]),
     "unknown tensor 'frames.velocity' (schema version 2)"),
    (lambda a, m: a.update({k: v[:0] if k.startswith("canonical.") else v[:, :0]
                            for k, v in a.items() if k.startswith(("canonical.", "frames.")) and "mesh" not in k}),
     "empty result: 0 Gaussians, 3 frames"),
])
def test_invalid_tensors_get_one_error_from_both_readers(tmp_path, base, change, problem):
    path = tmp_path / "bad.gvf4d"
    path.write_bytes(_arrays(base, change))
    assert rejected(path).startswith(problem)


def _meta(**changes):
    return lambda a, m: [m.pop(k) if v is _MISSING else m.__setitem__(k, v) for k, v in changes.items()]


def _footage(**changes):
    return lambda a, m: m.__setitem__("footage", {"frame_indices": [0, 1, 2], "fps": 24.0, "stride": 1, **changes})


_MISSING = object()


@pytest.mark.parametrize("change, problem", [
    (_meta(schema_version=3), "schema version 3; readable versions are 1 and 2"),
    (_meta(schema_version="2"), "schema version '2'; readable versions are 1 and 2"),
    (_meta(schema_version=2.0), "schema version 2.0; readable versions are 1 and 2"),
    (_meta(schema_version=True), "schema version True"),
    (_meta(schema_version=_MISSING), "schema version None"),
    (_meta(fps="x"), "metadata fps 'x' is not a finite number > 0"),                                    # issue 23
    (_meta(fps=0), "metadata fps 0 is not a finite number > 0"),
    (_meta(fps=-24.0), "metadata fps -24.0 is not a finite number > 0"),
    (_meta(fps=True), "metadata fps True is not a finite number > 0"),
    (_meta(fps=10 ** 400), "metadata fps 1000000000000000000000000000000000000..."),
    (_meta(fps=_MISSING), "metadata fps None is not a finite number > 0"),
    (_meta(fps_rational=[24000, 0]), "metadata fps_rational [24000, 0] is not [numerator, denominator] of positive"),
    (_meta(fps_rational=[24000.0, 1001]), "metadata fps_rational [24000.0, 1001] is not [numerator"),
    (_meta(fps_rational="24000/1001"), "metadata fps_rational '24000/1001' is not [numerator"),
    (_meta(fps_rational=[2 ** 31, 1]), "metadata fps_rational [2147483648, 1] is not [numerator"),
    (_meta(fps_rational=[24000, 1001]), "metadata fps_rational [24000, 1001] disagrees with fps 24.0"),
    (_meta(frame_count=4), "metadata frame_count 4 but the tensors hold 3"),
    (_meta(frame_count="3"), "metadata frame_count '3' but the tensors hold 3"),
    (_meta(num_gaussians=_MISSING), "metadata num_gaussians None but the tensors hold 36"),
    (_meta(values="raw"), "metadata values 'raw', expected 'activated'"),
    (_meta(coordinates=_MISSING), "metadata coordinates None is not an object"),
    (_meta(footage=3), "metadata footage 3 is not an object"),                                           # issue 23
    (_meta(engine=["fit"]), "metadata engine ['fit'] is not an object"),
    (_meta(timings={"fit": "slow"}), "metadata timings 'fit' 'slow' is not a finite number"),
    (_meta(seed="3"), "metadata seed '3' is not an integer"),
    (_footage(frame_indices=[0, 1]), "metadata footage frame_indices [0, 1] is not a list of 3 source frame indices"),
    (_footage(frame_indices=[0, -1, 2]), "metadata footage frame_indices [0, -1, 2] is not a list of 3"),
    (_footage(frame_indices=[0, 1.5, 2]), "metadata footage frame_indices [0, 1.5, 2] is not a list of 3"),
    (_footage(fps=-1), "metadata footage fps -1 is not a finite number > 0"),
    (_footage(stride=0), "metadata footage stride 0 is not an integer >= 1"),
    (_footage(frame_start="0"), "metadata footage frame_start '0' is not an integer >= 0"),
    (_footage(path=3), "metadata footage path 3 is not a string"),
    (_footage(source_size=[0, 720]), "metadata footage source_size [0, 720] is not [width, height]"),
])
def test_invalid_metadata_gets_one_error_from_both_readers(tmp_path, base, change, problem):
    path = tmp_path / "bad.gvf4d"
    path.write_bytes(_arrays(base, change))
    assert rejected(path).startswith(problem)


@pytest.mark.parametrize("change", [
    _meta(fps=24), _meta(fps=24000 / 1001, fps_rational=[24000, 1001]), _meta(fps=23.976, fps_rational=[24000, 1001]),
    _meta(sampler=None, seed=None, notes={"any": ["thing", 1.5]}), _footage(), _footage(frame_indices=[10, 12, 14]),
])
def test_valid_metadata_variants_are_accepted_by_both(tmp_path, base, change):
    path = tmp_path / "ok.gvf4d"
    path.write_bytes(_arrays(base, change))
    assert same_verdict(path)[0] == "accepted"


def _nested(depth):
    return "[" * depth + "]" * depth


def _header_edit(edit):
    """An edit of the (header, metadata JSON text, data section) of the base file."""
    def change(good: bytes) -> bytes:
        header, meta, data = split_file(good)
        return join_file(*edit(header, json.dumps(meta), data))
    return change


def _set_entry(name, key, value):
    return _header_edit(lambda h, m, d: (h | {name: h[name] | {key: value}}, m, d))


@pytest.mark.parametrize("change, problem", [
    (lambda b: b[: len(b) // 2], "tensor "),
    (lambda b: b[:5], "too short to be a .gvf4d file (5 bytes)"),
    (lambda b: struct.pack("<Q", 10 ** 12) + b[8:], "header length 1000000000000 does not fit the file size"),
    (lambda b: b[:8] + b"[" + b[9:], "header is not valid JSON"),
    (lambda b: b[:8] + b"\xff" + b[9:], "header is not UTF-8"),
    (lambda b: b + b"\0" * 8, "data section is"),
    (lambda b: struct.pack("<Q", 2) + b"[]", "header is not a JSON object"),
    (_header_edit(lambda h, m, d: (h, m.replace('"fps": 24.0', '"fps": Infinity'), d)),                 # issue 23
     "metadata is not valid JSON (Infinity is not a JSON number)"),
    (_header_edit(lambda h, m, d: (h, m.replace('"fps": 24.0', '"fps": NaN'), d)), "metadata is not valid JSON (NaN"),
    (_header_edit(lambda h, m, d: (h, m.replace('"fps": 24.0', '"fps": 1e400'), d)),
     "metadata fps inf is not a finite number > 0"),
    (_header_edit(lambda h, m, d: (h, m.replace('"fps": 24.0', '"fps": 24.0, "fps": 25.0'), d)),
     "metadata is not valid JSON (duplicate keys in an object)"),
    (_header_edit(lambda h, m, d: (h, m.replace('"fps": 24.0', f'"fps": 24.0, "x": {_nested(32)}'), d)),
     "metadata nests 33 levels deep, over the limit of 32"),
    (_header_edit(lambda h, m, d: (h, m.replace('"fps": 24.0', f'"fps": 24.0, "x": {_nested(31)}'), d)), None),
    (_header_edit(lambda h, m, d: (h, "[1]", d)), "metadata is not a JSON object"),
    (_set_entry("canonical.opacity", "x", json.loads(_nested(31))), "header nests 33 levels deep, over the limit"),
    (_set_entry("canonical.opacity", "x", json.loads(_nested(30))), None),   # 32 levels: the limit
    (_set_entry("canonical.opacity", "data_offsets", [0]), "tensor canonical.opacity has malformed data_offsets [0]"),
    (_set_entry("canonical.opacity", "data_offsets", [True, 4]), "tensor canonical.opacity has malformed data_offsets"),
    (_set_entry("canonical.opacity", "shape", [48.0]), "tensor canonical.opacity has shape [48.0], expected (N)"),
    (_set_entry("canonical.opacity", "shape", [-48]), "tensor canonical.opacity has shape [-48], expected (N)"),
    (_set_entry("canonical.opacity", "dtype", None), "tensor canonical.opacity has dtype None; allowed: F32"),
    (_header_edit(lambda h, m, d: (h | {"canonical.opacity": [1, 2]}, m, d)),
     "tensor canonical.opacity has a malformed entry [1, 2]"),
    (_header_edit(lambda h, m, d: (h | {"canonical.scale": h["canonical.scale"] | {
        "data_offsets": h["canonical.position"]["data_offsets"]}}, m, d)), "tensor buffers overlap or leave gaps"),
])
def test_invalid_containers_get_one_error_from_both_readers(tmp_path, base, change, problem):
    path = tmp_path / "bad.gvf4d"
    path.write_bytes(change(_arrays(base, lambda a, m: None)))
    if problem is None:
        assert same_verdict(path)[0] == "accepted"
    else:
        assert rejected(path).startswith(problem)


def _header_text_edit(old: str, new: str):
    """A textual edit of the header (for JSON that json.dumps cannot make)."""
    def change(good: bytes) -> bytes:
        n = int.from_bytes(good[:8], "little")
        raw = good[8:8 + n].decode().replace(old, new, 1).encode()
        return struct.pack("<Q", len(raw)) + raw + good[8 + n:]
    return change


def test_deeply_nested_header_is_an_error_not_a_recursion(tmp_path, base):
    """Issue 23: a deeply nested header raised RecursionError in the add-on's reader."""
    path = tmp_path / "deep.gvf4d"
    deep = _header_text_edit('"canonical.opacity": {', f'"canonical.opacity": {{"x": {_nested(200_000)}, ')
    path.write_bytes(deep(_arrays(base, lambda a, m: None)))
    assert rejected(path) == "header nests 200002 levels deep, over the limit of 32"
    meta_deep = tmp_path / "deep_meta.gvf4d"
    meta_deep.write_bytes(_header_edit(lambda h, m, d: (h, _nested(100_000), d))(_arrays(base, lambda a, m: None)))
    assert rejected(meta_deep) == "metadata nests 100000 levels deep, over the limit of 32"


def test_header_over_64_mib_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / "huge.gvf4d"
    n = 64 * 2 ** 20 + 8
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", n))
        f.truncate(8 + n + 16)   # sparse: nothing is written
    assert rejected(path) == f"header length {n} is over the limit of {64 * 2 ** 20} bytes"


def test_unreadable_paths_are_errors(tmp_path):
    assert rejected(tmp_path / "missing.gvf4d").startswith("cannot be read (No such file")
    assert rejected(tmp_path) == "is not a regular file"


# ---- values: checked per frame as read, never by a scan at open ----------------------------------------------------

def _poison_bytes(path, name, index, value, dtype):
    """Overwrite element `index` (flat) of tensor `name` in place."""
    header, _, _ = split_file(path.read_bytes())
    n = int.from_bytes(path.read_bytes()[:8], "little")
    begin = header[name]["data_offsets"][0]
    with open(path, "r+b") as f:
        f.seek(8 + n + begin + index * np.dtype(dtype).itemsize)
        f.write(np.array([value], dtype).tobytes())


@pytest.mark.parametrize("storage, name, dtype", [("absolute", "frames.position", np.float32),
                                                  ("delta", "frames.position_delta", np.float16)])
def test_non_finite_positions_are_an_error_naming_the_frame(tmp_path, small_shot, storage, name, dtype):
    """Issue 23: the add-on's reader returned NaN/Inf positions. Opening never scans the values; reading the frame
    that holds them is one error naming the file, the tensor and the frame."""
    path = _write(tmp_path / "nan.gvf4d", small_shot.animated, position_storage=storage)
    n = len(small_shot.animated.canonical)
    _poison_bytes(path, name, 2 * n * 3 + 5, np.nan, dtype)
    _poison_bytes(path, name, 4 * n * 3 + 1, np.inf, dtype)
    verdict = same_verdict(path)
    assert verdict[0] == "accepted"
    assert verdict[2]["frames.position", 2] == f"tensor {name} holds NaN or infinite values in frame 2"
    assert verdict[2]["frames.position", 4] == f"tensor {name} holds NaN or infinite values in frame 4"
    assert isinstance(verdict[2]["frames.position", 3], np.ndarray)
    for reader, error in READERS:
        with pytest.raises(error, match=rf"nan\.gvf4d: tensor {name} holds NaN or infinite values in frame 2"):
            reader(path).frame("frames.position", 2)
    with pytest.raises(ResultFileError, match="in frame 2"):
        read_result(path)


def test_every_value_can_be_non_finite_and_the_file_still_opens(tmp_path, small_shot):
    path = _write(tmp_path / "nan.gvf4d", small_shot.animated)
    data = bytearray(path.read_bytes())
    n = int.from_bytes(data[:8], "little")
    b, e = split_file(bytes(data))[0]["frames.position"]["data_offsets"]
    data[8 + n + b: 8 + n + e] = np.full((e - b) // 4, np.nan, np.float32).tobytes()
    path.write_bytes(bytes(data))
    for reader, error in READERS:
        f = reader(path)                       # no scan at open
        with pytest.raises(error, match="frame 0"):
            f.frame("frames.position", 0)


def test_canonical_and_mesh_values_are_checked_when_read(tmp_path, meshed_shot):
    path = write_result(tmp_path / "m.gvf4d", meshed_shot[0], {"fps": 24.0}, mesh=meshed_shot[1],
                        position_storage="delta")
    _poison_bytes(path, "canonical.position", 7, np.inf, np.float32)
    _poison_bytes(path, "mesh.faces", 4, 10, np.int32)          # 10 vertices: 0..9
    verdict = same_verdict(path)
    assert verdict[0] == "accepted"
    assert verdict[2]["canonical.position"] == "tensor canonical.position holds NaN or infinite values"
    assert verdict[2]["frames.position", 0] == "tensor canonical.position holds NaN or infinite values"
    assert verdict[2]["mesh.faces"] == "tensor mesh.faces holds vertex indices outside 0..9"
    assert isinstance(verdict[2]["frames.scale", 1], np.ndarray)


# ---- gvf4d info ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("change", [_meta(fps="x"), _meta(footage=3), _meta(timings={"fit": "slow"}),
                                    _meta(engine="fit")])
def test_info_prints_one_line_for_bad_metadata(tmp_path, base, capsys, change):
    from gvf4d.cli import main
    path = tmp_path / "bad.gvf4d"
    path.write_bytes(_arrays(base, change))
    assert main(["info", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"gvf4d: error: {path}: metadata ") and "Traceback" not in err


def test_info_describes_a_version_2_file(tmp_path, small_shot, capsys):
    from gvf4d.cli import main
    path = write_result(tmp_path / "r.gvf4d", small_shot.animated,
                        {"fps_rational": [30000, 1001], "footage": {"frame_indices": [0, 2, 4, 6, 8, 10], "stride": 2,
                                                                    "frame_start": 0, "frame_end": 10}},
                        position_storage="delta")
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "schema version 2, 360 Gaussians x 6 frames at 29.97 fps (30000/1001)" in out
    assert "positions: float16 deltas from the canonical" in out
