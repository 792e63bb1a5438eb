"""GVF4D: video-to-4D Gaussian splats (canonical splat + Gaussian variation field)."""

__version__ = "0.1.0"
