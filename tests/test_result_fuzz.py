"""Both .gvf4d readers under mutation (hypothesis): a valid file with its header JSON edited, bytes flipped, cut or
spliced, dtypes and shapes changed, values poisoned or its JSON nested deep is either read by both to the same
finite arrays or refused by both with their clean error and the same message; nothing else escapes.
Issue 23's findings are explicit examples."""
import json
import math

import numpy as np
import pytest
from hypothesis import example, given, settings, strategies as st

from gvf4d.result import TENSOR_SPECS, write_result
from test_result_format import _header_text_edit, _nested, join_file, make_meshed_shot, same_verdict, split_file

_TENSOR_NAMES = sorted(TENSOR_SPECS)
_META_KEYS = ["schema_version", "fps", "fps_rational", "frame_count", "num_gaussians", "values", "coordinates",
              "footage", "crop", "engine", "timings", "seed", "sampler"]
_FOOTAGE_KEYS = ["frame_indices", "fps", "stride", "frame_start", "frame_end", "path", "sha256", "source_size"]
_MISSING = "<missing>"

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 40, 2 ** 40) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6) | st.sampled_from(["F32", "F16", "I32", "F64", "BF16", "U8", "activated"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8)
_entry_values = _json_values | st.lists(st.integers(-2, 10 ** 5), max_size=4)
_mutations = st.one_of(
    st.tuples(st.just("flip"),
              st.lists(st.tuples(st.integers(0, 2 ** 32), st.integers(0, 255)), min_size=1, max_size=8)),
    st.tuples(st.just("truncate"), st.integers(0, 2 ** 32)),
    st.tuples(st.just("splice"), st.integers(0, 2 ** 32), st.binary(min_size=1, max_size=64)),
    st.tuples(st.just("header_byte"), st.integers(0, 2 ** 32), st.sampled_from(list(b'{}[]":,0123456789-e.xN '))),
    st.tuples(st.just("entry"), st.sampled_from(_TENSOR_NAMES), st.sampled_from(["dtype", "shape", "data_offsets"]),
              _entry_values),
    st.tuples(st.just("rename"), st.sampled_from(_TENSOR_NAMES), st.sampled_from(_TENSOR_NAMES + ["frames.velocity"])),
    st.tuples(st.just("metadata"), st.sampled_from(_META_KEYS), _json_values | st.just(_MISSING)),
    st.tuples(st.just("metadata_literal"), st.sampled_from(_META_KEYS),
              st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "-0.0", "0", "24", "2", "[24000, 1001]",
                               "9" * 5000])),
    st.tuples(st.just("footage"), st.sampled_from(_FOOTAGE_KEYS), _json_values),
    st.tuples(st.just("nest"), st.sampled_from(["header", "metadata"]), st.integers(1, 3000)),
    st.tuples(st.just("value"), st.sampled_from(_TENSOR_NAMES), st.integers(0, 2 ** 32),
              st.sampled_from([math.nan, math.inf, -math.inf, 7e4, 65504.0, -1.0, 10.0])),
)


def _with_metadata_literal(meta: dict, key: str, literal: str) -> str:
    """The metadata JSON text with `key` set to a literal json.dumps would not write (NaN, 1e400, ...)."""
    rest = json.dumps({k: v for k, v in meta.items() if k != key})
    return rest[:-1] + (", " if len(rest) > 2 else "") + f'"{key}": {literal}}}'


