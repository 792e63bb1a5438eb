"""`gvf4d doctor`: what this machine runs the backend with, one check per row.

GPU, NVIDIA driver and the CUDA it runs, torch and its CUDA build, the optional kernels (gsplat, the Triton kernels,
spconv, flash-attn, the NVRTC kernel) as the backend's own usability checks see them, the weights folder, and the
data folder's free space. `warm` runs a small forward of each fused kernel and of gsplat on CUDA, so that Triton's
and gsplat's compile caches (on disk) are filled before the artist's first shot.

A check's status: "ok", "warn" (runs, but slower or without something), "off" (an optional part that is absent or
unusable here; its PyTorch path runs) or "fail" (the backend cannot run: only then does the command exit non-zero).
"""
from __future__ import annotations

import importlib.metadata
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from .install_plan import CUDA_DRIVER_MINIMUMS, parse_nvidia_smi, read_nvidia_smi

LOW_DISK_BYTES = 20 * 2**30      # the published weights take about 10 GB; results and stage caches need room too


@dataclass
class Check:
    name: str
    status: str                   # "ok" | "warn" | "off" | "fail"
    detail: str
    data: dict[str, Any] = field(default_factory=dict)


def _distribution(prefix: str) -> Optional[str]:
    """'name version' of the installed distribution whose name is `prefix` or starts with `prefix-` (spconv-cu126)."""
    for dist in importlib.metadata.distributions():
        name = (dist.metadata["Name"] or "").lower()
        if name == prefix or name.startswith(prefix + "-"):
            return f"{name} {dist.version}"
    return None


def check_python() -> Check:
    version = platform.python_version()
    ok = sys.version_info >= (3, 11)
    return Check("python", "ok" if ok else "fail", f"{version} ({platform.system()} {platform.machine()})"
                 + ("" if ok else "; Python 3.11+ is required"), {"version": version})


def check_torch() -> Check:
    try:
        import torch
    except Exception as e:  # noqa: BLE001 — a broken install raises anything; it is what the row reports
        return Check("torch", "fail", f"cannot be imported ({type(e).__name__}: {e}); run tools/install.sh")
    build = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "CPU build"
    return Check("torch", "ok", f"{torch.__version__} ({build})",
                 {"version": torch.__version__, "cuda": torch.version.cuda})


def check_backend_modules() -> Check:
    """The generate pipeline and the service import (every required package is installed and loads)."""
    try:
        import gvf4d.pipelines.generate  # noqa: F401
        import gvf4d.service.app  # noqa: F401
    except Exception as e:  # noqa: BLE001
        return Check("backend", "fail", f"does not import ({type(e).__name__}: {e}); run tools/install.sh")
    return Check("backend", "ok", "the pipelines and the service import")


def check_driver(nvidia_smi: Optional[str]) -> Check:
    import torch
    driver = parse_nvidia_smi(nvidia_smi) if nvidia_smi else None
    if driver is None:
        return Check("driver", "off", "no NVIDIA driver (nvidia-smi missing or failing)")
    newest = driver.newest_cuda
    detail = f"{driver.version_text}, runs CUDA up to {'.'.join(map(str, newest))}" if newest else \
        f"{driver.version_text}, older than every CUDA toolkit this checks"
    data = {"version": driver.version_text, "cuda": ".".join(map(str, newest)) if newest else None}
    if torch.version.cuda:
        needed = tuple(int(p) for p in torch.version.cuda.split(".")[:2])
        minimum = CUDA_DRIVER_MINIMUMS.get(needed)
        if minimum and driver.version < minimum:
            return Check("driver", "warn", f"{detail}; torch's CUDA {torch.version.cuda} build needs "
                         f"{'.'.join(map(str, minimum))}+: update the driver, or run tools/install.sh", data)
    return Check("driver", "ok", detail, data)


def check_gpu() -> Check:
    import torch
    if not torch.cuda.is_available():
        why = "torch is a CPU build" if not torch.version.cuda else "torch sees no CUDA device"
        return Check("gpu", "warn", f"none ({why}): jobs run on the CPU, much slower")
    props = torch.cuda.get_device_properties(0)
    free, total = torch.cuda.mem_get_info(0)
    return Check("gpu", "ok", f"{props.name}, sm_{props.major}{props.minor}, {free / 2**30:.1f} of "
                 f"{total / 2**30:.1f} GiB free" + (f" (+{torch.cuda.device_count() - 1} more)"
                                                    if torch.cuda.device_count() > 1 else ""),
                 {"name": props.name, "capability": [props.major, props.minor], "vram_total": total,
                  "vram_free": free, "count": torch.cuda.device_count()})


def _probe_tensors():
    """Small half-precision (B, L, H, D) tensors on the first GPU, or on the CPU without one."""
    import torch
    device = "cuda" if torch.cuda.is_available() else "cpu"
    q = torch.zeros(1, 64, 16, 32, device=device, dtype=torch.float16)
    return device, q


