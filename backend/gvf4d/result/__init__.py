"""The .gvf4d result file: the one contract between the backend and the Blender add-on.

Layout (schema version 2; readers accept 1 and 2) — the safetensors layout, so numpy alone can read it:
    8 bytes   little-endian u64: header length H
    H bytes   JSON header: {tensor name: {dtype, shape, data_offsets}, "__metadata__": {"gvf4d": JSON}}
    rest      raw little-endian tensor buffers, each C-contiguous (a frame of a (T, ...) track is one
              contiguous slice, readable without loading the other frames)

Every value is stored *activated*: positions and scales in metres, rotations as unit quaternions
(w, x, y, z), opacity in [0, 1], colour as SH coefficients (rgb = 0.5 + 0.28209479 * sh_dc).
Coordinates follow Blender: right-handed, Z up, the footage camera looking along +Y, object centred.
Positions of long shots are stored as float16 deltas from the canonical (frames.position_delta); readers
return absolute positions either way. See docs/format.md for the tensor table, the metadata keys and the
validity rules both readers apply.
"""
from .schema import READABLE_VERSIONS, SCHEMA_VERSION, ResultFileError, TENSOR_SPECS
from .file import read_result, write_result, ResultFile, ResultMetadata

__all__ = ["READABLE_VERSIONS", "SCHEMA_VERSION", "ResultFileError", "TENSOR_SPECS", "read_result", "write_result",
           "ResultFile", "ResultMetadata"]
