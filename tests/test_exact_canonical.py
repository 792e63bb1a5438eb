"""A canonical splat given exactly (a rerun on a take's edited canonical): the file's Gaussians are the result's
canonical, the facing, alignment and normalisation are the given ones and recorded again; the footage stage is
reused, the changed splat redoes the rest."""
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from gvf4d.canonical import ExactCanonical
from gvf4d.canonical.align import SilhouetteAlignment
from gvf4d.exporters.ply import read_splat_ply, write_splat_ply
from gvf4d.pipelines.generate import generate
from gvf4d.pipelines.stage_cache import StageCache
from gvf4d.representations import Gaussians
from gvf4d.result.file import ResultFile
from gvf4d.service.jobs import request_from_json
from gvf4d.validation import RequestError, check_request

ALIGNMENT = {"scale": 1.3, "offset": [0.01, -0.02, 0.03], "meaning": "aligned = original * scale + offset"}
NORMALISATION = {"centre": [0.4, -0.3, 1.2], "scale": 0.7, "meaning": "normalised = (original - centre) * scale"}


@pytest.fixture(scope="module")
def take(tmp_path_factory, shot_files):
    """A first take (fit engine, facing searched) made through a stage cache, and the folder of its job."""
    root, _ = shot_files
    folder = tmp_path_factory.mktemp("exact")
    cache = StageCache(folder / "cache")
    job = {"footage": str(root / "footage"), "canonical": "splat", "canonical_path": str(root / "canonical.ply"),
           "frames": 3, "fit_size": 32, "fit_iterations": 1, "azimuth_step": 90.0, "name": "take0"}
    outcome = generate(request_from_json(job, folder), cache=cache)
    return job, ResultFile(outcome.result), cache, folder


def edited_canonical(f: ResultFile, path):
    """The take's canonical with every fifth Gaussian deleted and the first one moved, as a 3DGS PLY."""
    g = f.canonical()
    keep = torch.tensor([i for i in range(len(g)) if i % 5])
    g = replace(g, means=g.means[keep], scales=g.scales[keep], quats=g.quats[keep], opacities=g.opacities[keep],
                sh_dc=g.sh_dc[keep], sh_rest=None if g.sh_rest is None else g.sh_rest[keep])
    g.means[0] += torch.tensor([0.05, -0.1, 0.02])
    write_splat_ply(path, g)
    return read_splat_ply(path)


def rerun(take, splat, name, **given):
    job, _, cache, folder = take
    request = {**job, "canonical_path": str(splat), "canonical_exact": True, "azimuth_step": None, "name": name,
               **given}
    outcome = generate(request_from_json(request, folder), cache=cache)
    return ResultFile(outcome.result), outcome.reused


def test_a_splat_given_exactly_is_the_results_canonical_with_the_given_space(take):
    _, first, _, folder = take
    assert first.metadata["canonical"]["facing"]["step_deg"] == 90.0
    given = edited_canonical(first, folder / "edited.ply")
    f, reused = rerun(take, folder / "edited.ply", "take1", facing_deg=17.0, alignment=ALIGNMENT,
                      normalisation=NORMALISATION)
    assert f.num_gaussians == len(given) == len(first.canonical()) - math.ceil(len(first.canonical()) / 5)
    np.testing.assert_array_equal(f.array("canonical.position"), given.means.numpy())
    np.testing.assert_allclose(f.array("canonical.scale"), given.scales.numpy(), rtol=1e-6)
    np.testing.assert_allclose(f.array("canonical.opacity"), given.opacities.numpy(), atol=1e-6)
    np.testing.assert_allclose(f.array("canonical.sh_dc"), given.sh_dc.numpy(), atol=1e-6)
    q = torch.nn.functional.normalize(given.quats, dim=-1).numpy()
    np.testing.assert_allclose(np.abs((f.array("canonical.rotation") * q).sum(1)), 1.0, atol=1e-6)
    meta = f.metadata
    assert meta["canonical"]["source"] == "splat" and meta["canonical"]["exact"] is True
    assert meta["canonical"]["facing"]["azimuth_deg"] == 17.0 and meta["canonical"]["facing"]["given"] is True
    alignment = meta["canonical"]["alignment"]
    assert (alignment["scale"], alignment["offset"], alignment.get("applied", True)) == (1.3, [0.01, -0.02, 0.03], True)
    assert meta["coordinates"]["normalisation"]["centre"] == [0.4, -0.3, 1.2]
    assert meta["coordinates"]["normalisation"]["scale"] == 0.7
    # the footage stage is reused; the new splat file redoes the canonical; facing and alignment are given
    assert reused == ["ingest"]
    assert rerun(take, folder / "edited.ply", "take1b", facing_deg=17.0, alignment=ALIGNMENT,
                 normalisation=NORMALISATION)[1] == ["ingest", "canonical"]


