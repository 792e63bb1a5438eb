"""Sources of the canonical splat the variation field moves."""
from .normalise import Normalisation, normalise_to_unit_cube
from .splat import load_splat_canonical

__all__ = ["Normalisation", "normalise_to_unit_cube", "load_splat_canonical"]
