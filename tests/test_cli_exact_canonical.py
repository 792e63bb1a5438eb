"""`gvf4d generate|submit --canonical splat EDITED.ply --canonical-exact TAKE.gvf4d`: the command line's rerun on an
edited canonical, as the API's canonical_exact. The take's facing, alignment and normalisation are read from its
result and the splat is used as it is; requests that cannot run are refused before any work."""
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from gvf4d.cli import main
from gvf4d.exporters.ply import read_splat_ply, write_splat_ply
from gvf4d.result import ResultFile, write_result

from test_service import Server

FIT = ["--frames", "3", "--fit-size", "32", "--fit-iterations", "1"]


@pytest.fixture(scope="module")
def take(tmp_path_factory, shot_files):
    """A first take through the CLI (fit engine, facing searched every 90 degrees) and its edited canonical: every
    fourth Gaussian deleted, the first one moved."""
    root, _ = shot_files
    folder = tmp_path_factory.mktemp("cli_exact")
    assert main(["generate", str(root / "footage"), "--canonical", "splat", str(root / "canonical.ply"),
                 "--azimuth-step", "90", "--out", str(folder / "take0.gvf4d"), *FIT]) == 0
    first = ResultFile(folder / "take0.gvf4d")
    g = first.canonical()
    keep = torch.tensor([i for i in range(len(g)) if i % 4])
    g = replace(g, means=g.means[keep].clone(), scales=g.scales[keep], quats=g.quats[keep],
                opacities=g.opacities[keep], sh_dc=g.sh_dc[keep],
                sh_rest=None if g.sh_rest is None else g.sh_rest[keep])
    g.means[0] += torch.tensor([0.05, -0.1, 0.02])
    write_splat_ply(folder / "edited.ply", g)
    return root, folder, first


def assert_in_the_takes_space(f: ResultFile, first: ResultFile, edited: Path) -> None:
    """f's canonical is the edited splat as it is, with the first take's facing, alignment and normalisation."""
    np.testing.assert_array_equal(f.array("canonical.position"), read_splat_ply(edited).means.numpy())
    meta, was = f.metadata, first.metadata
    assert meta["canonical"]["exact"] is True and meta["canonical"]["facing"]["given"] is True
    assert meta["canonical"]["facing"]["azimuth_deg"] == was["canonical"]["facing"]["azimuth_deg"]
    for key in ("scale", "offset"):
        assert meta["canonical"]["alignment"][key] == was["canonical"]["alignment"][key]
    assert was["canonical"]["alignment"]["scale"] != 1.0       # the take's alignment is a real one
    assert meta["coordinates"]["normalisation"] == was["coordinates"]["normalisation"]
    assert was["coordinates"]["normalisation"]["scale"] != 1.0


def test_generate_with_canonical_exact_uses_the_splat_in_the_takes_space(take):
    root, folder, first = take
    out = folder / "take1.gvf4d"
    assert main(["generate", str(root / "footage"), "--canonical", "splat", str(folder / "edited.ply"),
                 "--canonical-exact", str(folder / "take0.gvf4d"), "--out", str(out), *FIT]) == 0
    assert_in_the_takes_space(ResultFile(out), first, folder / "edited.ply")


def test_submit_with_canonical_exact_sends_the_takes_space_to_the_service(take, tmp_path):
    """`gvf4d submit` to a real `gvf4d serve`: the request carries canonical_exact with the take's fields."""
    root, folder, first = take
    server = Server(tmp_path / "backend").start()
    try:
        out = tmp_path / "take2.gvf4d"
        assert main(["submit", str(root / "footage"), "--canonical", "splat", str(folder / "edited.ply"),
                     "--canonical-exact", str(folder / "take0.gvf4d"), "--data", str(server.data), "--wait",
                     "--out", str(out), *FIT]) == 0
    finally:
        server.stop()
    assert_in_the_takes_space(ResultFile(out), first, folder / "edited.ply")


def bad_take(folder, first: ResultFile, normalisation_scale) -> str:
    """The first take rewritten with its normalisation scale replaced."""
    path = folder / f"bad_{normalisation_scale}.gvf4d"
    meta = json.loads(json.dumps(first.metadata))
    meta["coordinates"]["normalisation"]["scale"] = normalisation_scale
    write_result(path, first.animated(), meta)
    return str(path)


@pytest.mark.parametrize("case, message", [
    ("mesh", "--canonical-exact needs --canonical splat PATH"),
    ("not a result", "not-a-result.gvf4d"),
    ("zero scale", "normalisation scale must be greater than 0"),
    ("text scale", "normalisation scale must be a number"),
])
def test_generate_refuses_an_unusable_canonical_exact_before_any_work(take, tmp_path, capsys, case, message):
    root, folder, first = take
    exact, kind = str(folder / "take0.gvf4d"), "splat"
    if case == "mesh":
        kind = "mesh"
    elif case == "not a result":
        exact = str(tmp_path / "not-a-result.gvf4d")
        (tmp_path / "not-a-result.gvf4d").write_bytes(b"\x00" * 64)
    else:
        exact = bad_take(tmp_path, first, 0.0 if case == "zero scale" else "big")
    out, cache = tmp_path / "refused.gvf4d", tmp_path / "cache"
    code = main(["generate", str(root / "footage"), "--canonical", kind, str(folder / "edited.ply"),
                 "--canonical-exact", exact, "--out", str(out), "--cache", str(cache), *FIT])
    assert code == 2 and message in capsys.readouterr().err
    assert not out.exists() and not (cache.exists() and any(cache.iterdir()))     # nothing ingested or written
