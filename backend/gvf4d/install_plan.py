"""What `tools/install.sh` installs on this machine: the torch build that fits the NVIDIA driver (a CUDA build from
PyTorch's index, or the CPU build), gsplat, spconv's CUDA build when one fits, and flash-attn on request; the exact
versions are the pins of requirements/cuda.txt and requirements/cpu.txt.

Pure logic over `nvidia-smi`'s report and the pin files (standard library only: the script runs it before torch is
installed). A CUDA build runs when the driver is at least the one its CUDA toolkit was released with (NVIDIA's CUDA
release notes, "CUDA Toolkit and Corresponding Driver Versions", Linux x86-64): minor-version compatibility would
admit older 12.x drivers, but code compiled at run time (Triton's kernels, the NVRTC kernel) needs the newer driver.

    PYTHONPATH=backend python3 -m gvf4d.install_plan [--cuda | --cpu] [--flash-attn]   -> shell assignments
"""
from __future__ import annotations

import argparse
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

# CUDA toolkit version -> the oldest Linux x86-64 driver it was released for
CUDA_DRIVER_MINIMUMS: dict[tuple[int, int], tuple[int, ...]] = {
    (13, 0): (580, 65, 6),
    (12, 9): (575, 51, 3),
    (12, 8): (570, 26),
    (12, 6): (560, 28, 3),
    (12, 4): (550, 54, 14),
    (12, 1): (530, 30, 2),
    (12, 0): (525, 60, 13),
    (11, 8): (520, 61, 5),
    (11, 4): (470, 42, 1),
}
# the CUDA builds of the pinned torch on PyTorch's index (https://download.pytorch.org/whl/cuXYZ), newest first
TORCH_CUDA_BUILDS: tuple[tuple[int, int], ...] = ((13, 0), (12, 8), (12, 6))
TORCH_INDEX = "https://download.pytorch.org/whl/"
REQUIREMENTS = Path(__file__).resolve().parents[2] / "requirements"


class InstallPlanError(RuntimeError):
    pass


@dataclass(frozen=True)
class NvidiaDriver:
    version_text: str                 # "580.159.03", as nvidia-smi prints it
    gpus: tuple[str, ...]             # the GPU names nvidia-smi lists

    @property
    def version(self) -> tuple[int, ...]:
        """(580, 159, 3): comparable with CUDA_DRIVER_MINIMUMS."""
        return tuple(int(p) for p in self.version_text.split("."))

    def runs(self, cuda: tuple[int, int]) -> bool:
        return self.version >= CUDA_DRIVER_MINIMUMS[cuda]

    @property
    def newest_cuda(self) -> Optional[tuple[int, int]]:
        """The newest CUDA toolkit of the table this driver runs (None: older than all of them)."""
        return max((c for c in CUDA_DRIVER_MINIMUMS if self.runs(c)), default=None)


def parse_nvidia_smi(text: str) -> Optional[NvidiaDriver]:
    """`nvidia-smi`'s plain report -> the driver and GPUs, or None when it reports no working driver (its own failure
    message, an empty output)."""
    m = re.search(r"Driver Version:\s*(\d+(?:\.\d+)+)", text)
    if not m:
        return None
    gpus = tuple(g.strip() for g in re.findall(r"^\|\s+\d+\s+(.+?)\s{2,}(?:On|Off)\s+\|", text, re.M))
    return NvidiaDriver(m.group(1), gpus)


def read_nvidia_smi() -> Optional[str]:
    """nvidia-smi's output, or None where it is missing or fails (no driver loaded)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        r = subprocess.run([exe], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return r.stdout if r.returncode == 0 else None


def read_pins(path: Path) -> dict[str, str]:
    """A requirements file's `name==version` lines -> {name: version}, in file order."""
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            if not sep:
                raise InstallPlanError(f"{path}: {line!r} is not an exact pin (name==version)")
            pins[name.strip().lower()] = version.strip()
    return pins


def cuda_tag(cuda: tuple[int, int]) -> str:
    return f"cu{cuda[0]}{cuda[1]}"


def _spconv_cuda(name: str) -> tuple[int, int]:
    digits = name.removeprefix("spconv-cu")
    return int(digits[:-1]), int(digits[-1])


