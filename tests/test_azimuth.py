import pytest

from gvf4d.canonical.azimuth import ClipScorer, rotate_about_z, search_azimuth
from gvf4d.metrics import psnr
from gvf4d.rendering import footage_camera, render_gaussians
from gvf4d.synthetic import make_synthetic_shot


@pytest.fixture(scope="module")
def splat():
    return make_synthetic_shot(num_frames=1, gaussians_per_part=150, seed=1).animated.canonical


@pytest.mark.parametrize("turn", [40.0, -120.0])
def test_search_recovers_a_known_rotation(splat, turn):
    """The footage shows the splat turned by `turn`; the search must find the view that undoes it."""
    cam = footage_camera(64, 64)
    seen = render_gaussians(rotate_about_z(splat, turn), cam)
    found = search_azimuth(splat, seen.rgb[0], seen.alpha[0, ..., 0], azimuths_deg=range(-180, 180, 10))
    assert abs(((found.azimuth_deg + turn) + 180) % 360 - 180) <= 10, found.azimuth_deg
    aligned = render_gaussians(found.apply(splat), cam)
    assert psnr(aligned.rgb[0], seen.rgb[0]) > 25
    assert found.scores.shape == (36,) and found.scorer == "silhouette"


def test_clip_scoring_from_local_weights(splat, tmp_path):
    from transformers import CLIPConfig, CLIPModel
    cfg = CLIPConfig(text_config={"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                                  "intermediate_size": 64},
                     vision_config={"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                                    "intermediate_size": 64, "image_size": 64, "patch_size": 16}, projection_dim=16)
    CLIPModel(cfg).save_pretrained(tmp_path / "clip")
    clip = ClipScorer.from_folder(tmp_path / "clip")
    cam = footage_camera(64, 64)
    seen = render_gaussians(rotate_about_z(splat, 90.0), cam)
    found = search_azimuth(splat, seen.rgb[0], seen.alpha[0, ..., 0], azimuths_deg=range(-180, 180, 90), clip=clip)
    assert found.scorer == "clip" and found.azimuth_deg == -90.0   # the L1 term decides with an untrained CLIP
