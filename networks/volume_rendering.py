"""Cameras, rays, point sampling and volume rendering of VolumeGAN (arXiv 2112.10759, Sec. 3).

Conventions of genforce/volumegan ``models/rendering/points_sampling.py``:

- Cameras sit on a sphere of radius ``radius`` around the origin and look at it, world up = +y. Camera position
  ``radius * (sin(pitch) cos(yaw), cos(pitch), sin(pitch) sin(yaw))``: yaw = pitch = pi/2 puts the camera on +z.
- Camera space: x right, y up, looking along -z. A ``resolution`` x ``resolution`` pinhole grid covers
  ``[-1, 1]`` in x (left to right) and ``[1, -1]`` in y (top to bottom, image row order) at the image plane
  ``z = -1 / tan(fov / 2)``, endpoints included; ray directions are normalised, so a depth ``t`` along a ray is
  the distance from the camera.

Sampling (``points_sampling.py``, ``hierarchicle_sampling.py``) and compositing (``renderer.py``) follow the
same files; each function names the detail it reproduces.
"""

from __future__ import annotations

import math

import torch

CAMERA_DISTRIBUTIONS = ("gaussian", "uniform")


def positional_encoding(x: torch.Tensor, num_freqs: int) -> torch.Tensor:
    """NeRF encoding ``[x, sin(2^0 x), cos(2^0 x), ..., sin(2^(F-1) x), cos(2^(F-1) x)]`` along the last axis.

    genforce/volumegan ``models/volumegan_generator.py`` ``Embedder`` (log-spaced frequencies, raw input first):
    ``3 + 6 F`` channels for 3-D points.
    """
    out = [x]
    for i in range(num_freqs):
        freq = 2.0**i
        out += [torch.sin(x * freq), torch.cos(x * freq)]
    return torch.cat(out, dim=-1)


