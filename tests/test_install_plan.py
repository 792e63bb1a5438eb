"""tools/install.sh's choices (backend/gvf4d/install_plan.py) from nvidia-smi reports: no download, no GPU."""
import subprocess
import sys
from pathlib import Path

import pytest

from gvf4d.install_plan import (CUDA_DRIVER_MINIMUMS, TORCH_CUDA_BUILDS, InstallPlanError, parse_nvidia_smi,
                                plan_install, read_pins)

ROOT = Path(__file__).resolve().parents[1]


def nvidia_smi(driver: str, cuda: str, *gpus: str) -> str:
    """nvidia-smi's plain report (the layout of the 5xx drivers), one table row pair per GPU."""
    rows = "".join(
        f"|   {i}  {name:<28s}  On  |   00000000:{i:02d}:00.0 Off |                    0 |\n"
        f"| N/A   31C    P0             71W /  700W |       1MiB /  81559MiB |      0%      Default |\n"
        "+-----------------------------------------+------------------------+----------------------+\n"
        for i, name in enumerate(gpus))
    return (
        "Tue Dec  2 00:55:01 2025\n"
        "+-----------------------------------------------------------------------------------------+\n"
        f"| NVIDIA-SMI {driver:<22s} Driver Version: {driver:<14s} CUDA Version: {cuda:<9s}|\n"
        "|-----------------------------------------+------------------------+----------------------+\n"
        "| GPU  Name                 Persistence-M | Bus-Id          Disp.A | Volatile Uncorr. ECC |\n"
        "| Fan  Temp   Perf          Pwr:Usage/Cap |           Memory-Usage | GPU-Util  Compute M. |\n"
        "|=========================================+========================+======================|\n"
        + rows +
        "\n+-----------------------------------------------------------------------------------------+\n"
        "| Processes:                                                                              |\n"
        "|  No running processes found                                                             |\n"
        "+-----------------------------------------------------------------------------------------+\n")


# an older driver's layout (470 series): a narrower table
OLD_T4 = """+-----------------------------------------------------------------------------+
| NVIDIA-SMI 470.82.01    Driver Version: 470.82.01    CUDA Version: 11.4     |
|-------------------------------+----------------------+----------------------+
| GPU  Name        Persistence-M| Bus-Id        Disp.A | Volatile Uncorr. ECC |
|===============================+======================+======================|
|   0  Tesla T4            Off  | 00000000:00:04.0 Off |                    0 |
| N/A   36C    P8     9W /  70W |      0MiB / 15109MiB |      0%      Default |
+-------------------------------+----------------------+----------------------+
"""
# as seen on an H200 machine
H200 = """Wed Dec  2 01:08:02 2026
+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI 580.159.04             Driver Version: 580.159.04     CUDA Version: 13.0     |
+-----------------------------------------+------------------------+----------------------+
| GPU  Name                 Persistence-M | Bus-Id          Disp.A | Volatile Uncorr. ECC |
| Fan  Temp   Perf          Pwr:Usage/Cap |           Memory-Usage | GPU-Util  Compute M. |
|                                         |                        |               MIG M. |
|=========================================+========================+======================|
|   0  NVIDIA H200                    On  |   00000000:00:06.0 Off |                    0 |
| N/A   34C    P0             77W /  700W |       0MiB / 143771MiB |      0%      Default |
|                                         |                        |             Disabled |
+-----------------------------------------+------------------------+----------------------+

+-----------------------------------------------------------------------------------------+
| Processes:                                                                              |
|  GPU   GI   CI              PID   Type   Process name                        GPU Memory |
|        ID   ID                                                               Usage      |
|=========================================================================================|
|  No running processes found                                                             |
+-----------------------------------------------------------------------------------------+
"""
NO_DRIVER = ("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure that the latest "
             "NVIDIA driver is installed and running.\n")
TORCH = read_pins(ROOT / "requirements" / "cpu.txt")["torch"]
CUDA_PINS = read_pins(ROOT / "requirements" / "cuda.txt")


def test_parse_reports():
    seen = parse_nvidia_smi(H200)
    assert (seen.version_text, seen.version, seen.gpus) == ("580.159.04", (580, 159, 4), ("NVIDIA H200",))
    plan = plan_install(H200)
    assert (plan.device, plan.torch_cuda) == ("cuda", "13.0") and "580.159.04 (NVIDIA H200)" in plan.notes[0]
    h200 = parse_nvidia_smi(nvidia_smi("580.159.03", "13.0", "NVIDIA H200", "NVIDIA H200"))
    assert h200.version == (580, 159, 3) and h200.gpus == ("NVIDIA H200", "NVIDIA H200")
    assert h200.newest_cuda == (13, 0)
    t4 = parse_nvidia_smi(OLD_T4)
    assert (t4.version, t4.gpus, t4.newest_cuda) == ((470, 82, 1), ("Tesla T4",), (11, 4))
    assert parse_nvidia_smi(NO_DRIVER) is None and parse_nvidia_smi("") is None
    # the boundaries of the table: exactly the minimum runs, one patch below does not
    assert parse_nvidia_smi(nvidia_smi("570.26", "12.8", "X")).newest_cuda == (12, 8)
    assert parse_nvidia_smi(nvidia_smi("570.25.99", "12.7", "X")).newest_cuda == (12, 6)


