"""The model registry: networks loaded once per (kind, folder, device), shared between calls, dropped by unload()."""
import gc
import weakref

import pytest
import torch

from gvf4d.pipelines.gvf import GVFEngine
from gvf4d.pipelines.model_registry import ModelRegistry
from gvf4d.pipelines.trellis import TrellisImageTo3D


def test_unload_drops_every_network_and_a_later_call_loads_again(small_weights):
    cpu = torch.device("cpu")
    registry = ModelRegistry()
    engine = registry.get("gvf", small_weights / "gvf", cpu)
    trellis = registry.get("trellis", small_weights, cpu)            # loads the dinov2 encoder it shares
    dinov2 = registry.get("dinov2", small_weights / "dinov2", cpu)
    assert isinstance(engine, GVFEngine) and isinstance(trellis, TrellisImageTo3D)
    assert registry.get("gvf", small_weights / "gvf", cpu) is engine and trellis.encoder is dinov2
    assert sorted(kind for kind, _, _ in registry.loaded) == ["dinov2", "gvf", "trellis"]

    gone = [weakref.ref(m) for m in (engine, trellis, dinov2)]
    del engine, trellis, dinov2
    registry.unload()
    gc.collect()
    assert registry.loaded == []
    assert all(ref() is None for ref in gone)                       # nothing else holds the networks

    again = registry.get("gvf", small_weights / "gvf", cpu)
    assert isinstance(again, GVFEngine) and registry.loaded == [("gvf", str(small_weights / "gvf"), "cpu")]


def test_unknown_kind_is_refused(small_weights):
    with pytest.raises(ValueError, match="unknown model kind 'vae'"):
        ModelRegistry().get("vae", small_weights, torch.device("cpu"))
