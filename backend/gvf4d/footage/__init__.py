"""Footage ingestion: video files and image sequences -> selected frames with alpha -> model inputs."""
from .errors import FootageError
from .reader import FootageSource, open_footage, select_frame_indices
from .matting import MattingOptions, frame_alpha
from .prepare import PreparedFootage, prepare_footage, crop_box_from_alpha, CANVAS_SIZE, OBJECT_SIZE

__all__ = ["FootageError", "FootageSource", "open_footage", "select_frame_indices", "MattingOptions",
           "frame_alpha", "PreparedFootage", "prepare_footage", "crop_box_from_alpha", "CANVAS_SIZE", "OBJECT_SIZE"]
