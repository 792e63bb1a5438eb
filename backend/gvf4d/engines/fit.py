"""The weights-free `fit` engine: the variation field fitted to the footage by analysis by synthesis.

Motion model: K control nodes placed by farthest-point sampling on the canonical splat; per frame each node
has a rotation (unit quaternion) and a translation. A Gaussian follows its `knn` nearest nodes with
normalised Gaussian weights (linear blend of the node transforms; its orientation turns with the blended
node rotation). Frames are solved in order, each starting from the previous one, against the footage frame
with the differentiable rasterizer:
    L1(rgb) + w_ssim (1 - SSIM) + w_sil L1(alpha)                  photometric + silhouette
    + w_arap |R_i (c_j - c_i) - (c_j + t_j - c_i - t_i)|^2 / h^2   as-rigid-as-possible between nodes
    + w_smooth (|t - t_prev|^2 / h^2 + |q - q_prev|^2)             temporal smoothness
so parts the camera does not see move with their neighbours.

Refinement (`init`): the same optimisation on top of another engine's result (the diffusion engine's
per-frame splats): in frame t the nodes sit where that result put their Gaussians, and the node transforms
are a residual motion applied to it (its scales, opacities and colours are kept).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ..kernels.fps import farthest_point_sampling
from ..metrics import ssim
from ..progress import Progress, ShouldCancel, check_cancel
from ..rendering import Cameras, rasterize
from ..representations import AnimatedGaussians, Gaussians
from ..representations.rotation import quat_multiply, quat_to_rotmat


@dataclass
class FitSettings:
    num_nodes: int = 160
    knn: int = 4
    node_neighbours: int = 6
    iterations_first: int = 40
    iterations: int = 20
    lr_translation: float = 6e-3
    lr_rotation: float = 3e-2
    w_ssim: float = 0.2
    w_silhouette: float = 1.0
    w_arap: float = 0.5
    w_smooth: float = 0.02


@dataclass
class NodeGraph:
    """nodes (K, 3) = the canonical means at node_index (K,); gaussian_nodes (N, k) indices; gaussian_weights
    (N, k); neighbours (K, m); spacing h."""

    nodes: Tensor
    node_index: Tensor
    gaussian_nodes: Tensor
    gaussian_weights: Tensor
    neighbours: Tensor
    spacing: float

    @classmethod
    def build(cls, means: Tensor, num_nodes: int, knn: int, neighbours: int) -> "NodeGraph":
        k_nodes = min(num_nodes, means.shape[0])
        node_index = farthest_point_sampling(means[None], k_nodes)[0]
        nodes = means[node_index]
        nn_d = torch.cdist(nodes, nodes)
        spacing = float(nn_d.topk(2, largest=False).values[:, 1].mean())
        d, idx = torch.cdist(means, nodes).topk(min(knn, k_nodes), largest=False)
        w = torch.exp(-d.square() / (2 * spacing ** 2))
        w = w / w.sum(-1, keepdim=True).clamp_min(1e-12)
        nbr = nn_d.topk(min(neighbours + 1, k_nodes), largest=False).indices[:, 1:]
        return cls(nodes, node_index, idx, w, nbr, spacing)

    def deform(self, base: Gaussians, rot: Tensor, trans: Tensor, centres: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        """Moves `base` (the canonical splat, or another engine's frame) by the node transforms rot (K, 4), trans
        (K, 3) about the node centres (default: the canonical nodes) -> means (N, 3), quats (N, 4)."""
        R = quat_to_rotmat(rot)                                       # (K, 3, 3)
        idx, w = self.gaussian_nodes, self.gaussian_weights
        c = (self.nodes if centres is None else centres)[idx]         # (N, k, 3)
        moved = torch.einsum("nkij,nkj->nki", R[idx], base.means[:, None] - c) + c + trans[idx]
        means = (w[..., None] * moved).sum(1)
        q = F.normalize(rot, dim=-1)[idx]
        q = torch.where((q * q[:, :1]).sum(-1, keepdim=True) < 0, -q, q)   # one hemisphere before blending
        blended = F.normalize((w[..., None] * q).sum(1), dim=-1)
        return means, quat_multiply(blended, base.quats)

    def arap(self, rot: Tensor, trans: Tensor, centres: Optional[Tensor] = None) -> Tensor:
        R = quat_to_rotmat(rot)
        nodes = self.nodes if centres is None else centres
        ci, cj = nodes[:, None], nodes[self.neighbours]
        rest = torch.einsum("kij,kmj->kmi", R, cj - ci)
        now = (cj + trans[self.neighbours]) - (ci + trans[:, None])
        return (rest - now).square().sum(-1).mean() / self.spacing ** 2


def fit_variation_field(canonical: Gaussians, frames: Tensor, alphas: Tensor, camera: Cameras,
                        settings: FitSettings = FitSettings(), progress: Optional[Progress] = None,
                        should_cancel: Optional[ShouldCancel] = None,
                        init: Optional[AnimatedGaussians] = None) -> AnimatedGaussians:
    """frames (T, H, W, 3) in [0, 1] over white, alphas (T, H, W) in [0, 1], camera: the footage camera at H x W.
    Runs on the canonical splat's device (gsplat's CUDA rasterizer there when available).
    Returns the canonical splat with per-frame positions and rotations; with `init` (another engine's result,
    same Gaussians), that result refined, its other tracks kept."""
    T = frames.shape[0]
    dev = canonical.means.device
    frames, alphas, camera = frames.to(dev), alphas.to(dev), camera.to(dev)
    graph = NodeGraph.build(canonical.means.detach(), settings.num_nodes, settings.knn, settings.node_neighbours)
    K = graph.nodes.shape[0]
    rot = torch.zeros(K, 4, device=dev)
    rot[:, 0] = 1
    trans = torch.zeros(K, 3, device=dev)
    white = torch.ones(1, 3, device=dev)
    positions, quats = [], []
    total = settings.iterations_first + (T - 1) * settings.iterations
    done = 0
    for t in range(T):
        prev_rot, prev_trans = rot.detach().clone(), trans.detach().clone()
        rot_p = prev_rot.clone().requires_grad_()
        trans_p = prev_trans.clone().requires_grad_()
        opt = torch.optim.Adam([{"params": [trans_p], "lr": settings.lr_translation},
                                {"params": [rot_p], "lr": settings.lr_rotation}])
        target, target_a = frames[t], alphas[t][..., None]
        base = canonical if init is None else init.frame(t).to(dev)
        centres = None if init is None else base.means[graph.node_index].detach()
        colours = base.rgb.detach()
        for _ in range(settings.iterations_first if t == 0 else settings.iterations):
            check_cancel(should_cancel)
            means, q = graph.deform(base, rot_p, trans_p, centres)
            rgb, a = rasterize(means, q, base.scales, base.opacities, colours, camera.viewmats, camera.Ks,
                               camera.width, camera.height, backgrounds=white, backend="auto")
            loss = ((rgb[0] - target).abs().mean() + settings.w_ssim * (1 - ssim(rgb[0], target))
                    + settings.w_silhouette * (a[0] - target_a).abs().mean()
                    + settings.w_arap * graph.arap(rot_p, trans_p, centres))
            if t > 0:
                loss = loss + settings.w_smooth * ((trans_p - prev_trans).square().sum(-1).mean() / graph.spacing ** 2
                                                   + (rot_p - prev_rot).square().sum(-1).mean())
            opt.zero_grad()
            loss.backward()
            opt.step()
            done += 1
            if progress:
                progress("fit", done / total)
        rot, trans = F.normalize(rot_p.detach(), dim=-1), trans_p.detach()
        with torch.no_grad():
            m, q = graph.deform(base, rot, trans, centres)
        positions.append(m)
        quats.append(q)
    if init is None:
        return AnimatedGaussians(canonical=canonical, positions=torch.stack(positions), quats=torch.stack(quats))
    return replace(init.to(dev), positions=torch.stack(positions), quats=torch.stack(quats))
