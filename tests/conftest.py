import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # gvf_blender (the add-on) is imported from the checkout


@pytest.fixture(scope="session")
def small_shot():
    from gvf4d.synthetic import make_synthetic_shot
    return make_synthetic_shot(num_frames=6, gaussians_per_part=60, seed=1)
