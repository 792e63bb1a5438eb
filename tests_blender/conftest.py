import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="session")
def fixture_dir(tmp_path_factory):
    """A .gvf4d made by the backend's writer (run in the backend's environment) and the expected arrays."""
    out = tmp_path_factory.mktemp("gvf4d")
    subprocess.run([str(ROOT / ".venv" / "bin" / "python"), str(ROOT / "tools" / "make_blender_fixture.py"), str(out)],
                   check=True, timeout=600)
    return out


@pytest.fixture()
def empty_scene():
    import bpy
    bpy.ops.wm.read_factory_settings(use_empty=True)
    yield bpy.context.scene
