"""Fused GPU kernels and CUDA-graph replay for the networks in `gvf4d.models`, each beside its PyTorch reference path.

- small_head_attention: softmax attention for 16/32-channel heads, per-head q/k RMS norms applied on load (Triton).
- head_summed_attention: one query set against many key/value sets, summed over heads (Triton; TMA on sm_90+).
- shared_row_attention: one-head attention whose keys and values are the same rows (CUDA C++ via NVRTC, sm_80+).
- multihead_rms_norm: per-head RMS norm of half-precision queries/keys (Triton).
- residual_layer_norm: a residual update and the layer norm after it in one pass; `add_norm`, what the models call.
- geglu: GEGLU, and the projection before it fused with it on sm_90+ (Triton).
- decoder_queries: the motion-VAE decoder's normalised query rows in one pass (Triton).
- fps: farthest point sampling, its steps replayed from CUDA graphs on CUDA.
- cuda_graph: replaying a fixed-shape call from a CUDA graph (`GraphedCall`, `FrozenNest`).
- triton_kernels: optional Triton, the rule for choosing a fused kernel or its PyTorch path (`use_fused`).
- cuda_kernels: optional CUDA C++ kernels built on first use with NVRTC through PyTorch.
"""
