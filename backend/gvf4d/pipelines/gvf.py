"""The GVF engine: canonical Gaussians + frame features -> sampled variation field -> per-frame Gaussians.

    conditions  4096 farthest-point-sampled canonical rows, normalised by the static mean/std (DiT context);
                512 farthest-point-sampled positions (the latent tokens' positional embedding)
    sampling    DPM-Solver++ (order 2) over the v-prediction DiT with the three-way guidance, latent
                (1, T, 512, 16), then de-normalised by the deformation mean/std
    decoding    the motion VAE turns the latent into a 14-channel delta for every canonical Gaussian and frame
    applying    deltas added in raw parameter space (GVFGaussians.apply_deltas)

Shots longer than the model's clips (its motion VAE's `num_timesteps`, 32 frames as published) are sampled in
overlapping windows of that length, fused at every network evaluation (samplers/windows.py, docs/long_shots.md),
several windows per DiT call as memory allows, and decoded window by window into tracks in host memory, so the
decode's GPU memory does not grow with the shot's length. Shots of at most one clip run as published.

CUDA graphs are captured for network calls of at most one window (a clip with its guidance branches) and kept with
the engine; a call of several windows runs eagerly (its GPU work hides the launches), so no graph holds the
batched conditioning of a long shot and a warm engine keeps one window's graphs whatever the shots' lengths.
"""
from __future__ import annotations

import contextlib
import json
import math
import time
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
from ..samplers import DiscreteVPSchedule, DPMSolverPP, TemporalWindows, ThreeWayGuidance, WindowedNoise


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
WINDOW_MEMORY_SHARE = 0.5           # long shots: the windows of one DiT call take at most this share of free memory


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
    window_frames: Optional[int] = None      # long shots: frames per window (None: the model's clip length)
    window_overlap: Optional[int] = None     # long shots: least frames shared by neighbouring windows (None: 1/4)
    windows_per_call: Optional[int] = None   # long shots: windows per DiT call (None: as many as memory allows)


@dataclass
class GVFRun:
    animated: AnimatedGaussians            # on the engine's device; a long shot's tracks in host memory
    network_evaluations: int
    timings: dict[str, float] = field(default_factory=dict)
    windows: Optional[dict] = None         # a long shot's windows: frames, starts, per_call, conditioning


