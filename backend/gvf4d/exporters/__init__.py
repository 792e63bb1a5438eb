"""Exporters that need no Blender: 3DGS PLY per frame, animated-points GLB, preview MP4."""
from .ply import write_ply_frames, write_splat_ply, read_splat_ply
from .gltf import write_points_glb
from .preview import write_preview_video

__all__ = ["write_ply_frames", "write_splat_ply", "read_splat_ply", "write_points_glb", "write_preview_video"]