def sample_camera_angles(
    batch_size: int,
    yaw_mean: float,
    yaw_std: float,
    pitch_mean: float,
    pitch_std: float,
    dist: str = "gaussian",
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(yaw, pitch) [N] in radians; ``gaussian``: mean + std * N(0, 1), ``uniform``: mean + std * U(-1, 1).

    Pitch is clamped to (1e-5, pi - 1e-5) (``sample_cam_positions``).
    """
    if dist not in CAMERA_DISTRIBUTIONS:
        raise ValueError(f"camera dist: expected one of {CAMERA_DISTRIBUTIONS}, got {dist!r}")
    shape = (2, batch_size)
    if dist == "gaussian":
        r = torch.randn(shape, device=device, generator=generator)
    else:
        r = torch.rand(shape, device=device, generator=generator) * 2 - 1
    yaw = r[0] * yaw_std + yaw_mean
    pitch = (r[1] * pitch_std + pitch_mean).clamp(1e-5, math.pi - 1e-5)
    return yaw, pitch


TRAJECTORIES = ("yaw", "pitch", "orbit")


def camera_trajectory(
    kind: str, yaw_mean: float, pitch_mean: float, yaw_range: float, pitch_range: float, frames: int
) -> list[tuple[float, float]]:
    """(yaw, pitch) per frame of one closed loop, t = i / frames: ``yaw``: yaw_mean + yaw_range sin(2 pi t);
    ``pitch``: pitch_mean + pitch_range sin(2 pi t); ``orbit``: both, the pitch with cos (genforce/volumegan
    ``render.py``, ``trajectory_type='orbit'``)."""
    if kind not in TRAJECTORIES:
        raise ValueError(f"camera trajectory: expected one of {TRAJECTORIES}, got {kind!r}")
    out = []
    for i in range(frames):
        s, c = math.sin(2 * math.pi * i / frames), math.cos(2 * math.pi * i / frames)
        yaw = yaw_mean + (yaw_range * s if kind in ("yaw", "orbit") else 0.0)
        pitch = pitch_mean + {"yaw": 0.0, "pitch": pitch_range * s, "orbit": pitch_range * c}[kind]
        out.append((yaw, pitch))
    return out


def camera_to_world(yaw: torch.Tensor, pitch: torch.Tensor, radius: float = 1.0) -> torch.Tensor:
    """[N, 4, 4] camera-to-world matrices looking at the origin (``create_cam2world_matrix``)."""
    pos = radius * torch.stack(
        [torch.sin(pitch) * torch.cos(yaw), torch.cos(pitch), torch.sin(pitch) * torch.sin(yaw)], dim=-1
    )
    forward = torch.nn.functional.normalize(-pos, dim=-1)
    up = torch.zeros_like(forward)
    up[:, 1] = 1
    left = torch.nn.functional.normalize(torch.cross(up, forward, dim=-1), dim=-1)
    up = torch.nn.functional.normalize(torch.cross(forward, left, dim=-1), dim=-1)
    m = torch.eye(4, dtype=pos.dtype, device=pos.device).repeat(pos.shape[0], 1, 1)
    m[:, :3, :3] = torch.stack([-left, up, -forward], dim=-1)
    m[:, :3, 3] = pos
    return m


def pinhole_directions(resolution: int, fov_deg: float, device=None, dtype=torch.float32) -> torch.Tensor:
    """Unit ray directions in camera space, [resolution * resolution, 3] in image row order."""
    lin = torch.linspace(-1, 1, resolution, device=device, dtype=dtype)
    y, x = torch.meshgrid(-lin, lin, indexing="ij")
    z = torch.full_like(x, -1 / math.tan(math.radians(fov_deg) / 2))
    return torch.nn.functional.normalize(torch.stack([x, y, z], dim=-1).reshape(-1, 3), dim=-1)


def camera_rays(cam2world: torch.Tensor, resolution: int, fov_deg: float) -> tuple[torch.Tensor, torch.Tensor]:
    """World-space ray origins and unit directions, each [N, resolution^2, 3]."""
    dirs = pinhole_directions(resolution, fov_deg, device=cam2world.device, dtype=cam2world.dtype)
    dirs = dirs @ cam2world[:, :3, :3].transpose(1, 2)
    origins = cam2world[:, None, :3, 3].expand_as(dirs)
    return origins, dirs


def project_points(
    points: torch.Tensor, cam2world: torch.Tensor, fov_deg: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inverse of the pinhole model: world points [N, P, 3] -> (ndc [N, P, 2], distance [N, P], in_front [N, P]).

    ``ndc`` = (x, y) on the image plane in the ray grid's units (x in [-1, 1] left to right, y in [1, -1] top to
    bottom); ``distance`` is the depth ``t`` of :func:`camera_rays`; ``in_front`` marks points the camera faces.
    """
    rot, pos = cam2world[:, :3, :3], cam2world[:, None, :3, 3]
    cam = (points - pos) @ rot  # [N, P, 3] = R^T (X - t)
    focal = 1 / math.tan(math.radians(fov_deg) / 2)
    z = -cam[..., 2]
    in_front = z > 1e-8
    ndc = cam[..., :2] * (focal / torch.where(in_front, z, torch.ones_like(z))).unsqueeze(-1)
    return ndc, cam.norm(dim=-1), in_front


def stratified_depths(
    batch_size: int,
    num_rays: int,
    num_samples: int,
    near: float,
    far: float,
    perturb: bool,
    device=None,
    dtype=torch.float32,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """[N, rays, S] depths ``linspace(near, far, S)``, each jittered by U(-1/2, 1/2) bins when ``perturb``.

    ``perturb_points`` (perturb_mode other than 'mid'; 'none' = ``perturb=False``). Jittered depths stay sorted
    and may leave [near, far] by half a bin at the ends.
    """
    t = torch.linspace(near, far, num_samples, device=device, dtype=dtype).expand(batch_size, num_rays, num_samples)
    if not perturb or num_samples < 2:
        return t.contiguous()
    step = (far - near) / (num_samples - 1)
    return t + (torch.rand(t.shape, device=device, dtype=dtype, generator=generator) - 0.5) * step


def composite(sigmas: torch.Tensor, depths: torch.Tensor) -> torch.Tensor:
    """Compositing weights [N, rays, S] of densities along sorted depths (``renderer.py``, clamp_mode 'relu').

    ``alpha_i = 1 - exp(-delta_i relu(sigma_i))`` with ``delta_i = t_(i+1) - t_i`` and ``delta_last = 1e10``;
    ``w_i = alpha_i prod_(j<i) (1 - alpha_j + 1e-10)``. No density noise, no background.
    """
    deltas = torch.cat([depths[..., 1:] - depths[..., :-1], torch.full_like(depths[..., :1], 1e10)], dim=-1)
    alphas = 1 - torch.exp(-deltas * torch.relu(sigmas))
    shifted = torch.cat([torch.ones_like(alphas[..., :1]), 1 - alphas + 1e-10], dim=-1)
    return alphas * torch.cumprod(shifted, dim=-1)[..., :-1]


def importance_depths(
    depths: torch.Tensor, weights: torch.Tensor, num_samples: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """[N, rays, num_samples] sorted depths drawn from the coarse weights by the inverse CDF (no gradient).

    ``hierarchicle_sampling.py`` ``sample_pdf``: bins are the midpoints of the coarse depths, the pdf the inner
    weights ``w_1 .. w_(S-2)`` plus 1e-5 twice (once in the caller, once in ``sample_pdf``), stochastic ``u``.
    Suite choice: ``u`` is sorted per ray so the samples come out sorted; the set of samples has the same
    distribution and the renderer sorts coarse + fine samples together anyway.
    """
    with torch.no_grad():
        lead = depths.shape[:-1]
        bins = 0.5 * (depths[..., 1:] + depths[..., :-1]).reshape(-1, depths.shape[-1] - 1)
        pdf = (weights[..., 1:-1] + 2e-5).reshape(bins.shape[0], -1)
        pdf = pdf / pdf.sum(dim=-1, keepdim=True)
        cdf = torch.cat([torch.zeros_like(pdf[:, :1]), torch.cumsum(pdf, dim=-1)], dim=-1)
        u = torch.rand(bins.shape[0], num_samples, device=depths.device, dtype=depths.dtype, generator=generator)
        u = u.sort(dim=-1).values.contiguous()
        inds = torch.searchsorted(cdf, u)
        below = (inds - 1).clamp_min(0)
        above = inds.clamp_max(cdf.shape[-1] - 1)
        both = torch.stack([below, above], dim=-1).reshape(bins.shape[0], -1)
        cdf_g = cdf.gather(1, both).reshape(bins.shape[0], num_samples, 2)
        bins_g = bins.gather(1, both).reshape(bins.shape[0], num_samples, 2)
        denom = cdf_g[..., 1] - cdf_g[..., 0]
        denom = torch.where(denom < 1e-5, torch.ones_like(denom), denom)
        samples = bins_g[..., 0] + (u - cdf_g[..., 0]) / denom * (bins_g[..., 1] - bins_g[..., 0])
        return samples.reshape(*lead, num_samples)
