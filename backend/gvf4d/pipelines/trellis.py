"""TRELLIS image-to-3D as GVFDiffusion runs it on the canonical frame, decoded by GVF's Gaussian decoder.

    image     the canonical frame's RGBA, cropped to its alpha > 0.8 box x 1.2, 518 x 518 Lanczos, over black
    condition DINOv2 ViT-L/14-reg tokens (1374), layer-normed; the negative condition is zeros
    structure flow-Euler sampling of the occupancy latent (1, 8, 16^3) -> decoder -> voxels where logit > 0
    latent    flow-Euler sampling of the structured latent (N, 8) on those voxels, de-normalised (slat_normalization)
    Gaussians GVF's decoder: 8 per voxel, raw parameters of GVF's Gaussian model, TRELLIS object space
GVFDiffusion's sampler overrides (12 steps each, guidance 7.5 then 3) are the defaults; the other sampler
parameters come from pipeline.json. Noise is drawn on the CPU from a generator seeded with the job seed, in the
published order, so a seed means the same shape on any device.

Folders: <weights>/trellis/ holds the TRELLIS-image-large files (pipeline.json, ckpts/*.json, ckpts/*.safetensors;
the Gaussian decoder's config is read from its JSON, its weights from <weights>/gvf/ema_static_vae_0.9999_200000.pt),
<weights>/dinov2/ the image encoder.
"""
from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ..footage.prepare import crop_box_from_alpha
from ..kernels.cuda_graph import GraphedCall
from ..models.dinov2_features import INPUT_SIZE, DinoV2Features
from ..models.sparse import SparseTensor
from ..models.trellis import (GaussianDecoder, SLatFlowModel, SparseStructureDecoder, SparseStructureFlowModel,
                              rename_gvf_static_vae_keys)
from ..models.weights import WeightsError, load_strict, read_state_dict
from ..progress import Progress, StageClock
from ..representations.gvf_gaussians import GVFGaussians
from ..samplers import FlowEulerSampler
from .gvf import existing_weight_file

TRELLIS_HUB_REPO = "JeffreyXiang/TRELLIS-image-large"
GAUSSIAN_DECODER_FILE = "ema_static_vae_0.9999_200000"
NETWORKS = {"sparse_structure_flow_model": SparseStructureFlowModel, "sparse_structure_decoder": SparseStructureDecoder,
            "slat_flow_model": SLatFlowModel}
GAUSSIAN_DECODER_CONFIG = "slat_decoder_gs"
FLOW_SAMPLERS = ("FlowEulerGuidanceIntervalSampler", "FlowEulerCfgSampler", "FlowEulerSampler")
GVF_SAMPLER_OVERRIDES = {"sparse_structure_sampler": {"steps": 12, "cfg_strength": 7.5},
                         "slat_sampler": {"steps": 12, "cfg_strength": 3.0}}


@dataclass
class FlowSampling:
    """One sampler entry of pipeline.json: its sigma_min and parameters (steps, cfg_strength, cfg_interval, rescale_t)."""

    sigma_min: float
    params: dict

    @classmethod
    def from_pipeline(cls, entry: dict, overrides: dict, where: str) -> "FlowSampling":
        if entry.get("name") not in FLOW_SAMPLERS:
            raise WeightsError(f"{where}: sampler {entry.get('name')!r} is not a flow-Euler sampler ({', '.join(FLOW_SAMPLERS)})")
        return cls(float(entry["args"]["sigma_min"]), {**entry.get("params", {}), **overrides})

    def sample(self, velocity, noise: Tensor, cond: Tensor, progress: Optional[Progress], stage: str) -> Tensor:
        p = self.params
        return FlowEulerSampler(self.sigma_min).sample(
            velocity, noise, cond, torch.zeros_like(cond), int(p.get("steps", 50)), float(p.get("rescale_t", 1.0)),
            float(p.get("cfg_strength", 0.0)), tuple(p.get("cfg_interval", (0.0, 1.0))), progress, stage)


