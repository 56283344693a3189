"""3-D consistency of a volume-rendering generator: reprojection error of rendered depth between two views.

VolumeGAN (arXiv 2112.10759) argues 3-D consistency from its feature volume but the release has no metric for
it; qiuyu96/Carver ``metrics/reprojection_error.py`` scores 3-D GANs by warping one view into another with the
rendered depth. Suite definition (docs/metrics.md, "3-D consistency"): for two views of the same latent,
every pixel of view A is lifted to 3-D with A's depth (distance along the ray, ``sum_i w_i t_i``), projected into
view B with the pinhole model, and compared there with B's bilinearly sampled depth and colour:

- ``depth``: mean |t_B(pi_B(X)) - |X - o_B|| / (far - near) over pixels that land inside B, in front of it;
- ``rgb``: mean over the same pixels and the channels of |img_A - img_B(pi_B(X))| (images in [-1, 1]).

Carver splats view A into B at rounded pixels and reports the MSE of the colours; the suite samples backwards
(bilinear, no holes) and reports depth and colour separately [X].
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import Metric

from networks import volume_rendering as vr


def reproject(
    depth_a: torch.Tensor,
    cam2world_a: torch.Tensor,
    cam2world_b: torch.Tensor,
    fov_deg: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Lift every pixel of view A with its depth [N, 1, H, W] and project it into view B.

    Returns the ``grid_sample`` grid into B [N, H, W, 2] (align_corners=True), the distance of each lifted
    point from B's camera [N, H, W] and the validity mask [N, H, W] (in front of B and inside its image).
    """
    n, _, h, w = depth_a.shape
    if h != w:
        raise ValueError(f"reproject: square depth maps expected (the pinhole grid is square), got {h}x{w}")
    origins, dirs = vr.camera_rays(cam2world_a.to(depth_a.dtype), h, fov_deg)
    points = origins + dirs * depth_a.reshape(n, -1, 1)
    ndc, dist, in_front = vr.project_points(points, cam2world_b.to(depth_a.dtype), fov_deg)
    grid = torch.stack([ndc[..., 0], -ndc[..., 1]], dim=-1)  # image row order: y = +1 is row 0
    inside = in_front & (grid.abs() <= 1 + 1e-5).all(dim=-1)  # rounding at the image border
    return grid.reshape(n, h, w, 2), dist.reshape(n, h, w), inside.reshape(n, h, w)


