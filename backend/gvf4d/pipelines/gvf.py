"""The GVF engine: canonical Gaussians + frame features -> sampled variation field -> per-frame Gaussians.

    conditions  4096 farthest-point-sampled canonical rows, normalised by the static mean/std (DiT context);
                512 farthest-point-sampled positions (the latent tokens' positional embedding)
    sampling    DPM-Solver++ (order 2) over the v-prediction DiT with the three-way guidance, latent
                (1, T, 512, 16), then de-normalised by the deformation mean/std
    decoding    the motion VAE turns the latent into a 14-channel delta for every canonical Gaussian and frame
    applying    deltas added in raw parameter space (GVFGaussians.apply_deltas)
"""
from __future__ import annotations

import contextlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Literal, Optional

import torch
from torch import Tensor, nn

from ..kernels.cuda_graph import GraphedCall
from ..kernels.fps import farthest_point_sampling
from ..models.gvf_dit import GVFDiT, GVFDiTConfig
from ..models.motion_vae import MotionVAE, MotionVAEConfig
from ..models.weights import WeightsError, load_strict, read_state_dict, read_tensor, sha256_file
from ..progress import Progress, StageClock
from ..representations import AnimatedGaussians
from ..representations.gvf_gaussians import GVFGaussians
from ..samplers import DiscreteVPSchedule, DPMSolverPP, ThreeWayGuidance


# the published files (model hub repo BwZhang/GaussianVariationFieldDiffusion), looked up in <weights>/gvf/
GVF_FILES = {
    "dit": "ema_diffusion_0.9999_500000",
    "motion_vae": "ema_deformation_0.9999_200000",
    "static_mean": "static_mean",
    "static_std": "static_std",
    "deformation_mean": "deformation_mean",
    "deformation_std": "deformation_std",
}
CONFIG_FILE = "gvf4d_config.json"   # optional, beside them: {"dit": {...}, "motion_vae": {...}} (default: published)
NUM_STATIC_TOKENS = 4096


def identity_stats(latent_channels: int = 16) -> dict[str, Tensor]:
    """Normalisation statistics that change nothing (zero means, unit deviations): for engines on weights that came
    without published statistics (random weights in benchmarks and tests)."""
    return {"static_mean": torch.zeros(14), "static_std": torch.ones(14),
            "deformation_mean": torch.zeros(latent_channels), "deformation_std": torch.ones(latent_channels)}


def existing_weight_file(folder: Path, stem: str) -> Optional[Path]:
    """<stem>.safetensors if present (converted), else <stem>.pt, else None."""
    return next((p for p in (folder / f"{stem}.safetensors", folder / f"{stem}.pt") if p.is_file()), None)


def find_weight_file(folder: Path, stem: str) -> Path:
    path = existing_weight_file(folder, stem)
    if path is not None:
        return path
    raise WeightsError(f"{folder / (stem + '.pt')}: missing (run `gvf4d weights --weights {folder.parent}` to see what "
                       "is present, or `--download` where a network is available)")


@dataclass
class GVFSettings:
    seed: int = 0
    method: Literal["adaptive", "multistep"] = "adaptive"   # the in-the-wild script's choice
    steps: int = 100                                         # multistep only
    guidance_scale: float = 1.0
    guidance_scale2: float = 1.0
    precision: Literal["auto", "fp32", "fp16", "bf16"] = "auto"   # auto: fp16 on CUDA (as published), fp32 on CPU
    decode_chunk: int = 8192
    cuda_graphs: bool = True   # CUDA, half precision: replay the DiT from a CUDA graph (same kernels, less launch cost)


@dataclass
class GVFRun:
    animated: AnimatedGaussians
    deltas: Tensor                         # (T, N, 14)
    network_evaluations: int
    timings: dict[str, float] = field(default_factory=dict)