def time_left(started: float, fraction: float) -> str:
    """An estimate of the time left from the time since `started` (time.perf_counter) and the fraction done,
    rounded so that it changes every few seconds: "about 40 s left", "about 3 min left"."""
    if fraction <= 0:
        return "estimating time left"
    if fraction >= 1:
        return "done"
    seconds = (time.perf_counter() - started) * (1 - fraction) / fraction
    if seconds < 60:
        return f"about {5 * math.ceil(seconds / 5)} s left"
    return f"about {math.ceil(seconds / 60)} min left"


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

    def window_frames(self, settings: GVFSettings) -> int:
        """Frames per window of a long shot: the setting, else the clip length the model was trained on."""
        return settings.window_frames or self.vae.config.num_timesteps

    @torch.no_grad()
    def sample_latent(self, cond: dict[str, Tensor], num_frames: int, settings: GVFSettings,
                      progress: Optional[Progress] = None) -> tuple[Tensor, int]:
        """-> de-normalised latent (T, 512, 16) and the number of network evaluations. A shot longer than a
        window is sampled in windows (`sample_windows`)."""
        if num_frames > self.window_frames(settings):
            return self.sample_windows(cond, num_frames, settings, progress)[:2]
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

    @torch.no_grad()
    def sample_windows(self, cond: dict[str, Tensor], num_frames: int, settings: GVFSettings,
                       progress: Optional[Progress] = None) -> tuple[Tensor, int, dict]:
        """A long shot's latent: DPM-Solver++ on the whole shot's latent (1, T, 512, 16), its noise predicted in
        overlapping windows (samplers/windows.py), `windows_per_call` of them batched in one DiT call with the
        guidance's branches. -> de-normalised latent (T, 512, 16), network evaluations, the windows' record
        (frames, starts, per_call, conditioning kept or recomputed)."""
        cfg = self.dit.config
        length = self.window_frames(settings)
        overlap = settings.window_overlap if settings.window_overlap is not None else max(1, length // 4)
        fewest = TemporalWindows.cover(num_frames, length, overlap)
        per_call, keep_conditions = self._windows_per_call(fewest.count, length, cond, settings)
        calls = math.ceil(fewest.count / per_call)
        per_call = math.ceil(fewest.count / calls)      # the same number in every call: one CUDA graph
        windows = TemporalWindows.cover(num_frames, length, overlap, multiple_of=per_call)
        gen = torch.Generator(device=self.device).manual_seed(settings.seed)
        noise = torch.randn((1, num_frames, cfg.resolution, cfg.in_channels), generator=gen, device=self.device)
        network = self._network(settings.precision, settings.cuda_graphs and per_call == 1)
        features = windows.gather(cond["cond_images"])                     # (W, L, tokens, C)

        def guidance(first: int, last: int) -> ThreeWayGuidance:
            batch = last - first
            batch_cond = {"cond_images": features[first:last],
                          "static_latent": cond["static_latent"].expand(batch, -1, -1),
                          "deformation_position_xyz": cond["deformation_position_xyz"].expand(batch, -1, -1)}
            return ThreeWayGuidance(network, self.schedule, batch_cond, settings.guidance_scale,
                                    settings.guidance_scale2, prepare=self._conditioner(settings.precision))
        kept = {first: guidance(first, min(first + per_call, windows.count))
                for first in range(0, windows.count, per_call)} if keep_conditions else {}

        def window_noise(first: int, last: int, x: Tensor, t: Tensor) -> Tensor:
            return (kept.get(first) or guidance(first, last)).noise(x, t)
        started = time.perf_counter()
        label = f"sampling {windows.count} windows of {length} frames, {per_call} per call"
        x, stats = DPMSolverPP(self.schedule).sample(
            WindowedNoise(windows, window_noise, per_call), noise, steps=settings.steps, t_start=1.0, t_end=1e-3,
            order=2, method=settings.method,
            progress=(lambda f: progress(f"{label} ({time_left(started, f)})", f)) if progress else None)
        latent = x.float() * self.stats["deformation_std"] + self.stats["deformation_mean"]
        record = {**windows.describe(), "per_call": per_call,
                  "conditioning": "kept" if keep_conditions else "recomputed per call"}
        return latent[0], stats.network_evaluations, record

    def _windows_per_call(self, count: int, length: int, cond: dict[str, Tensor],
                          settings: GVFSettings) -> tuple[int, bool]:
        """How many of `count` windows one DiT call takes, and whether every call's conditioning (the blocks' image
        keys and values, the largest part of a window's memory) is computed once and kept for the whole run, or
        recomputed at each evaluation. Off CUDA: all windows, kept. On CUDA: the setting, else as many as an
        estimate of their memory fits in WINDOW_MEMORY_SHARE of the free memory; kept while all calls' fit too. A
        call of one window is replayed from a CUDA graph, which holds a copy of its conditioning; a call of several
        runs eagerly (module docstring)."""
        cfg = self.dit.config
        if self.device.type != "cuda":
            return settings.windows_per_call or count, True
        element = 4 if self._half_weights(settings.precision) is None else 2
        branches = 1 if settings.guidance_scale == settings.guidance_scale2 == 1.0 else 3
        tokens = cond["cond_images"].shape[2]
        conditioning = cfg.num_blocks * 2 * length * tokens * cfg.model_channels * element
        activations = 16 * branches * length * cfg.resolution * cfg.model_channels * element
        budget = WINDOW_MEMORY_SHARE * torch.cuda.mem_get_info(self.device)[0]
        per_call = settings.windows_per_call or max(1, min(count, int(budget // (conditioning + activations))))
        graph_copy = conditioning if per_call == 1 and element == 2 and settings.cuda_graphs else 0
        return per_call, count * conditioning + per_call * activations + graph_copy <= budget

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
        kernels are faster (docs/benchmarks.md). cuda_graphs is False for calls of several windows (module
        docstring). Cast the weights (this call) before computing the condition."""
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

    @torch.no_grad()
    def decode_windows(self, latent: Tensor, canonical: GVFGaussians, settings: GVFSettings,
                       progress: Optional[Progress] = None) -> AnimatedGaussians:
        """latent (T, 512, 16) of a long shot -> the animated splat, its tracks in host memory, decoded and
        applied one window of L frames at a time (the motion VAE decodes every frame on its own, so this is the
        whole shot's decode). On the device: the latent, the canonical rows and one window's context, deltas
        (L, N, 14) and tracks (L, N, 14), whatever T. Every window is L frames (the last overlaps the one before)
        so the decoder's CUDA graph for L frames serves every window of every shot."""
        T, L = latent.shape[0], min(self.window_frames(settings), latent.shape[0])
        on_device = canonical.to(self.device)
        rows = on_device.rows()
        starts = [*range(0, T - L, L), T - L]
        tracks: dict[str, Tensor] = {}
        done, started = 0, time.perf_counter()
        for k, start in enumerate(starts):
            window = on_device.apply_deltas(self.decode_rows(latent[start:start + L], rows, settings))
            for name in AnimatedGaussians.TRACKS:
                track = getattr(window, name)
                if name not in tracks:
                    tracks[name] = torch.empty((T, *track.shape[1:]), dtype=track.dtype)
                tracks[name][done:start + L] = track[done - start:]        # frames before `done` are written
            done = start + L
            if progress:
                fraction = (k + 1) / len(starts)
                progress(f"decode window {k + 1}/{len(starts)} ({time_left(started, fraction)})", fraction)
        return AnimatedGaussians(canonical=on_device.to_gaussians().to("cpu"), **tracks)

    def run(self, canonical: GVFGaussians, frame_features: Tensor, settings: GVFSettings,
            progress: Optional[Progress] = None) -> GVFRun:
        """frame_features (T, L, C) -> the animated splat. A shot of at most one window: as published, on the
        device; longer: sampled in windows and decoded window by window into host memory."""
        clock = StageClock(self.device)
        cond = self.conditions(canonical, frame_features)
        clock.lap("conditions")
        num_frames = frame_features.shape[0]
        if num_frames > self.window_frames(settings):
            latent, nfe, windows = self.sample_windows(cond, num_frames, settings, progress)
            clock.lap("sampling")
            animated = self.decode_windows(latent, canonical, settings, progress)
            clock.lap("decode")
            return GVFRun(animated=animated, network_evaluations=nfe, timings=clock.timings, windows=windows)
        latent, nfe = self.sample_latent(cond, num_frames, settings, progress)
        clock.lap("sampling")
        deltas = self.decode(latent, canonical, settings)
        clock.lap("decode")
        animated = canonical.to(self.device).apply_deltas(deltas)
        clock.lap("apply")
        return GVFRun(animated=animated, network_evaluations=nfe, timings=clock.timings)

    def describe(self) -> dict:
        return {"name": "gvf", "checkpoints": self.checkpoints,
                "dit": asdict(self.dit.config), "motion_vae": asdict(self.vae.config)}
