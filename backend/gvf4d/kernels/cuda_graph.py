"""Replaying a fixed-shape call from a CUDA graph: for the sampler's network calls, which repeat with the same
shapes many times and, run eagerly, spend longer launching kernels than computing, and the motion-VAE decoder's
context stack (once per shot, the same shape for every shot of a frame count).

The inputs may be nested lists/tuples/dicts of tensors (a precomputed conditioning); other leaves (numbers) are
part of the signature. The output is a tensor or such a nest of them. The first call with a given signature
(structure, shapes, dtypes, and the caller's autocast state: under autocast the same arguments run other kernels)
captures fn on static input buffers; later calls copy their inputs in, replay, and
return a copy of the output. An input that is the same tensor, unmodified, as the one copied last time is not
copied again (a sampler passes the same conditioning at every step). The kernels are the same as fn's, so is the
result. If a capture fails (an operation that cannot be captured), the call runs eagerly from then on. Each graph
keeps its activations' memory, so only the `max_graphs` most recently used signatures are kept (a long-running
service sees shots of many lengths).

Finding a call's graph means flattening its arguments on the CPU before the graph can launch, which for the DiT's
conditioning (147 tensors in named tuples) is most of a call's host time while the GPU waits. An argument held in a
`FrozenNest` (the DiT's `Conditioning`) is therefore flattened once and reused while it lives (`ArgumentFlattener`).
"""
from __future__ import annotations

import warnings
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, NamedTuple

import torch
from torch import Tensor

_LEAF = "leaf"      # first item of a non-tensor leaf's token


class FrozenNest:
    """An immutable, weakly referable container of call arguments: `items`, a tuple of tensors and other leaves in
    tuples (named tuples included). `ArgumentFlattener` flattens it once and reuses that while it lives (a plain
    tuple cannot be weakly referenced, so a freed one could not be told from a new one at the same address)."""
    __slots__ = ("items", "__weakref__")

    def __init__(self, items: Iterable):
        object.__setattr__(self, "items", tuple(items))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __getitem__(self, index):
        return self.items[index]

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator:
        return iter(self.items)


class Signature:
    """A frozen nest's structure tokens, hashed once: looking up the same nest's graph again compares by identity."""
    __slots__ = ("tokens", "_hash")

    def __init__(self, tokens: tuple):
        self.tokens, self._hash = tokens, hash(tokens)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return self is other or (isinstance(other, Signature) and self._hash == other._hash
                                 and self.tokens == other.tokens)


class _Flattened(NamedTuple):
    ref: weakref.ref
    leaves: list
    signature: Signature


class ArgumentFlattener:
    """flatten(obj) -> (leaves, tokens), unflatten(leaves, tokens) -> an equal nest.

    obj nests tuples (named tuples included), lists, dicts and FrozenNests; its leaves are tensors and other
    hashable values. tokens is a hashable tuple, equal for two nests of the same structure and types, tensor shapes,
    dtypes and devices, and equal non-tensor leaves: pre-order, a container as (its type, its length or dict keys),
    a tensor as (Tensor, shape, dtype, device), another leaf as ("leaf", value). A FrozenNest is one `Signature`
    token, and its flattening is kept until it is freed (its tensors' shapes are read once)."""

    def __init__(self):
        self._frozen: dict[int, _Flattened] = {}

    def flatten(self, obj: Any) -> tuple[list, tuple]:
        leaves: list = []
        tokens: list = []
        self._walk(obj, leaves, tokens)
        return leaves, tuple(tokens)

    def _walk(self, obj: Any, leaves: list, tokens: list) -> bool:
        """Appends obj's leaves and tokens -> whether obj's structure cannot change (tuples and leaves only)."""
        if isinstance(obj, Tensor):
            leaves.append(obj)
            tokens.append((Tensor, obj.shape, obj.dtype, obj.device))
            return True
        if isinstance(obj, FrozenNest):
            known = self._frozen.get(id(obj))
            if known is not None and known.ref() is obj:
                leaves.extend(known.leaves)
                tokens.append(known.signature)
            else:
                self._remember(obj, leaves, tokens)
            return True
        if isinstance(obj, tuple) and not isinstance(obj, torch.Size):
            tokens.append((type(obj), len(obj)))
            return all([self._walk(item, leaves, tokens) for item in obj])
        if isinstance(obj, list):
            tokens.append((list, len(obj)))
            for item in obj:
                self._walk(item, leaves, tokens)
            return False
        if isinstance(obj, dict):
            tokens.append((dict, tuple(obj)))
            for item in obj.values():
                self._walk(item, leaves, tokens)
            return False
        leaves.append(obj)
        tokens.append((_LEAF, obj))
        return True

    def _remember(self, obj: FrozenNest, leaves: list, tokens: list) -> None:
        """Flattens obj onto leaves, as one Signature token onto tokens, and keeps that while obj lives."""
        first_leaf, first_token = len(leaves), len(tokens)
        tokens.append((type(obj), len(obj.items)))
        if not all([self._walk(item, leaves, tokens) for item in obj.items]):
            raise TypeError(f"{type(obj).__name__} holds a list or a dict: its structure could change")
        key = id(obj)
        signature = Signature(tuple(tokens[first_token:]))
        del tokens[first_token:]
        tokens.append(signature)
        self._frozen[key] = _Flattened(weakref.ref(obj, lambda dead: self._forget(key, dead)), leaves[first_leaf:],
                                       signature)

    def _forget(self, key: int, dead: weakref.ref) -> None:
        known = self._frozen.get(key)
        if known is not None and known.ref is dead:
            del self._frozen[key]

    @staticmethod
    def unflatten(leaves: list, tokens: tuple) -> Any:
        return _build(iter(tokens), iter(leaves))


