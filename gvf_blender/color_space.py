"""The sRGB transfer function on numpy arrays: the result's colours are display values, Blender's colour
attributes and glTF's COLOR_0 hold linear ones."""
from __future__ import annotations

import numpy as np


def srgb_to_linear(rgb) -> np.ndarray:
    """Display (sRGB-encoded) values, clamped to [0, 1] -> linear, float64 of the same shape."""
    rgb = np.clip(np.asarray(rgb, np.float64), 0.0, 1.0)
    return np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
