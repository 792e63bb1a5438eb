"""Replaying a fixed-shape call from a CUDA graph: for the sampler's network calls, which repeat with the same
shapes many times and, run eagerly, spend longer launching kernels than computing (the DiT at B=1: 52 ms of CPU
for 34 ms of GPU work per call on an H100).

The first call with a given input signature (shapes, dtypes) captures fn on static input buffers; later calls copy
their inputs in, replay, and return a copy of the output. The kernels are the same as fn's, so is the result. If a
capture fails (an operation that cannot be captured), the call runs eagerly from then on. Each graph keeps its
activations' memory, so only the `max_graphs` most recently used signatures are kept (a long-running service sees
shots of many lengths).
"""
from __future__ import annotations

import warnings
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor


@dataclass
class _Captured:
    graph: torch.cuda.CUDAGraph
    inputs: list[Tensor]
    output: Tensor


class GraphedCall:
    def __init__(self, fn: Callable[..., Tensor], warmup: int = 2, max_graphs: int = 4):
        self.fn = fn
        self.warmup = warmup
        self.max_graphs = max_graphs
        self._graphs: OrderedDict[tuple, _Captured] = OrderedDict()
        self.failed: str | None = None

    def __call__(self, *args: Tensor, **kwargs: Tensor) -> Tensor:
        if self.failed is not None:
            return self.fn(*args, **kwargs)
        names = sorted(kwargs)
        flat = list(args) + [kwargs[k] for k in names]
        key = (len(args), tuple(names), tuple((tuple(a.shape), a.dtype, a.device) for a in flat))
        entry = self._graphs.get(key)
        if entry is None:
            while len(self._graphs) >= self.max_graphs:
                self._graphs.popitem(last=False)           # the least recently used graph and its memory
            try:
                entry = self._graphs[key] = self._capture(flat, len(args), names)
            except RuntimeError as e:
                self.failed = f"{type(e).__name__}: {e}"
                warnings.warn(f"CUDA graph capture failed, running eagerly: {self.failed}")
                return self.fn(*args, **kwargs)
        self._graphs.move_to_end(key)
        for static, a in zip(entry.inputs, flat):
            static.copy_(a)
        entry.graph.replay()
        return entry.output.clone()

    def _capture(self, flat: list[Tensor], n_args: int, names: list[str]) -> _Captured:
        static = [a.clone() for a in flat]

        def call():
            return self.fn(*static[:n_args], **dict(zip(names, static[n_args:])))

        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.no_grad(), torch.cuda.stream(side):
            for _ in range(self.warmup):
                call()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.no_grad(), torch.cuda.graph(graph):
            out = call()
        return _Captured(graph, static, out)