def trellis_input_image(rgb_over_white: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 composited over white + (H, W) uint8 alpha -> (518, 518, 3) uint8, as TRELLIS preprocesses an
    RGBA image: straight colours recovered, cropped to the alpha > 0.8 box x 1.2, Lanczos, premultiplied (black)."""
    a = alpha.astype(np.float32)[..., None] / 255
    straight = (rgb_over_white.astype(np.float32) / 255 - (1 - a)) / np.maximum(a, 1e-6)
    rgba = np.dstack([(np.clip(straight, 0, 1) * 255).round().astype(np.uint8), alpha])
    im = Image.fromarray(rgba, "RGBA").crop(crop_box_from_alpha(alpha))
    arr = np.asarray(im.resize((INPUT_SIZE, INPUT_SIZE), Image.Resampling.LANCZOS)).astype(np.float32) / 255
    return (arr[..., :3] * arr[..., 3:4] * 255).astype(np.uint8)


@dataclass
class TrellisResult:
    gaussians: GVFGaussians            # TRELLIS object space
    voxels: int
    timings: dict[str, float] = field(default_factory=dict)


class TrellisImageTo3D:
    def __init__(self, networks: dict, decoder: GaussianDecoder, encoder: DinoV2Features, samplers: dict[str, FlowSampling],
                 slat_mean: Tensor, slat_std: Tensor, sources: Optional[dict] = None):
        self.ss_flow = networks["sparse_structure_flow_model"].eval()
        self.ss_decoder = networks["sparse_structure_decoder"].eval()
        self.slat_flow = networks["slat_flow_model"].eval()
        self.decoder = decoder.eval()
        self.encoder = encoder
        self.samplers = samplers
        self.slat_mean, self.slat_std = slat_mean, slat_std
        self.sources = sources or {}
        self._graphed_structure_flow: Optional[GraphedCall] = None
        if self.device.type == "cuda":
            self._half_torso()

    def _half_torso(self) -> None:
        """Half-precision weights for the networks' trunks, as the published use_fp16 models hold them; the rest runs
        under fp16 autocast (norms in float32)."""
        for trunk in (self.ss_flow.blocks, self.ss_decoder.middle_block, self.ss_decoder.blocks, self.slat_flow.input_blocks,
                      self.slat_flow.blocks, self.slat_flow.out_blocks, self.decoder.blocks):
            trunk.half()

    @property
    def device(self) -> torch.device:
        return self.decoder.out_layer.weight.device

    @classmethod
    def from_folders(cls, trellis: Path, gvf: Path, encoder: DinoV2Features, device="cpu") -> "TrellisImageTo3D":
        trellis, gvf = Path(trellis), Path(gvf)
        pipeline_file = trellis / "pipeline.json"
        if not pipeline_file.is_file():
            raise WeightsError(f"{pipeline_file}: missing (copy the files of {TRELLIS_HUB_REPO} into {trellis})")
        args = json.loads(pipeline_file.read_text())["args"]
        models = args["models"]
        networks, sources = {}, {}
        for key, cls_ in NETWORKS.items():
            if key not in models:
                raise WeightsError(f"{pipeline_file}: no '{key}' in args.models")
            config, weights = trellis / f"{models[key]}.json", trellis / f"{models[key]}.safetensors"
            for p in (config, weights):
                if not p.is_file():
                    raise WeightsError(f"{p}: missing (named by {pipeline_file} for {key})")
            net = cls_(json.loads(config.read_text())["args"])
            networks[key] = load_strict(net, read_state_dict(weights), weights).to(device)
            sources[key] = str(weights)
        decoder_config = trellis / f"{models[GAUSSIAN_DECODER_CONFIG]}.json"
        if not decoder_config.is_file():
            raise WeightsError(f"{decoder_config}: missing (the Gaussian decoder's config, named by {pipeline_file})")
        dargs = json.loads(decoder_config.read_text())["args"]
        dargs["representation_config"] = {**dargs["representation_config"], "num_gaussians": 8}   # as GVF loads it
        decoder = GaussianDecoder(dargs)
        ckpt = existing_weight_file(gvf, GAUSSIAN_DECODER_FILE)
        if ckpt is None:
            raise WeightsError(f"{gvf / (GAUSSIAN_DECODER_FILE + '.pt')}: missing (GVF's Gaussian decoder checkpoint)")
        state = rename_gvf_static_vae_keys(read_state_dict(ckpt))
        state.setdefault("offset_perturbation", decoder.offset_perturbation)   # the published loader is not strict here
        decoder = load_strict(decoder, state, ckpt).to(device)
        sources["gaussian_decoder"] = str(ckpt)
        samplers = {k: FlowSampling.from_pipeline(args[k], GVF_SAMPLER_OVERRIDES[k], f"{pipeline_file} {k}")
                    for k in GVF_SAMPLER_OVERRIDES}
        norm = args["slat_normalization"]
        return cls(networks, decoder, encoder, samplers, torch.tensor(norm["mean"]), torch.tensor(norm["std"]), sources)

    def _autocast(self):
        return torch.autocast("cuda", torch.float16) if self.device.type == "cuda" else contextlib.nullcontext()

    @torch.no_grad()
    def run(self, image: np.ndarray, seed: int = 0, progress: Optional[Progress] = None) -> TrellisResult:
        """image (518, 518, 3) uint8 from trellis_input_image -> canonical Gaussians."""
        clock = StageClock(self.device)
        generator = torch.Generator().manual_seed(seed)
        cond = self.condition(image)
        clock.lap("trellis_condition")
        coords = self.sample_structure(cond, generator, progress)
        if len(coords) == 0:
            raise ValueError("TRELLIS produced an empty structure for this frame (no occupied voxel); "
                               "try another seed or check the frame's mask")
        clock.lap("trellis_structure")
        slat = self.sample_latent(coords, cond, generator, progress)
        clock.lap("trellis_latent")
        gaussians = self.decode(slat)
        clock.lap("trellis_decode")
        return TrellisResult(gaussians, len(coords), clock.timings)

    def condition(self, image: np.ndarray) -> Tensor:
        """(518, 518, 3) uint8 -> (1, 1374, C) image tokens on the pipeline's device."""
        return self.encoder.condition(image[None]).to(self.device)

    @torch.no_grad()
    def sample_structure(self, cond: Tensor, generator: torch.Generator, progress: Optional[Progress] = None) -> Tensor:
        """-> occupied voxels (M, 4) int32 [0, x, y, z] of the decoder's grid."""
        cfg = self.ss_flow.config
        noise = torch.randn(1, cfg.in_channels, cfg.resolution, cfg.resolution, cfg.resolution, generator=generator)
        with self._autocast():
            z = self.samplers["sparse_structure_sampler"].sample(self._structure_flow(), noise.to(self.device), cond,
                                                                 progress, "structure")
            return torch.argwhere(self.ss_decoder(z) > 0)[:, [0, 2, 3, 4]].int()

    def _structure_flow(self):
        """The sparse-structure flow as its sampler calls it. On CUDA it is replayed from CUDA graphs (one per batch:
        guided and not), kept for the pipeline's later shots: eagerly, its 24 blocks launch kernels for longer than
        the GPU takes to run them. The graphs replay the same kernels, so the result is the same."""
        if self.device.type != "cuda":
            return self.ss_flow
        if self._graphed_structure_flow is None:
            self._graphed_structure_flow = GraphedCall(self.ss_flow)
        return self._graphed_structure_flow

    @torch.no_grad()
    def sample_latent(self, coords: Tensor, cond: Tensor, generator: torch.Generator,
                      progress: Optional[Progress] = None) -> SparseTensor:
        """coords (M, 4) -> the structured latent (M, 8) on those voxels, de-normalised."""
        n, channels = coords.shape[0], self.slat_flow.config.in_channels
        noise = torch.randn(n, channels, generator=generator).to(cond.device)
        single = SparseTensor.from_coords(noise, coords, 1)
        second = coords.clone()
        second[:, 0] += 1
        doubled = SparseTensor.from_coords(torch.cat([noise, noise]), torch.cat([coords, second]), 2)

        def velocity(feats: Tensor, t: Tensor, c: Tensor) -> Tensor:
            x = single if feats.shape[0] == n else doubled
            return self.slat_flow(x.replace(feats), t, c).feats

        with self._autocast():
            feats = self.samplers["slat_sampler"].sample(velocity, noise, cond, progress, "latent")
        feats = feats * self.slat_std.to(feats) + self.slat_mean.to(feats)
        return single.replace(feats)

    @torch.no_grad()
    def decode(self, slat: SparseTensor) -> GVFGaussians:
        with self._autocast():
            out = self.decoder(slat)
        return self.decoder.to_gaussians(out)[0]
