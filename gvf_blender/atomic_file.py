"""Writing a file whole or not at all (exports, the frame folder, rerun splats)."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

TEMP_SUFFIX = ".part"


@contextlib.contextmanager
def atomic_output(path):
    """Yields a binary file beside `path` that replaces it when the block ends without an error (a failed or
    interrupted export leaves no partial file behind). Each call has a temp file of its own, named after the
    target (cut to 100 bytes, so a long name still fits the file system's 255)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    stem = os.fsencode(path.name)[:100].decode(errors="ignore")
    fd, tmp = tempfile.mkstemp(prefix=f".{stem}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
