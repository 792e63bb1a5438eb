"""TRELLIS image-to-3D networks (sparse-structure flow + decoder, structured-latent flow, GVF's Gaussian decoder),
same state_dicts as the published modules."""
from .gaussian_decoder import GaussianDecoder, GaussianDecoderConfig, rename_gvf_static_vae_keys
from .slat_flow import SLatFlowConfig, SLatFlowModel
from .sparse_structure_decoder import SparseStructureDecoder, SparseStructureDecoderConfig
from .sparse_structure_flow import SparseStructureFlowConfig, SparseStructureFlowModel

__all__ = ["GaussianDecoder", "GaussianDecoderConfig", "rename_gvf_static_vae_keys", "SLatFlowConfig", "SLatFlowModel",
           "SparseStructureDecoder", "SparseStructureDecoderConfig", "SparseStructureFlowConfig",
           "SparseStructureFlowModel"]
