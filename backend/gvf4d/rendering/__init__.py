"""Gaussian rasterization: gsplat's CUDA kernels when available, our PyTorch reference otherwise."""
from .cameras import Cameras, orbit_cameras, footage_camera, FOOTAGE_FOV_X_DEG, FOOTAGE_RADIUS
from .rasterize import rasterize, render_gaussians, RenderOutput, gsplat_available

__all__ = ["Cameras", "orbit_cameras", "footage_camera", "FOOTAGE_FOV_X_DEG", "FOOTAGE_RADIUS",
           "rasterize", "render_gaussians", "RenderOutput", "gsplat_available"]