def test_an_alignment_not_in_the_values_is_applied_for_the_fit_engine(take):
    """A splat from a gvf take (alignment recorded, not applied) is aligned by the given alignment exactly."""
    _, first, _, folder = take
    given = edited_canonical(first, folder / "edited_gvf.ply")
    f, _ = rerun(take, folder / "edited_gvf.ply", "take2", alignment={**ALIGNMENT, "applied": False})
    np.testing.assert_allclose(f.array("canonical.position"), given.means.numpy() * 1.3 + [0.01, -0.02, 0.03],
                               atol=1e-6)
    np.testing.assert_allclose(f.array("canonical.scale"), given.scales.numpy() * 1.3, rtol=1e-5)
    assert f.metadata["canonical"]["alignment"].get("applied", True) is True


def test_exact_space_round_trips_between_the_engines_spaces():
    g = Gaussians(
        means=torch.randn(20, 3), scales=torch.rand(20, 3) + 0.01,
        quats=torch.nn.functional.normalize(torch.randn(20, 4), dim=-1), opacities=torch.rand(20),
        sh_dc=torch.randn(20, 3))
    exact = ExactCanonical(alignment=SilhouetteAlignment(1.3, (0.01, -0.02, 0.03)), alignment_applied=True)
    assert exact.footage_space(g) is g
    back = exact.alignment.apply(exact.model_space(g))
    torch.testing.assert_close(back.means, g.means, atol=1e-6, rtol=0)
    torch.testing.assert_close(back.scales, g.scales, atol=1e-7, rtol=1e-6)
    unapplied = replace(exact, alignment_applied=False)
    assert unapplied.model_space(g) is g
    torch.testing.assert_close(unapplied.footage_space(g).means, g.means * 1.3 + torch.tensor([0.01, -0.02, 0.03]))


@pytest.mark.parametrize("change, message", [
    ({"alignment": {**ALIGNMENT, "scale": 0.0}}, "alignment scale must be greater than 0"),
    ({"alignment": {**ALIGNMENT, "scale": -2.0}}, "alignment scale must be greater than 0"),
    ({"normalisation": {**NORMALISATION, "scale": 0.0}}, "normalisation scale must be greater than 0"),
    ({"canonical": "mesh"}, "canonical_exact needs canonical 'splat'"),
    ({"canonical_exact": False}, "they need canonical_exact"),
])
def test_refused_exact_requests(take, change, message):
    job, _, _, folder = take
    request = {**job, "canonical_exact": True, "facing_deg": 5.0, "alignment": ALIGNMENT,
               "normalisation": NORMALISATION, **change}
    with pytest.raises(RequestError, match=message):
        request_from_json(request, folder, paths=False)


def test_non_finite_exact_space_is_refused(take):
    job, _, _, folder = take
    req = request_from_json({**job, "canonical_exact": True}, folder, paths=False)
    for exact, message in ((ExactCanonical(facing_deg=math.inf), "facing must be a finite number"),
                           (ExactCanonical(alignment=SilhouetteAlignment(1.0, (0.0, math.nan, 0.0))),
                            "alignment offset must be a finite number"),
                           (replace(ExactCanonical(), normalisation=replace(ExactCanonical().normalisation,
                                                                            scale=math.nan)),
                            "normalisation scale must be a finite number")):
        with pytest.raises(RequestError, match=message):
            check_request(replace(req, exact=exact), paths=False)
