"""Progress reporting and cancellation shared by the pipelines and the service."""
from __future__ import annotations

import sys
import time
from typing import Callable, Optional

Progress = Callable[[str, float], None]
ShouldCancel = Callable[[], bool]


class Cancelled(Exception):
    """The job was cancelled between two steps."""


def check_cancel(should_cancel: Optional[ShouldCancel]) -> None:
    if should_cancel is not None and should_cancel():
        raise Cancelled("cancelled")


class StageClock:
    """Times consecutive stages: lap(name) records the seconds since the previous lap (or the start). On a CUDA
    device it waits for the GPU first, so a stage's time includes its kernels."""

    def __init__(self, device=None):
        self.timings: dict[str, float] = {}
        self.sync = device is not None and getattr(device, "type", str(device)).startswith("cuda")
        self.device = device
        self.restart()

    def restart(self) -> None:
        self._last = time.perf_counter()

    def lap(self, name: str) -> float:
        if self.sync:
            import torch
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        self.timings[name] = now - self._last
        self._last = now
        return self.timings[name]


def printed_progress(log: Callable[[str], None] = lambda s: print(s, file=sys.stderr), step: float = 0.1) -> Progress:
    """A progress callback that prints each stage every `step` of its way and at its end."""
    last: dict[str, float] = {}

    def progress(stage: str, fraction: float) -> None:
        if fraction - last.get(stage, -1.0) >= step or (fraction >= 1.0 and last.get(stage) != fraction):
            last[stage] = fraction
            log(f"  {stage:10s} {100 * fraction:5.1f}%")
    return progress