def check_kernels() -> list[Check]:
    """gsplat, the Triton kernels, the NVRTC kernel, spconv and flash-attn, through the backend's own checks."""
    import torch

    from .kernels.shared_row_attention import shared_row_attention_usable
    from .kernels.small_head_attention import small_head_attention_usable
    from .models.attention import flash_attn_usable
    from .models.sparse import spconv_available
    from .rendering import gsplat_available
    device, q = _probe_tensors()
    no_gpu = device == "cpu"
    rows = []

    version = _distribution("gsplat")
    if gsplat_available():
        rows.append(Check("gsplat", "ok", f"{version}: the CUDA rasterizer (kernels compiled on first use; --warm)"))
    else:
        rows.append(Check("gsplat", "off", ("installed, needs a CUDA GPU" if version else "not installed")
                          + ": the PyTorch rasterizer runs"))

    version = _distribution("triton")
    if small_head_attention_usable(q, q, q):
        rows.append(Check("triton", "ok", f"{version}: the fused attention, norm and GEGLU kernels run"))
    else:
        why = "needs a CUDA GPU" if no_gpu else f"{version} cannot build the kernels" if version else "not installed"
        rows.append(Check("triton", "off", f"{why}: the fused kernels' PyTorch paths run"))

    rows16 = torch.zeros(1, 64, 16, device=device, dtype=torch.float16)
    if shared_row_attention_usable(rows16, rows16):
        rows.append(Check("nvrtc_kernel", "ok", "the DiT's shared-row attention is built with NVRTC"))
    else:
        rows.append(Check("nvrtc_kernel", "off", ("needs a CUDA GPU" if no_gpu else "needs sm_80+ and PyTorch's NVRTC")
                          + ": the Triton or PyTorch path runs"))

    version = _distribution("spconv")
    if not spconv_available():
        rows.append(Check("spconv", "off", "not installed: the PyTorch sparse convolution runs"))
    elif version and "-cu" in version:
        rows.append(Check("spconv", "ok" if not no_gpu else "off",
                          f"{version}: " + ("the sparse convolution on CUDA" if not no_gpu else "needs a CUDA GPU")))
    else:
        rows.append(Check("spconv", "off", f"{version or 'spconv'}: the CPU build (runs on request only, on one "
                                           "thread); install a CUDA build with tools/install.sh --cuda"))

    version = _distribution("flash-attn")
    if flash_attn_usable(q):
        rows.append(Check("flash_attn", "ok", f"{version}: TRELLIS's attention runs on it"))
    else:
        why = "not installed" if not version else "needs a CUDA GPU" if no_gpu else f"{version} does not load"
        rows.append(Check("flash_attn", "off", f"{why}: PyTorch's SDPA runs (tools/install.sh --flash-attn)"))
    return rows


def check_matting() -> Check:
    try:
        import onnxruntime
    except ImportError:
        return Check("matting", "off", "onnxruntime is not installed: --matte model is unavailable")
    providers = onnxruntime.get_available_providers()
    return Check("matting", "ok", f"onnxruntime {onnxruntime.__version__} ({', '.join(providers)})",
                 {"providers": providers})


def check_weights(folder: Optional[Path]) -> Check:
    from .weights_folder import report
    if folder is None:
        return Check("weights", "off", "not checked (give --weights DIR)")
    rows = report(folder)
    missing = [r.name for r in rows if r.status == "missing"]
    absent = [r.name for r in rows if r.status.startswith("absent")]
    present = [r.name for r in rows if r.path is not None]
    data = {"folder": str(folder), "present": present, "missing": missing, "absent": absent}
    if missing:
        return Check("weights", "warn", f"{folder}: missing {', '.join(missing)} (the gvf engine needs them; "
                     f"`gvf4d weights --weights {folder} --download`)", data)
    return Check("weights", "ok", f"{folder}: {', '.join(present)} present"
                 + (f"; absent (optional): {', '.join(absent)}" if absent else ""), data)


def check_data_folder(folder: Path) -> Check:
    """Free space where the data folder is (or would be created), and that a file can be written there."""
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    free = shutil.disk_usage(existing).free
    data = {"folder": str(folder), "free": free}
    try:
        if not existing.is_dir():
            raise NotADirectoryError(f"{existing} is a file")
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as e:
        return Check("data_folder", "fail", f"{folder}: cannot be written ({e}); jobs, results and the lock file "
                     "go there: set GVF4D_HOME or --data", data)
    detail = f"{folder}: {free / 2**30:.1f} GiB free"
    if free < LOW_DISK_BYTES:
        return Check("data_folder", "warn", f"{detail} (under {LOW_DISK_BYTES // 2**30} GiB: weights, results and the "
                     "stage cache may not fit)", data)
    return Check("data_folder", "ok", detail, data)