class GVFEngine:
    def __init__(self, dit: GVFDiT, vae: MotionVAE, stats: dict[str, Tensor], checkpoints: list[dict] | None = None):
        self.dit, self.vae = dit.eval(), vae.eval()
        self.stats = stats
        self.schedule = DiscreteVPSchedule.cosine(1000)
        self._fast: dict = {}      # the DiT's fast calls on CUDA, by cuda_graphs
        self._decoder_context: Optional[GraphedCall] = None    # the motion-VAE decoder's context stack, graphed
        self._float32_weights: dict[int, dict[str, Tensor]] = {}   # CPU copies kept by _cast_weights, by module
        self.checkpoints = checkpoints or []

    @property
    def device(self) -> torch.device:
        return next(self.dit.parameters()).device

    @classmethod
    def from_folder(cls, folder: str | Path, device: str | torch.device = "cpu") -> "GVFEngine":
        folder = Path(folder)
        cfg = json.loads((folder / CONFIG_FILE).read_text()) if (folder / CONFIG_FILE).is_file() else {}
        dit = GVFDiT(GVFDiTConfig.from_dict(cfg.get("dit", {})))
        vae = MotionVAE(MotionVAEConfig.from_dict(cfg.get("motion_vae", {})))
        files = {k: find_weight_file(folder, stem) for k, stem in GVF_FILES.items()}
        load_strict(dit, read_state_dict(files["dit"]), files["dit"])
        load_strict(vae, read_state_dict(files["motion_vae"]), files["motion_vae"])
        stats = {k: read_tensor(files[k]).reshape(-1) for k in ("static_mean", "static_std", "deformation_mean", "deformation_std")}
        for k, n in (("static_mean", 14), ("static_std", 14), ("deformation_mean", dit.config.in_channels),
                     ("deformation_std", dit.config.in_channels)):
            if stats[k].numel() not in (1, n):
                raise WeightsError(f"{files[k]}: expected {n} values, found {stats[k].numel()}")
        checkpoints = [{"name": k, "file": p.name, "sha256": sha256_file(p)} for k, p in files.items()]
        return cls(dit, vae, stats, checkpoints).to(device)

    def to(self, device) -> "GVFEngine":
        self.dit.to(device)
        self.vae.to(device)
        self.stats = {k: v.to(device) for k, v in self.stats.items()}
        return self

    def _autocast(self, precision: str):
        dev = self.device.type
        if precision == "auto":
            precision = "fp16" if dev == "cuda" else "fp32"
        if precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(dev, dtype=torch.float16 if precision == "fp16" else torch.bfloat16)

    def _cast_weights(self, module: nn.Module, probe: Tensor, dtype: torch.dtype,
                      cast: Callable[[torch.dtype], object]) -> bool:
        """Puts module's weights in dtype with cast(dtype), unless probe (one of them) already is; returns whether it
        did. Always from the float32 weights as loaded: the first cast keeps a CPU copy of them, from which a later
        float32 (or other half-precision) job starts, not from rounded values (a warm service runs jobs of any
        precision on the same engine)."""
        if probe.dtype == dtype:
            return False
        saved = self._float32_weights.get(id(module))
        if saved is None:
            self._float32_weights[id(module)] = {k: v.detach().to("cpu", copy=True)
                                                 for k, v in module.state_dict().items()}
        else:
            cast(torch.float32)
            module.load_state_dict(saved)
        if dtype != torch.float32:
            cast(dtype)
        return True

    def _half_weights(self, precision: str) -> Optional[torch.dtype]:
        """The dtype the networks' weights are cast to for this precision: half on CUDA, else None (autocast)."""
        if self.device.type != "cuda":
            return None
        return {"auto": torch.float16, "fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)

    def conditions(self, canonical: GVFGaussians, frame_features: Tensor) -> dict[str, Tensor]:
        """frame_features (T, L, C) -> the DiT's conditioning for one sample (B = 1)."""
        rows = canonical.rows().to(self.device)
        n_tokens = self.dit.config.resolution
        if len(rows) < n_tokens:
            raise ValueError(f"the canonical splat has {len(rows)} Gaussians; the GVF model needs at least {n_tokens}")
        # one greedy run serves both sets: farthest point sampling from the same start picks the same first points
        n_static = min(NUM_STATIC_TOKENS, len(rows))
        order = farthest_point_sampling(rows[None, :, :3], max(n_static, n_tokens))[0]
        static_idx, token_idx = order[:n_static], order[:n_tokens]
        static = (rows[static_idx] - self.stats["static_mean"]) / self.stats["static_std"]
        return {"cond_images": frame_features[None].to(self.device), "static_latent": static[None],
                "deformation_position_xyz": rows[token_idx, :3][None]}

    @torch.no_grad()
    def sample_latent(self, cond: dict[str, Tensor], num_frames: int, settings: GVFSettings,
                      progress: Optional[Progress] = None) -> tuple[Tensor, int]:
        """-> de-normalised latent (T, 512, 16) and the number of network evaluations."""
        cfg = self.dit.config
        gen = torch.Generator(device=self.device).manual_seed(settings.seed)
        noise = torch.randn((1, num_frames, cfg.resolution, cfg.in_channels), generator=gen, device=self.device)
        network = self._network(settings.precision, settings.cuda_graphs)
        guidance = ThreeWayGuidance(network, self.schedule, cond, settings.guidance_scale, settings.guidance_scale2,
                                    prepare=self._conditioner(settings.precision))
        x, stats = DPMSolverPP(self.schedule).sample(
            guidance.noise, noise, steps=settings.steps, t_start=1.0, t_end=1e-3, order=2, method=settings.method,
            progress=(lambda f: progress("sampling", f)) if progress else None)
        latent = x.float() * self.stats["deformation_std"] + self.stats["deformation_mean"]
        return latent[0], stats.network_evaluations

    def _conditioner(self, precision: str):
        """The DiT's conditioning, computed once per sampling run: (batched cond dict) -> the network's keywords."""
        def prepare(cond: dict[str, Tensor]) -> dict:
            with self._autocast(precision):
                condition = self.dit.condition(cond["cond_images"], cond["static_latent"])
            return {"condition": condition, "deformation_position_xyz": cond["deformation_position_xyz"]}
        return prepare

    def _network(self, precision: str, cuda_graphs: bool = True):
        """The DiT's denoising call as the sampler makes it: network(x, t, condition, deformation_position_xyz),
        the condition from `_conditioner`. On CUDA in half precision the weights themselves are cast (once): the
        same rounding as fp16 autocast, without its casts and fp32 activations, and the call is replayed from a
        CUDA graph per input shape, kept with the engine so later jobs reuse it. torch.compile is not used: the fused
        kernels are faster (docs/benchmarks.md). Cast the weights (this call) before computing the condition."""
        half = self._half_weights(precision)
        if self._cast_weights(self.dit, self.dit.input_layer.weight, half or torch.float32, self.dit.to):
            self._fast = {}
        if half is not None:
            if cuda_graphs not in self._fast:
                call = lambda x, t, **cond: self.dit.denoise(x, t, **cond).float()  # noqa: E731
                self._fast[cuda_graphs] = GraphedCall(call) if cuda_graphs else call
            return self._fast[cuda_graphs]

        def run(x, t, **cond):
            with self._autocast(precision):
                return self.dit.denoise(x, t, **cond).float()
        return run

    @torch.no_grad()
    def decode(self, latent: Tensor, canonical: GVFGaussians, settings: GVFSettings) -> Tensor:
        """latent (T, 512, 16) -> deltas (T, N, 14) of the canonical splat's Gaussians (`decode_rows`)."""
        return self.decode_rows(latent, canonical.rows().to(self.device), settings)

    @torch.no_grad()
    def decode_rows(self, latent: Tensor, rows: Tensor, settings: GVFSettings) -> Tensor:
        """latent (T, 512, 16), rows (N, 14) canonical Gaussians -> deltas (T, N, 14). On CUDA in half precision the
        decoder's weights are cast (as the DiT's): no autocast casts, layer norms and residuals in half; with
        cuda_graphs, the decoder's context stack (12 self-attention layers on the latent, then the folded keys and
        values) is replayed from a CUDA graph captured on the first shot of a frame count, since run eagerly its
        kernels wait on the CPU's launches. Elsewhere autocast, as published."""
        half = self._half_weights(settings.precision)
        if self._cast_weights(self.vae, self.vae.proj.weight, half or torch.float32, self.vae.cast_decoder):
            self._decoder_context = None
        if half is None or self.vae.decoder_ff is not None:
            with contextlib.nullcontext() if half else self._autocast(settings.precision):
                return self.vae.decode(latent, rows[None], chunk_size=settings.decode_chunk)[0].float()
        if self._decoder_context is None:
            self._decoder_context = GraphedCall(self.vae.folded_context, max_graphs=2)
        context = (self._decoder_context if settings.cuda_graphs else self.vae.folded_context)(latent)
        return self.vae.decode_folded(context, rows[None], chunk_size=settings.decode_chunk)[0].float()

    def run(self, canonical: GVFGaussians, frame_features: Tensor, settings: GVFSettings,
            progress: Optional[Progress] = None) -> GVFRun:
        clock = StageClock(self.device)
        cond = self.conditions(canonical, frame_features)
        clock.lap("conditions")
        latent, nfe = self.sample_latent(cond, frame_features.shape[0], settings, progress)
        clock.lap("sampling")
        deltas = self.decode(latent, canonical, settings)
        clock.lap("decode")
        animated = canonical.to(self.device).apply_deltas(deltas)
        clock.lap("apply")
        return GVFRun(animated=animated, deltas=deltas, network_evaluations=nfe, timings=clock.timings)

    def describe(self) -> dict:
        return {"name": "gvf", "checkpoints": self.checkpoints,
                "dit": asdict(self.dit.config), "motion_vae": asdict(self.vae.config)}