@dataclass
class InstallPlan:
    device: str                              # "cuda" | "cpu"
    torch: str                               # "torch==2.13.0+cu128"
    torch_index_url: str                     # PyTorch's index for that build
    torch_cuda: Optional[str] = None         # "12.8", as torch.version.cuda says; None on CPU
    packages: list[str] = field(default_factory=list)   # installed after the CPU stack: gsplat, spconv, flash-attn
    #                                                     (flash-attn last: built without isolation, on what is before)
    notes: list[str] = field(default_factory=list)      # why, for the person installing

    def shell(self) -> str:
        """The plan as shell assignments for tools/install.sh."""
        values = {"GVF4D_DEVICE": self.device, "TORCH_SPEC": self.torch, "TORCH_INDEX_URL": self.torch_index_url,
                  "TORCH_CUDA": self.torch_cuda or "", "CUDA_PACKAGES": " ".join(self.packages)}
        return "".join(f"{k}={shlex.quote(v)}\n" for k, v in values.items())


def plan_install(nvidia_smi: Optional[str], device: Optional[str] = None, flash_attn: bool = False,
                 requirements: Path = REQUIREMENTS) -> InstallPlan:
    """device None: CUDA where nvidia-smi reports a driver that runs a CUDA build of torch, else the CPU stack;
    "cuda" requires that driver (InstallPlanError saying why not); "cpu" the CPU stack whatever the machine."""
    torch_version = read_pins(requirements / "cpu.txt")["torch"]
    cpu = InstallPlan("cpu", f"torch=={torch_version}+cpu", TORCH_INDEX + "cpu")
    driver = parse_nvidia_smi(nvidia_smi) if nvidia_smi else None
    if device == "cpu":
        if flash_attn:
            raise InstallPlanError("--flash-attn needs --cuda: flash-attn runs on NVIDIA GPUs only")
        return cpu
    if driver is None:
        if device == "cuda":
            raise InstallPlanError("--cuda: nvidia-smi reports no NVIDIA driver; install the driver, or use --cpu")
        cpu.notes.append("no NVIDIA driver found (nvidia-smi): installing the CPU stack")
        return cpu
    builds = [c for c in TORCH_CUDA_BUILDS if driver.runs(c)]
    if not builds:
        oldest = TORCH_CUDA_BUILDS[-1]
        why = (f"driver {driver.version_text} is older than CUDA {oldest[0]}.{oldest[1]}'s "
               f"({'.'.join(map(str, CUDA_DRIVER_MINIMUMS[oldest]))}), the oldest CUDA build of torch {torch_version}")
        if device == "cuda":
            raise InstallPlanError(f"--cuda: {why}; update the NVIDIA driver, or use --cpu")
        cpu.notes.append(f"{why}: installing the CPU stack (update the driver for the GPU path)")
        return cpu

    pins = read_pins(requirements / "cuda.txt")
    if pins["torch"] != torch_version:
        raise InstallPlanError(f"requirements/cuda.txt pins torch=={pins['torch']}, requirements/cpu.txt "
                               f"torch=={torch_version}: they must agree")
    cuda = builds[0]
    tag = cuda_tag(cuda)
    plan = InstallPlan("cuda", f"torch=={torch_version}+{tag}", TORCH_INDEX + tag, f"{cuda[0]}.{cuda[1]}",
                       [f"gsplat=={pins['gsplat']}"])
    plan.notes.append(f"driver {driver.version_text} ({', '.join(driver.gpus) or 'GPU'}) runs CUDA up to "
                      f"{'.'.join(map(str, driver.newest_cuda))}: torch {torch_version}+{tag}")
    spconv = [name for name in pins if name.startswith("spconv-cu") and driver.runs(_spconv_cuda(name))]
    if spconv:
        plan.packages.append(f"{spconv[0]}=={pins[spconv[0]]}")
    else:
        plan.notes.append("no CUDA build of spconv runs on this driver: the PyTorch sparse convolution runs instead")
    if flash_attn:
        plan.packages += [f"{name}=={pins[name]}" for name in ("psutil", "wheel", "flash-attn")]
    return plan


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m gvf4d.install_plan", description=__doc__.split("\n\n")[0])
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--cuda", dest="device", action="store_const", const="cuda")
    kind.add_argument("--cpu", dest="device", action="store_const", const="cpu")
    p.add_argument("--flash-attn", action="store_true")
    p.add_argument("--nvidia-smi-output", type=Path, help="read this file instead of running nvidia-smi")
    args = p.parse_args(argv)
    report = args.nvidia_smi_output.read_text() if args.nvidia_smi_output else read_nvidia_smi()
    try:
        plan = plan_install(report, args.device, args.flash_attn)
    except InstallPlanError as e:
        print(f"install: {e}", file=sys.stderr)
        return 2
    for note in plan.notes:
        print(f"install: {note}", file=sys.stderr)
    sys.stdout.write(plan.shell())
    return 0


if __name__ == "__main__":
    sys.exit(main())