def mutate(good: bytes, mutation) -> bytes:
    kind, *args = mutation
    if kind in ("flip", "truncate", "splice", "header_byte"):
        b = bytearray(good)
        if kind == "flip":
            for i, v in args[0]:
                b[i % len(b)] = v
        elif kind == "truncate":
            del b[args[0] % len(b):]
        elif kind == "splice":
            i = args[0] % (len(b) + 1)
            b[i:i] = args[1]
        else:   # inside the JSON header, where most of the rules are
            b[8 + args[0] % int.from_bytes(good[:8], "little")] = args[1]
        return bytes(b)
    if kind == "nest":
        where, depth = args
        if where == "header":
            return _header_text_edit('"canonical.opacity": {', f'"canonical.opacity": {{"x": {_nested(depth)}, ')(good)
        header, meta, data = split_file(good)
        return join_file(header, _with_metadata_literal(meta, "x", _nested(depth)), data)
    header, meta, data = split_file(good)
    if kind == "entry":
        name, field, value = args
        if name in header:
            header[name] = {**header[name], field: value}
    elif kind == "rename":   # to a name not there, or swapping two tensors' names
        old, new = args
        if old in header:
            header[old], header[new] = header.get(new), header.pop(old)
            if header[old] is None:
                del header[old]
    elif kind == "metadata":
        key, value = args
        if value == _MISSING:
            meta.pop(key, None)
        else:
            meta[key] = value
    elif kind == "metadata_literal":
        return join_file(header, _with_metadata_literal(meta, *args), data)
    elif kind == "footage":
        key, value = args
        meta["footage"] = {**(meta.get("footage") or {}), key: value}
    elif kind == "value":
        name, index, value = args
        if name in header:
            entry = header[name]
            dtype = {"F32": np.float32, "F16": np.float16, "I32": np.int32}[entry["dtype"]]
            begin, end = entry["data_offsets"]
            count = (end - begin) // np.dtype(dtype).itemsize
            if count:
                at = begin + (index % count) * np.dtype(dtype).itemsize
                with np.errstate(invalid="ignore", over="ignore"):
                    poison = np.array([value], np.float64).astype(dtype).tobytes()
                data = data[:at] + poison + data[at + len(poison):]
    return join_file(header, meta, data)


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    """name -> bytes of valid files: schema 2 with every tensor (absolute, and as position deltas), schema 1."""
    animated, mesh = make_meshed_shot()
    folder = tmp_path_factory.mktemp("bases")
    files = {storage: write_result(folder / f"{storage}.gvf4d", animated,
                                   {"fps": 24.0, "footage": {"frame_indices": [0, 2, 4], "stride": 2, "fps": 48.0}},
                                   mesh=mesh, position_storage=storage).read_bytes()
             for storage in ("absolute", "delta")}
    header, meta, data = split_file(files["absolute"])
    files["v1"] = join_file(header, {**meta, "schema_version": 1}, data)
    return files


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@settings(max_examples=200, deadline=None)
@given(base=st.sampled_from(["absolute", "delta", "v1"]), mutation=_mutations)
@example(base="absolute", mutation=("entry", "frames.position", "dtype", "I32"))            # integer positions
@example(base="v1", mutation=("entry", "frames.position", "dtype", "I32"))
@example(base="absolute", mutation=("value", "frames.position", 7, math.nan))               # NaN positions
@example(base="absolute", mutation=("value", "frames.position", 100, math.inf))              # Inf positions
@example(base="delta", mutation=("value", "frames.position_delta", 100, -math.inf))
@example(base="delta", mutation=("value", "canonical.position", 3, math.nan))
@example(base="absolute", mutation=("metadata_literal", "fps", "Infinity"))                 # infinite fps
@example(base="absolute", mutation=("metadata_literal", "fps", "1e400"))
@example(base="v1", mutation=("metadata_literal", "fps", "1e400"))
@example(base="absolute", mutation=("nest", "header", 100_000))                              # deeply nested header
@example(base="delta", mutation=("nest", "metadata", 100_000))
@example(base="absolute", mutation=("metadata", "fps", "x"))                                 # wrong metadata types
@example(base="absolute", mutation=("metadata", "footage", 3))
@example(base="absolute", mutation=("metadata", "timings", {"fit": "slow"}))
@example(base="v1", mutation=("rename", "frames.position", "frames.position_delta"))
def test_readers_agree_on_mutated_files(bases, fuzz_dir, base, mutation):
    path = fuzz_dir / "fuzz.gvf4d"
    path.unlink(missing_ok=True)   # a new file: earlier examples' memory maps keep the old one
    path.write_bytes(mutate(bases[base], mutation))
    verdict = same_verdict(path)
    if verdict[0] == "accepted":
        for key, values in verdict[2].items():
            if isinstance(values, np.ndarray) and values.dtype.kind == "f":
                assert np.isfinite(values).all(), key
        for key in [k for k in verdict[2] if isinstance(k, tuple) and k[0] == "frames.position"]:
            assert isinstance(verdict[2][key], str) or verdict[2][key].dtype == np.float32
