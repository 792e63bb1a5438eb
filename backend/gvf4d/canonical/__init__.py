"""Sources of the canonical splat the variation field moves."""
from .exact import ExactCanonical
from .mesh import MeshError, load_mesh_canonical
from .normalise import Normalisation, normalise_to_unit_cube
from .splat import load_splat_canonical

__all__ = ["ExactCanonical", "MeshError", "load_mesh_canonical", "Normalisation", "normalise_to_unit_cube", "load_splat_canonical"]