@pytest.mark.parametrize("driver, cuda, tag", [
    ("580.159.03", "13.0", "cu130"),       # an H200 machine here
    ("575.57.08", "12.9", "cu128"),        # 12.9 runs, torch has no 12.9 build: the newest below it
    ("570.86.15", "12.8", "cu128"),
    ("560.35.03", "12.6", "cu126"),
])
def test_cuda_drivers_get_the_newest_torch_build_they_run(driver, cuda, tag):
    plan = plan_install(nvidia_smi(driver, cuda, "NVIDIA GeForce RTX 4090"))
    assert plan.device == "cuda"
    assert plan.torch == f"torch=={TORCH}+{tag}"
    assert plan.torch_index_url == f"https://download.pytorch.org/whl/{tag}"
    assert plan.torch_cuda == f"{tag[2:-1]}.{tag[-1]}"
    # spconv-cu126 runs on every driver that runs a CUDA build of torch
    assert plan.packages == [f"gsplat=={CUDA_PINS['gsplat']}", f"spconv-cu126=={CUDA_PINS['spconv-cu126']}"]
    assert "RTX 4090" in plan.notes[0]


def test_flash_attn_only_on_request_and_last():
    report = nvidia_smi("580.159.03", "13.0", "NVIDIA H200")
    assert not any("flash" in p for p in plan_install(report).packages)
    packages = plan_install(report, flash_attn=True).packages
    assert packages[-1] == f"flash-attn=={CUDA_PINS['flash-attn']}"
    assert {f"psutil=={CUDA_PINS['psutil']}", f"wheel=={CUDA_PINS['wheel']}"} <= set(packages[:-1])
    with pytest.raises(InstallPlanError, match="--flash-attn needs --cuda"):
        plan_install(report, device="cpu", flash_attn=True)


@pytest.mark.parametrize("report", [None, NO_DRIVER, OLD_T4, nvidia_smi("555.42.06", "12.5", "NVIDIA A100")])
def test_no_usable_driver_gets_the_cpu_stack_and_cuda_says_why(report):
    plan = plan_install(report)
    assert (plan.device, plan.torch, plan.packages) == ("cpu", f"torch=={TORCH}+cpu", [])
    assert plan.torch_index_url == "https://download.pytorch.org/whl/cpu" and plan.torch_cuda is None
    assert plan.notes
    with pytest.raises(InstallPlanError, match="update the NVIDIA driver|install the driver"):
        plan_install(report, device="cuda")


def test_cpu_is_the_cpu_stack_whatever_the_driver():
    plan = plan_install(nvidia_smi("580.159.03", "13.0", "NVIDIA H200"), device="cpu")
    assert (plan.device, plan.torch, plan.packages) == ("cpu", f"torch=={TORCH}+cpu", [])


def test_pins_agree_and_every_build_is_in_the_table(tmp_path):
    assert CUDA_PINS["torch"] == TORCH
    spconv = [name for name in CUDA_PINS if name.startswith("spconv-cu")]
    assert spconv and all((int(n[9:-1]), int(n[-1])) in CUDA_DRIVER_MINIMUMS for n in spconv)
    assert all(c in CUDA_DRIVER_MINIMUMS for c in TORCH_CUDA_BUILDS)
    # a cuda.txt that disagrees with cpu.txt on torch is refused, and so is a line that is not an exact pin
    (tmp_path / "cpu.txt").write_text((ROOT / "requirements" / "cpu.txt").read_text())
    (tmp_path / "cuda.txt").write_text((ROOT / "requirements" / "cuda.txt").read_text().replace(
        f"torch=={TORCH}", "torch==2.0.0"))
    with pytest.raises(InstallPlanError, match="must agree"):
        plan_install(nvidia_smi("580.159.03", "13.0", "X"), requirements=tmp_path)
    (tmp_path / "cuda.txt").write_text("gsplat>=1.0\n")
    with pytest.raises(InstallPlanError, match="not an exact pin"):
        read_pins(tmp_path / "cuda.txt")


def test_the_script_reads_the_plan_as_shell_assignments(tmp_path):
    """What tools/install.sh evaluates: the module run as it runs it, its output read back by bash."""
    report = tmp_path / "smi.txt"
    report.write_text(nvidia_smi("570.86.15", "12.8", "NVIDIA L40S"))
    plan = f"PYTHONPATH=backend {sys.executable} -m gvf4d.install_plan --nvidia-smi-output {report}"
    r = subprocess.run(["bash", "-c", f'set -e; eval "$({plan})"; echo "$GVF4D_DEVICE|$TORCH_SPEC|$TORCH_INDEX_URL|'
                        '$TORCH_CUDA|$CUDA_PACKAGES"'], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == (f"cuda|torch=={TORCH}+cu128|https://download.pytorch.org/whl/cu128|12.8|"
                                f"gsplat=={CUDA_PINS['gsplat']} spconv-cu126=={CUDA_PINS['spconv-cu126']}")
    assert "NVIDIA L40S" in r.stderr
    r = subprocess.run(["bash", "-c", f"{plan} --cuda"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0
    report.write_text(NO_DRIVER)
    r = subprocess.run(["bash", "-c", f"{plan} --cuda"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "nvidia-smi reports no NVIDIA driver" in r.stderr and r.stdout == ""
