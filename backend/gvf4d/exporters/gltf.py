"""GLB of the animated splat centres: a POINTS mesh with one morph target per frame and a weights animation.

Target t holds frame t's displacement from frame 0 (the base positions); the animation switches the
one-hot weights frame by frame (LINEAR, so playback between frames blends neighbouring frames).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pygltflib as gl

from ..atomic import atomic_output
from ..representations import AnimatedGaussians


def write_points_glb(path: str | os.PathLike, animated: AnimatedGaussians, fps: float) -> Path:
    path = Path(path)
    pos = animated.positions.detach().cpu().float().numpy()              # (T, N, 3)
    T, N, _ = pos.shape
    colours = np.concatenate([animated.canonical.rgb.detach().cpu().float().numpy().clip(0, 1),
                              animated.canonical.opacities.detach().cpu().float().numpy()[:, None]], -1)
    base = pos[0]
    blobs: list[bytes] = []
    accessors: list[gl.Accessor] = []
    views: list[gl.BufferView] = []
    offset = 0

    def add(array: np.ndarray, kind: str, with_bounds: bool) -> int:
        nonlocal offset
        data = np.ascontiguousarray(array, dtype=np.float32).tobytes()
        views.append(gl.BufferView(buffer=0, byteOffset=offset, byteLength=len(data)))
        blobs.append(data)
        offset += len(data)
        flat = array.reshape(array.shape[0], -1)
        acc = gl.Accessor(bufferView=len(views) - 1, componentType=gl.FLOAT, count=array.shape[0], type=kind)
        if with_bounds:
            acc.min = flat.min(0).astype(float).tolist()
            acc.max = flat.max(0).astype(float).tolist()
        accessors.append(acc)
        return len(accessors) - 1

    base_acc = add(base, gl.VEC3, True)
    colour_acc = add(colours, gl.VEC4, False)
    targets = [{"POSITION": add(pos[t] - base, gl.VEC3, True)} for t in range(T)]
    times = add(np.arange(T, dtype=np.float32)[:, None] / fps, gl.SCALAR, True)
    weights = add(np.eye(T, dtype=np.float32).reshape(-1, 1), gl.SCALAR, False)

    prim = gl.Primitive(attributes=gl.Attributes(POSITION=base_acc, COLOR_0=colour_acc), mode=gl.POINTS, targets=targets)
    mesh = gl.Mesh(primitives=[prim], weights=[1.0] + [0.0] * (T - 1), extras={"targetNames": [f"frame_{t:04d}" for t in range(T)]})
    anim = gl.Animation(samplers=[gl.AnimationSampler(input=times, output=weights, interpolation="LINEAR")],
                        channels=[gl.AnimationChannel(sampler=0, target=gl.AnimationChannelTarget(node=0, path="weights"))],
                        name="gvf4d")
    blob = b"".join(blobs)
    doc = gl.GLTF2(scene=0, scenes=[gl.Scene(nodes=[0])], nodes=[gl.Node(mesh=0, name="gvf4d_splat")], meshes=[mesh],
                   accessors=accessors, bufferViews=views, buffers=[gl.Buffer(byteLength=len(blob))], animations=[anim],
                   asset=gl.Asset(generator="gvf4d", version="2.0"))
    doc.set_binary_blob(blob)
    with atomic_output(path) as tmp:
        doc.save_binary(str(tmp))
    return path
