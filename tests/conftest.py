import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # gvf_blender (the add-on) is imported from the checkout


@pytest.fixture(scope="session")
def small_shot():
    from gvf4d.synthetic import make_synthetic_shot
    return make_synthetic_shot(num_frames=6, gaussians_per_part=60, seed=1)


def synthetic_shot_files(tmp_path_factory, name: str, num_frames: int):
    """A synthetic shot on disk: (folder with footage/ at 64 px and canonical.ply, the shot)."""
    from gvf4d.pipelines.demo import write_shot_files
    from gvf4d.synthetic import make_synthetic_shot
    root = tmp_path_factory.mktemp(name)
    shot = make_synthetic_shot(num_frames=num_frames, gaussians_per_part=40, seed=3)
    write_shot_files(shot, root, 64)
    return root, shot


@pytest.fixture(scope="session")
def shot_files(tmp_path_factory):
    """A 4-frame synthetic shot on disk."""
    return synthetic_shot_files(tmp_path_factory, "shot", 4)


@pytest.fixture(scope="session")
def small_weights(tmp_path_factory):
    """A weights folder (gvf/, dinov2/, trellis/) with small random networks (tests/small_weights.py)."""
    from small_weights import write_small_weights
    return write_small_weights(tmp_path_factory.mktemp("weights"))
