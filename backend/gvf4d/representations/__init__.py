from .gaussians import Gaussians, AnimatedGaussians, SH_C0, rgb_to_sh_dc, sh_dc_to_rgb
from .rotation import quat_to_rotmat, rotmat_to_quat, quat_multiply

__all__ = [
    "Gaussians", "AnimatedGaussians", "SH_C0", "rgb_to_sh_dc", "sh_dc_to_rgb",
    "quat_to_rotmat", "rotmat_to_quat", "quat_multiply",
]
