"""The TRELLIS canonical stage end to end on small random networks written as the published files."""
import numpy as np
import pytest
import torch

from gvf4d.models.dinov2_features import DinoV2Features
from gvf4d.models.weights import WeightsError
from gvf4d.pipelines.trellis import TrellisImageTo3D, trellis_input_image


@pytest.fixture(scope="module")
def pipeline(small_weights):
    enc = DinoV2Features.from_folder(small_weights / "dinov2")
    return TrellisImageTo3D.from_folders(small_weights / "trellis", small_weights / "gvf", enc)


def disc_frame():
    """A 512 frame over white with an opaque red disc (alpha 255) and a soft edge."""
    yy, xx = np.mgrid[:512, :512]
    r = np.hypot(xx - 300, yy - 220)
    alpha = (np.clip(80 - r, 0, 1) * 255).astype(np.uint8)
    a = alpha[..., None] / 255
    rgb = (np.array([200, 30, 30]) * a + 255 * (1 - a)).astype(np.uint8)
    return rgb, alpha


def test_input_image_is_the_cropped_premultiplied_object():
    rgb, alpha = disc_frame()
    img = trellis_input_image(rgb, alpha)
    assert img.shape == (518, 518, 3) and img.dtype == np.uint8
    assert (img[:20, :20] == 0).all()                        # background is black (premultiplied), not white
    centre = img[259, 259].astype(int)
    assert abs(centre[0] - 200) <= 2 and centre[1] <= 32     # the object's straight colour at the centre
    inside = (img.sum(-1) > 0)                               # the disc spans 1/1.2 of the crop
    width = inside[259].sum()
    assert abs(width / 518 - 1 / 1.2) < 0.03


def test_condition_is_every_token_layer_normed(small_weights):
    enc = DinoV2Features.from_folder(small_weights / "dinov2")
    img = np.random.default_rng(0).integers(0, 255, (1, 518, 518, 3), dtype=np.uint8)
    cond = enc.condition(img)
    assert cond.shape == (1, 1 + 4 + 37 * 37, 64)
    torch.testing.assert_close(cond.mean(-1), torch.zeros(1, 1374), atol=1e-5, rtol=0)
    torch.testing.assert_close(cond.std(-1, unbiased=False), torch.ones(1, 1374), atol=2e-2, rtol=0)   # eps 1e-5


def test_trellis_run_gives_eight_gaussians_per_voxel_reproducibly(pipeline):
    img = trellis_input_image(*disc_frame())
    a = pipeline.run(img, seed=3)
    assert a.voxels > 0 and len(a.gaussians) == 8 * a.voxels
    g = a.gaussians.to_gaussians()
    assert torch.isfinite(g.means).all() and (g.means.abs() <= 0.5 + 1.5 / 16).all()   # unit cube (+ offsets)
    assert set(a.timings) >= {"trellis_condition", "trellis_structure", "trellis_latent", "trellis_decode"}
    b = pipeline.run(img, seed=3)
    torch.testing.assert_close(a.gaussians.xyz, b.gaussians.xyz)
    c = pipeline.run(img, seed=4)
    assert c.voxels != a.voxels or not torch.allclose(c.gaussians.xyz, a.gaussians.xyz)
    assert pipeline.samplers["sparse_structure_sampler"].params["steps"] == 12        # GVF's overrides
    assert pipeline.samplers["slat_sampler"].params["cfg_strength"] == 3.0
    assert pipeline.samplers["slat_sampler"].params["rescale_t"] == 3.0               # from pipeline.json


def test_missing_files_are_named(tmp_path, small_weights):
    enc = DinoV2Features.from_folder(small_weights / "dinov2")
    with pytest.raises(WeightsError, match="pipeline.json: missing"):
        TrellisImageTo3D.from_folders(tmp_path, small_weights / "gvf", enc)
    with pytest.raises(WeightsError, match="ema_static_vae_0.9999_200000.pt: missing"):
        TrellisImageTo3D.from_folders(small_weights / "trellis", tmp_path, enc)