def _warm_small_head_attention(device):
    import torch

    from .kernels.small_head_attention import small_head_attention
    q = torch.randn(1, 256, 16, 32, device=device, dtype=torch.float16)
    gain = torch.ones(16, 32, device=device, dtype=torch.float16)
    for keys in (32, 512, 1370):             # the DiT's temporal, spatial and image attention: each its own tiles
        kv = torch.randn(1, keys, 16, 32, device=device, dtype=torch.float16)
        small_head_attention(q, kv, kv, fused=True)
        small_head_attention(q, kv, kv, gain, gain, fused=True)


def _warm_head_summed_attention(device):
    import torch

    from .kernels.head_summed_attention import head_summed_attention
    q = torch.randn(1, 256, 4, 64, device=device, dtype=torch.float16)
    k = torch.randn(1, 2, 128, 4, 64, device=device, dtype=torch.float16)
    v = torch.randn(1, 2, 128, 4, 14, device=device, dtype=torch.float16)
    head_summed_attention(q, k, v, 0.125, fused=True)


def _warm_norms_and_geglu(device):
    import torch

    from .kernels.geglu import geglu
    from .kernels.multihead_rms_norm import multihead_rms_norm
    from .kernels.residual_layer_norm import residual_layer_norm
    x = torch.randn(1, 2, 64, 512, device=device, dtype=torch.float16)
    multihead_rms_norm(x.view(1, 2, 64, 16, 32), torch.ones(16, 32, device=device), fused=True)
    residual_layer_norm(x, x, None, torch.ones(512, device=device, dtype=torch.float16),
                        torch.zeros(512, device=device, dtype=torch.float16), 1e-6, fused=True)
    geglu(torch.randn(128, 2 * 512, device=device, dtype=torch.float16), fused=True)


def _warm_shared_row_attention(device):
    import torch

    from .kernels.shared_row_attention import shared_row_attention
    rows = torch.zeros(1, 512, 16, device=device, dtype=torch.float16)
    shared_row_attention(torch.zeros(1, 256, 16, device=device, dtype=torch.float16), rows, 14, 0.25, fused=True)


def _warm_gsplat(device):
    import torch

    from .rendering import orbit_cameras, rasterize
    n = 256
    means = torch.randn(n, 3, device=device) * 0.2
    quats = torch.nn.functional.normalize(torch.randn(n, 4, device=device), dim=-1)
    scales = torch.full((n, 3), 0.02, device=device)
    cams = orbit_cameras([0.0, 90.0], 0.0, width=64, height=64).to(device)
    rasterize(means, quats, scales, torch.full((n,), 0.5, device=device), torch.rand(n, 3, device=device),
              cams.viewmats, cams.Ks, 64, 64, backend="gsplat")


WARMUPS: dict[str, Callable] = {
    "small_head_attention": _warm_small_head_attention,
    "head_summed_attention": _warm_head_summed_attention,
    "norms_geglu": _warm_norms_and_geglu,
    "shared_row_attention": _warm_shared_row_attention,
    "gsplat": _warm_gsplat,
}


def warm_kernels() -> list[Check]:
    """Runs each warm-up on the first GPU (compiling what is not in the caches yet); one row each."""
    import torch
    if not torch.cuda.is_available():
        return [Check("warm", "off", "skipped: no CUDA GPU (nothing is compiled on the CPU)")]
    rows = []
    for name, warm in WARMUPS.items():
        start = time.perf_counter()
        try:
            warm(torch.device("cuda", 0))
            torch.cuda.synchronize()
        except Exception as e:  # noqa: BLE001 — a kernel that cannot compile here is reported, its fallback runs
            rows.append(Check(f"warm:{name}", "warn", f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"))
            continue
        rows.append(Check(f"warm:{name}", "ok", f"ready ({time.perf_counter() - start:.1f} s)"))
    return rows


def run_checks(weights: Optional[Path], data: Path, warm: bool = False,
               nvidia_smi: Optional[str] = None) -> list[Check]:
    """Every check, in the order shown. nvidia_smi: its report (None: run it)."""
    rows = [check_python(), check_torch()]
    if rows[-1].status == "fail":
        return rows + [check_data_folder(data)]
    rows += [check_backend_modules(), check_driver(nvidia_smi if nvidia_smi is not None else read_nvidia_smi()),
             check_gpu()]
    if rows[2].status == "fail":       # the rest goes through the backend's modules
        return rows + [check_data_folder(data)]
    rows += [*check_kernels(), check_matting(), check_weights(weights), check_data_folder(data)]
    if warm:
        rows += warm_kernels()
    return rows


def format_table(rows: list[Check]) -> str:
    width = max(len(r.name) for r in rows)
    return "\n".join(f"  {r.name:<{width}}  {r.status:<4}  {r.detail}" for r in rows)


def to_json(rows: list[Check]) -> dict:
    return {"ok": all(r.status != "fail" for r in rows), "checks": [asdict(r) for r in rows]}
