"""Per-shot rerun cache: each stage's output is stored under the hash of its inputs and settings, so a rerun
with another seed or sampler setting redoes only the variation field."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Optional


def stage_key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


class StageCache:
    """root/<stage>/<key>/ holds a stage's files; a folder is only visible once complete (temp + rename)."""

    def __init__(self, root: Optional[Path]):
        self.root = Path(root) if root else None

    def get(self, stage: str, key: str) -> Optional[Path]:
        if self.root is None:
            return None
        d = self.root / stage / key
        return d if d.is_dir() else None

    def put(self, stage: str, key: str, write: Callable[[Path], None]) -> Optional[Path]:
        if self.root is None:
            return None
        final = self.root / stage / key
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=final.parent))
        try:
            write(tmp)
            os.replace(tmp, final)
        except OSError:
            if final.is_dir():       # another job stored the same stage meanwhile: theirs is as good
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return final
