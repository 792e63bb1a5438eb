"""Sampling a shot longer than the model's clips: overlapping temporal windows of the clip length, fused at every
network evaluation (docs/long_shots.md says why this method).

The solver integrates one latent of the whole shot, x (1, T, ...). At each evaluation x is cut into W windows of
L frames (the clip length the model was trained on) that overlap their neighbours; the model predicts each
window's noise as it would a clip's, and the predictions are blended back into one prediction of the shot: in an
overlap of n frames the two windows' shares ramp linearly, (j + 1) / (n + 1) in and the complement out (the fusion
of MultiDiffusion, Bar-Tal et al. 2023). The overlapping frames are one tensor, so the windows agree on them
exactly, and the ramps hand each frame over from one window to the next without a step.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor

# window_noise(first, last, x (last - first, L, ...), t) -> eps of the windows first..last-1, shaped like x
WindowNoise = Callable[[int, int, Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class TemporalWindows:
    """Windows of `length` frames over a shot of `frames` frames, starting at `starts` (ascending, the first 0 and
    the last frames - length)."""

    frames: int
    length: int
    starts: tuple[int, ...]
    _weights: dict = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def cover(cls, frames: int, length: int, min_overlap: int, multiple_of: int = 1) -> "TemporalWindows":
        """The fewest windows of `length` frames, a multiple of `multiple_of` of them, whose neighbours share at
        least `min_overlap` frames, spread evenly over `frames` frames; one window of all frames when they fit."""
        if frames <= length:
            return cls(frames, frames, (0,))
        if not 0 <= min_overlap < length:
            raise ValueError(f"a window overlap of {min_overlap} frames needs windows longer than {length} frames")
        count = math.ceil((frames - min_overlap) / (length - min_overlap))
        count = math.ceil(count / multiple_of) * multiple_of
        return cls(frames, length, tuple(round(i * (frames - length) / (count - 1)) for i in range(count)))

    @property
    def count(self) -> int:
        return len(self.starts)

    def weights(self, device=None, dtype=torch.float32) -> Tensor:
        """(W, L): each window's share of its frames' predictions; at every frame the shares sum to 1. A window's
        raw weight ramps over each overlap, min(1, (j + 1) / (n_before + 1), (L - j) / (n_after + 1)) at its
        frame j, and the weights are normalised per frame (two windows over an overlap: exactly linear)."""
        key = (torch.device(device) if device is not None else torch.device("cpu"), dtype)
        if key not in self._weights:
            L, j = self.length, torch.arange(self.length, dtype=torch.float64)
            raw = torch.ones(self.count, L, dtype=torch.float64)
            for k in range(1, self.count):
                n = self.starts[k - 1] + L - self.starts[k]         # frames shared by windows k - 1 and k
                raw[k] = torch.minimum(raw[k], (j + 1) / (n + 1))
                raw[k - 1] = torch.minimum(raw[k - 1], (L - j) / (n + 1))
            total = torch.zeros(self.frames, dtype=torch.float64)
            for k, s in enumerate(self.starts):
                total[s:s + L] += raw[k]
            shares = torch.stack([raw[k] / total[s:s + L] for k, s in enumerate(self.starts)])
            self._weights[key] = shares.to(device=key[0], dtype=dtype)
        return self._weights[key]

    def gather(self, x: Tensor) -> Tensor:
        """x (1, T, ...) -> the windows (W, L, ...)."""
        return torch.stack([x[0, s:s + self.length] for s in self.starts])

    def blend(self, windows: Tensor) -> Tensor:
        """windows (W, L, ...) -> (1, T, ...): each frame the weighted sum of its windows' values (in window
        order, so the result does not depend on the device's scheduling)."""
        w = self.weights(windows.device, windows.dtype).reshape(self.count, self.length, *[1] * (windows.ndim - 2))
        out = windows.new_zeros(1, self.frames, *windows.shape[2:])
        for k, s in enumerate(self.starts):
            out[0, s:s + self.length] += w[k] * windows[k]
        return out

    def describe(self) -> dict:
        return {"frames": self.length, "starts": list(self.starts)}


class WindowedNoise:
    """The noise prediction of a whole shot, noise(x (1, T, ...), t) for DPM-Solver, from a prediction for batches
    of windows: window_noise is called for `per_call` windows at a time (the last call may take fewer), the
    windows' predictions blended by `TemporalWindows.blend`."""

    def __init__(self, windows: TemporalWindows, window_noise: WindowNoise, per_call: int):
        self.windows, self.window_noise, self.per_call = windows, window_noise, per_call

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        xs = self.windows.gather(x)
        eps = [self.window_noise(first, min(first + self.per_call, self.windows.count),
                                 xs[first:first + self.per_call], t)
               for first in range(0, self.windows.count, self.per_call)]
        return self.windows.blend(torch.cat(eps))