def _build(tokens: Iterator, leaves: Iterator) -> Any:
    token = next(tokens)
    if isinstance(token, Signature):
        return _build(iter(token.tokens), leaves)
    kind = token[0]
    if kind is Tensor or kind is _LEAF:
        return next(leaves)
    if kind is dict:
        return {key: _build(tokens, leaves) for key in token[1]}
    items = [_build(tokens, leaves) for _ in range(token[1])]
    if kind is list:
        return items
    return kind._make(items) if hasattr(kind, "_fields") else kind(items)


@dataclass
class _Captured:
    graph: torch.cuda.CUDAGraph
    inputs: list[Any]              # the static buffers (tensors) and the other leaves, flattened
    output: Any                    # a tensor, or a nest of them
    copied: dict[int, tuple] = field(default_factory=dict)   # input index -> (weakref, version) last copied in


class GraphedCall:
    def __init__(self, fn: Callable[..., Any], warmup: int = 2, max_graphs: int = 4):
        self.fn = fn
        self.warmup = warmup
        self.max_graphs = max_graphs
        self._graphs: OrderedDict[tuple, _Captured] = OrderedDict()
        self._arguments = ArgumentFlattener()
        self.failed: str | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.failed is not None:
            return self.fn(*args, **kwargs)
        flat, tokens = self._arguments.flatten((args, kwargs))
        key = (torch.is_autocast_enabled("cuda") and torch.get_autocast_dtype("cuda"), tokens)
        entry = self._graphs.get(key)
        if entry is None:
            while len(self._graphs) >= self.max_graphs:
                self._graphs.popitem(last=False)           # the least recently used graph and its memory
            try:
                entry = self._graphs[key] = self._capture(flat, tokens)
            except RuntimeError as e:
                self.failed = f"{type(e).__name__}: {e}"
                warnings.warn(f"CUDA graph capture failed, running eagerly: {self.failed}")
                return self.fn(*args, **kwargs)
        self._graphs.move_to_end(key)
        for i, (static, a) in enumerate(zip(entry.inputs, flat)):
            if not isinstance(a, Tensor):
                continue
            last = entry.copied.get(i)
            if last is not None and last[0]() is a and last[1] == a._version:
                continue
            static.copy_(a)
            entry.copied[i] = (weakref.ref(a), a._version)
        entry.graph.replay()
        if isinstance(entry.output, Tensor):
            return entry.output.clone()
        leaves, tokens = self._arguments.flatten(entry.output)
        return self._arguments.unflatten([a.clone() if isinstance(a, Tensor) else a for a in leaves], tokens)

    def clear(self) -> None:
        """Drop every captured graph and the memory it holds (the next call of each signature captures again)."""
        self._graphs.clear()

    def _capture(self, flat: list[Any], tokens: tuple) -> _Captured:
        static = [a.clone() if isinstance(a, Tensor) else a for a in flat]

        def call():
            args, kwargs = self._arguments.unflatten(static, tokens)
            return self.fn(*args, **kwargs)

        # under autocast, its cache of cast weights is kept off: a cast cached while capturing lives outside the
        # graph's memory and is freed when the caller's autocast context ends, and the replays would read it
        uncached = torch.autocast("cuda", torch.get_autocast_dtype("cuda"), torch.is_autocast_enabled("cuda"),
                                  cache_enabled=False)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.no_grad(), uncached, torch.cuda.stream(side):
            for _ in range(self.warmup):
                call()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.no_grad(), uncached, torch.cuda.graph(graph):
            out = call()
        return _Captured(graph, static, out)
