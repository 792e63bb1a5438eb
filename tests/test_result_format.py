import json
import struct

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from gvf4d.result import ResultFile, ResultFileError, read_result, write_result
from gvf_blender.result_file import GVF4DFile, GVF4DFileError


def _write(tmp_path, shot, name="r.gvf4d", **meta):
    return write_result(tmp_path / name, shot.animated, {"fps": 12.0, "seed": 3, **meta})


def test_roundtrip_backend_and_addon_readers_agree(tmp_path, small_shot):
    path = _write(tmp_path, small_shot)
    anim, meta = read_result(path)
    ref = small_shot.animated
    assert meta["schema_version"] == 1 and meta["frame_count"] == ref.num_frames and meta["fps"] == 12.0
    assert meta["coordinates"]["up"] == "+Z" and meta["values"] == "activated"
    torch.testing.assert_close(anim.positions, ref.positions)              # float32 exactly
    torch.testing.assert_close(anim.canonical.quats, ref.canonical.quats)
    torch.testing.assert_close(anim.scales, ref.scales, rtol=1e-3, atol=1e-6)  # float16 track
    assert anim.opacities is None and anim.sh_dc is None                   # not varied, not stored

    f = GVF4DFile(path)
    assert (f.num_frames, f.num_gaussians) == (ref.num_frames, len(ref.canonical))
    assert f.metadata == meta
    for t in (0, 3, ref.num_frames - 1):
        np.testing.assert_array_equal(f.frame("frames.position", t), ref.positions[t].numpy())
        np.testing.assert_allclose(f.frame("frames.rotation", t), ref.quats[t].numpy(), atol=1e-3)
    np.testing.assert_array_equal(np.asarray(f.array("canonical.sh_dc")), ref.canonical.sh_dc.numpy())
    assert not f.has("frames.opacity")


def test_frame_read_touches_only_that_frame(tmp_path, small_shot):
    path = _write(tmp_path, small_shot)
    f = GVF4DFile(path)
    arr = f.array("frames.position")
    assert isinstance(arr, np.memmap)
    # the frame is one contiguous slice of the mapped file
    frame = arr[2]
    assert frame.flags["C_CONTIGUOUS"] and frame.base is not None
    with pytest.raises(IndexError):
        f.frame("frames.position", small_shot.animated.num_frames)


def test_write_is_atomic_and_keeps_the_old_file_on_failure(tmp_path, small_shot, monkeypatch):
    path = _write(tmp_path, small_shot)
    before = path.read_bytes()
    import gvf4d.result.file as mod

    def boom(path, *a, **k):
        path.write_bytes(b"half a file")      # a partial write, then the failure
        raise RuntimeError("disk full")
    monkeypatch.setattr(mod, "write_safetensors", boom)
    with pytest.raises(RuntimeError):
        _write(tmp_path, small_shot, seed=4)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["r.gvf4d"]  # no temp file left behind


@pytest.mark.parametrize("mutate, message", [
    (lambda b: b[: len(b) // 2], "truncat"),
    (lambda b: b[:5], "too short"),
    (lambda b: struct.pack("<Q", 10 ** 12) + b[8:], "header length"),
    (lambda b: b[:8] + b"[" + b[9:], "JSON"),
])
def test_corrupt_files_get_one_clear_error(tmp_path, small_shot, mutate, message):
    good = _write(tmp_path, small_shot).read_bytes()
    bad = tmp_path / "bad.gvf4d"
    bad.write_bytes(mutate(good))
    with pytest.raises(GVF4DFileError, match=message) as e:
        GVF4DFile(bad)
    assert str(bad) in str(e.value)
    with pytest.raises(ResultFileError) as e2:
        ResultFile(bad)
    assert str(bad) in str(e2.value)


def _rewrite_metadata(data: bytes, change) -> bytes:
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    meta = json.loads(header["__metadata__"]["gvf4d"])
    change(meta)
    header["__metadata__"]["gvf4d"] = json.dumps(meta)
    raw = json.dumps(header).encode()
    raw += b" " * ((8 - len(raw) % 8) % 8)
    return struct.pack("<Q", len(raw)) + raw + data[8 + n:]


def test_wrong_schema_version_is_named(tmp_path, small_shot):
    good = _write(tmp_path, small_shot).read_bytes()
    bad = tmp_path / "v2.gvf4d"
    bad.write_bytes(_rewrite_metadata(good, lambda m: m.update(schema_version=2)))
    with pytest.raises(GVF4DFileError, match="schema version 2"):
        GVF4DFile(bad)
    with pytest.raises(ResultFileError, match="schema version 2"):
        ResultFile(bad)


def test_wrong_shapes_are_named(tmp_path):
    from safetensors.numpy import save_file
    n, t = 5, 3
    tensors = {"canonical.position": np.zeros((n, 3), np.float32), "canonical.scale": np.ones((n, 3), np.float32),
               "canonical.rotation": np.zeros((n, 4), np.float32), "canonical.opacity": np.ones(n, np.float32),
               "canonical.sh_dc": np.zeros((n, 3), np.float32), "frames.position": np.zeros((t, n + 1, 3), np.float32)}
    meta = {"gvf4d": json.dumps({"schema_version": 1, "fps": 24, "frame_count": t})}
    p = tmp_path / "shape.gvf4d"
    save_file(tensors, str(p), metadata=meta)
    with pytest.raises(GVF4DFileError, match="frames.position"):
        GVF4DFile(p)
    with pytest.raises(ResultFileError, match="frames.position"):
        ResultFile(p)
    del tensors["frames.position"]
    save_file(tensors, str(p), metadata=meta)
    with pytest.raises(GVF4DFileError, match="missing required"):
        GVF4DFile(p)
    with pytest.raises(ResultFileError, match="missing required"):
        ResultFile(p)


@pytest.fixture(scope="module")
def good_bytes(tmp_path_factory):
    from gvf4d.synthetic import make_synthetic_shot
    shot = make_synthetic_shot(num_frames=3, gaussians_per_part=8)
    p = write_result(tmp_path_factory.mktemp("g") / "g.gvf4d", shot.animated, {"fps": 24.0})
    return p.read_bytes()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_corruption_never_crashes_otherwise(tmp_path, good_bytes, data):
    b = bytearray(good_bytes)
    kind = data.draw(st.sampled_from(["flip", "truncate", "splice", "header"]))
    if kind == "flip":
        for _ in range(data.draw(st.integers(1, 8))):
            i = data.draw(st.integers(0, len(b) - 1))
            b[i] = data.draw(st.integers(0, 255))
    elif kind == "truncate":
        b = b[: data.draw(st.integers(0, len(b) - 1))]
    elif kind == "splice":
        i = data.draw(st.integers(0, len(b)))
        b[i:i] = data.draw(st.binary(min_size=1, max_size=64))
    else:  # corrupt inside the JSON header, where it matters most
        n = int.from_bytes(b[:8], "little")
        i = data.draw(st.integers(8, 8 + n - 1))
        b[i] = data.draw(st.sampled_from(list(b'{}[]":,0123456789-e.x ')))
    p = tmp_path / "fuzz.gvf4d"
    p.write_bytes(bytes(b))
    for reader, error in ((GVF4DFile, GVF4DFileError), (ResultFile, ResultFileError)):
        try:
            f = reader(p)
        except error:
            continue
        # it parsed: then every frame must be readable
        for t in range(f.num_frames):
            (f.frame if reader is GVF4DFile else f.frame_slice)("frames.position", t)