class ReprojectionError(Metric):
    """``update(depth_a, img_a, cam_a, depth_b, img_b, cam_b)``; ``compute()`` -> ``{'depth', 'rgb', 'coverage'}``.

    Depths [N, 1, h, w] are resized bilinearly (align_corners, the ray grid includes its end points) to the
    images' [N, C, H, W] resolution; cameras are [N, 4, 4] camera-to-world matrices of
    :func:`networks.volume_rendering.camera_to_world`. ``coverage`` is the fraction of pixels of A that land
    inside B. Sums are float64 and all-reduced (sum) under DDP.
    """

    higher_is_better = False
    full_state_update = False

    def __init__(self, fov_deg: float = 12.0, depth_range: tuple[float, float] = (0.8, 1.2), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fov_deg = float(fov_deg)
        self.depth_scale = float(depth_range[1] - depth_range[0])
        if self.depth_scale <= 0:
            raise ValueError(f"ReprojectionError depth_range: expected (near, far) with far > near, got {depth_range}")
        for name in ("depth_sum", "rgb_sum", "valid", "pixels"):
            self.add_state(name, torch.zeros([], dtype=torch.float64), dist_reduce_fx="sum")

    def update(
        self,
        depth_a: torch.Tensor,
        img_a: torch.Tensor,
        cam_a: torch.Tensor,
        depth_b: torch.Tensor,
        img_b: torch.Tensor,
        cam_b: torch.Tensor,
    ) -> None:
        n, c, h, w = img_a.shape
        for name, t, shape in (
            ("img_b", img_b, (n, c, h, w)),
            ("depth_a", depth_a, (n, 1) + tuple(depth_a.shape[2:])),
            ("depth_b", depth_b, tuple(depth_a.shape)),
            ("cam_a", cam_a, (n, 4, 4)),
            ("cam_b", cam_b, (n, 4, 4)),
        ):
            if tuple(t.shape) != shape or (name.startswith("depth") and t.ndim != 4):
                raise ValueError(f"ReprojectionError.update {name}: expected shape {list(shape)}, got {list(t.shape)}")
        depth_a, depth_b, img_a, img_b = (t.detach().float() for t in (depth_a, depth_b, img_a, img_b))
        if depth_a.shape[-2:] != (h, w):
            depth_a = F.interpolate(depth_a, size=(h, w), mode="bilinear", align_corners=True)
            depth_b = F.interpolate(depth_b, size=(h, w), mode="bilinear", align_corners=True)
        grid, dist, inside = reproject(depth_a, cam_a.detach().float(), cam_b.detach().float(), self.fov_deg)
        depth_at = F.grid_sample(depth_b, grid, mode="bilinear", padding_mode="border", align_corners=True)[:, 0]
        rgb_at = F.grid_sample(img_b, grid, mode="bilinear", padding_mode="border", align_corners=True)
        mask = inside.to(torch.float64)
        self.depth_sum += ((depth_at - dist).abs().double() * mask).sum() / self.depth_scale
        self.rgb_sum += ((rgb_at - img_a).abs().double().mean(dim=1) * mask).sum()
        self.valid += mask.sum()
        self.pixels += float(inside.numel())

    def compute(self) -> dict[str, torch.Tensor]:
        if float(self.valid) == 0:
            raise ValueError("ReprojectionError: no pixel of view A landed inside view B (or no update)")
        return {
            "depth": self.depth_sum / self.valid,
            "rgb": self.rgb_sum / self.valid,
            "coverage": self.valid / self.pixels,
        }


@torch.no_grad()
def evaluate_reprojection(
    G: nn.Module,
    n_samples: int = 1000,
    yaw_deltas_deg: tuple[float, ...] = (5.0, 10.0, 15.0),
    batch_size: int = 8,
    seed: int = 0,
    truncation_psi: float = 1.0,
    noise_mode: str = "const",
) -> dict[str, float]:
    """Protocol of docs/metrics.md [X]: ``n_samples`` seeded latents, each rendered from the two frontal views
    ``yaw_mean -/+ delta / 2`` at ``pitch_mean`` (no stratified jitter, importance sampling seeded alike for both
    views) for every ``delta``; the error is the mean of A->B and B->A. ``G`` is a
    :class:`networks.volumegan.VolumeGANGenerator`.
    Returns ``reproj_depth_<delta>deg``, ``reproj_rgb_<delta>deg`` and ``reproj_coverage_<delta>deg``.
    """
    syn = G.synthesis
    device = next(G.parameters()).device
    cam = syn.camera
    mode = G.training
    G.eval()
    out = {}
    try:
        for delta in yaw_deltas_deg:
            metric = ReprojectionError(cam["fov_deg"], syn.depth_range).to(device)
            gen = torch.Generator().manual_seed(seed)  # the same latents for every delta
            for start in range(0, n_samples, batch_size):
                n = min(batch_size, n_samples - start)
                z = torch.randn([n, G.z_dim], generator=gen).to(device)
                ws = G.mapping(z, None, truncation_psi=truncation_psi)
                views = []
                for sign in (-1, 1):
                    torch.manual_seed(seed + start)  # the same importance-sampling uniforms for both views
                    yaw = cam["yaw_mean"] + sign * torch.deg2rad(torch.tensor(delta / 2))
                    camera = {"yaw": yaw.expand(n), "pitch": torch.tensor(cam["pitch_mean"]).expand(n)}
                    img, extras = syn(ws, camera=camera, perturb=False, return_extras=True, noise_mode=noise_mode)
                    views.append((extras["depth"], img, extras["cam2world"]))
                metric.update(*views[0], *views[1])
                metric.update(*views[1], *views[0])
            result = metric.compute()
            for key, value in result.items():
                out[f"reproj_{key}_{delta:g}deg"] = float(value)
    finally:
        G.train(mode)
    return out
