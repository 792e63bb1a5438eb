"""The extension zip, built and validated with Blender's own tooling, installs into a fresh user config."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

INSTALL = """
import bpy, sys
result = bpy.ops.extensions.package_install_files(filepath=sys.argv[-1], repo="user_default", enable_on_install=True)
enabled = sorted(k for k in bpy.context.preferences.addons.keys() if k.endswith("gvf4d"))
print("RESULT", result, enabled, hasattr(bpy.types, "GVF4D_PT_panel"), hasattr(bpy.context.scene, "gvf4d"))
"""


def test_build_validate_install_enable(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "build_extension.py"), "--out", str(tmp_path / "dist")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Success parsing TOML" in out.stdout
    zip_path = Path(out.stdout.strip().splitlines()[-1])
    assert zip_path.is_file() and zip_path.name == "gvf4d-0.1.0.zip"
    env = {**os.environ, "BLENDER_USER_RESOURCES": str(tmp_path / "user")}
    r = subprocess.run([sys.executable, "-c", INSTALL, str(zip_path)], capture_output=True, text=True, timeout=300,
                       env=env)
    assert "RESULT {'FINISHED'} ['bl_ext.user_default.gvf4d'] True True" in r.stdout, r.stdout + r.stderr
    assert (tmp_path / "user" / "extensions" / "user_default" / "gvf4d" / "result_file.py").is_file()
