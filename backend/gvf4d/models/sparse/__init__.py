"""Sparse voxel tensors and the layers TRELLIS builds from them (submanifold convolution, pooling, attention)."""
from .attention import Segments, segment_attention, window_partition
from .conv import SparseConv3d, spconv_available, submanifold_conv3d
from .spatial import downsample, upsample
from .tensor import SparseTensor

__all__ = ["SparseTensor", "SparseConv3d", "submanifold_conv3d", "spconv_available", "downsample", "upsample",
           "Segments", "segment_attention", "window_partition"]
