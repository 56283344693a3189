"""Render a VolumeGAN generator: camera sweeps, view grids, shape/appearance swaps, marching-cubes meshes.

Modes (first argument), after genforce/volumegan ``render.py`` (videos along a camera trajectory, shapes from the
density field):

- ``video``: one video per seed along a ``--trajectory`` (``yaw`` / ``pitch`` sweep or ``orbit``), ``seedXXXX_<t>.mp4``;
- ``grid``: ``grid.png`` (rows = seeds, columns = ``--views`` yaws across ``--yaw-range``) and ``depth.png``;
- ``swap``: ``swap.png``, row i / column j = shape (volume + MLP w's) of seed i with the appearance (renderer w's)
  of seed j; the diagonal is the seeds themselves;
- ``mesh``: density on a ``--mesh-res``^3 grid over a cube of side ``--cube`` at the origin, marching cubes
  (scikit-image) at ``--mesh-level`` -> ``seedXXXX.ply`` (binary) and ``seedXXXX.obj``, world coordinates (y up).

``--network`` is any file ``networks.checkpoint.load_networks`` reads (G_ema preferred). Example:
``python experiments/render.py video --network run/last.ckpt --seeds 0-3 --trunc 0.7 --trunc-cutoff 8 --outdir out``
"""

from __future__ import annotations

import argparse
import logging
import os
import pickle
import sys
from pathlib import Path

import av
import numpy as np
import torch
from tqdm import tqdm

from datamodules.video_io import write_video
from experiments.generate import check_device, finite_float, parse_range, positive_int
from networks.checkpoint import load_networks
from networks.image_output import save_image_grid, to_hwc, to_uint8
from networks.volume_rendering import camera_trajectory

log = logging.getLogger("render")
MODES = ("video", "grid", "swap", "mesh")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mode", choices=MODES)
    p.add_argument("--network", required=True, help="network file (any supported format)")
    p.add_argument("--seeds", type=parse_range, default=[0], help="seeds, e.g. 0-3,5 (default 0)")
    p.add_argument("--outdir", type=Path, required=True)
    p.add_argument("--trunc", type=finite_float, default=1.0, help="truncation psi (default 1)")
    p.add_argument("--trunc-cutoff", type=int, default=None, help="truncate only the first N ws")
    p.add_argument("--noise-mode", choices=["const", "random", "none"], default="const")
    p.add_argument("--lod", type=finite_float, default=None, help="level of detail (default: the network's buffer)")
    p.add_argument("--num-coarse", type=positive_int, default=None, help="coarse samples per ray (default: G's)")
    p.add_argument("--num-fine", type=positive_int, default=None, help="importance samples per ray (default: G's)")
    p.add_argument("--trajectory", choices=["yaw", "pitch", "orbit"], default="yaw", help="video camera path")
    p.add_argument("--frames", type=positive_int, default=48, help="video frames")
    p.add_argument("--fps", type=positive_int, default=24)
    p.add_argument("--yaw-range", type=finite_float, default=0.4, help="yaw amplitude around the mean, radians")
    p.add_argument("--pitch-range", type=finite_float, default=0.2, help="pitch amplitude around the mean, radians")
    p.add_argument("--views", type=positive_int, default=5, help="grid columns (yaws across --yaw-range)")
    p.add_argument("--mesh-res", type=positive_int, default=256, help="density grid resolution per axis")
    p.add_argument("--mesh-level", type=finite_float, default=10.0, help="density iso-level (original: 10)")
    p.add_argument("--cube", type=finite_float, default=0.3, help="side of the meshed cube at the origin")
    p.add_argument("--chunk", type=positive_int, default=1 << 18, help="points per density query")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    if args.mesh_res < 2:
        p.error(f"--mesh-res: expected at least 2 grid points per axis, got {args.mesh_res}")
    if args.num_coarse is not None and args.num_coarse < 3:
        p.error(f"--num-coarse: the importance sampler needs at least 3 coarse samples, got {args.num_coarse}")
    if args.cube <= 0:
        p.error(f"--cube: expected a positive side length, got {args.cube}")
    return args


def load_generator(path: str, device: str):
    nets = load_networks(path, device=device)
    G = nets["G_ema"] if nets["G_ema"] is not None else nets["G"]
    if G is None:
        raise ValueError(f"--network {path}: the file holds no generator (networks: {nets['meta']['networks']})")
    if not hasattr(G.synthesis, "render_features"):
        raise ValueError(f"--network {path}: {type(G).__name__} is not a VolumeGAN generator (no volume rendering)")
    return G


def _replace_atomic(path: Path, write) -> Path:
    """``write(tmp)`` then rename onto ``path`` (no partial files when interrupted)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def mapped_ws(G, args, seeds) -> torch.Tensor:
    """ws [len(seeds), num_ws, w_dim] for NVlabs-style seeds (RandomState(seed).randn)."""
    z = np.stack([np.random.RandomState(seed).randn(G.z_dim) for seed in seeds]).astype(np.float32)
    return G.mapping(
        torch.from_numpy(z).to(args.device), None, truncation_psi=args.trunc, truncation_cutoff=args.trunc_cutoff
    )


def render(G, args, ws: torch.Tensor, yaw, pitch, extras: bool = False):
    """Image (and extras) of ws at the given angles (floats or [N] tensors); seeded sampling for reproducibility."""
    torch.manual_seed(0)
    n = ws.shape[0]
    camera = {"yaw": torch.as_tensor(yaw, dtype=torch.float32).expand(n), "pitch": torch.as_tensor(pitch).expand(n)}
    return G.synthesis(
        ws,
        camera=camera,
        lod=args.lod,
        perturb=False,
        num_coarse=args.num_coarse,
        num_fine=args.num_fine,
        noise_mode=args.noise_mode,
        return_extras=extras,
    )


def trajectory(G, args) -> list[tuple[float, float]]:
    """(yaw, pitch) per frame: a sine sweep of one angle, or the original's orbit (both at once)."""
    cam = G.synthesis.camera
    return camera_trajectory(
        args.trajectory, cam["yaw_mean"], cam["pitch_mean"], args.yaw_range, args.pitch_range, args.frames
    )


def make_videos(G, args) -> list[Path]:
    paths = []
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    for seed in tqdm(args.seeds, desc="videos", unit="seed"):
        ws = mapped_ws(G, args, [seed])
        frames = []
        for yaw, pitch in tqdm(trajectory(G, args), desc=f"seed {seed}", unit="frame", leave=False):
            frames.append(to_hwc(to_uint8(render(G, args, ws, yaw, pitch), quantize="nvidia")[0]))
        path = args.outdir / f"seed{seed:04d}_{args.trajectory}.mp4"
        write_video(str(path), np.stack(frames), fps=args.fps, codec=codec)
        paths.append(path)
    return paths


def depth_to_uint8(depth: torch.Tensor, near: float, far: float, size: int) -> torch.Tensor:
    """Depth [N, 1, r, r] -> uint8 [N, 1, size, size], near = white, far = black (nearest upsampling)."""
    x = torch.nn.functional.interpolate((far - depth) / (far - near), size=(size, size), mode="nearest")
    return to_uint8(x, drange=(0.0, 1.0))


def make_grid_pngs(G, args) -> list[Path]:
    cam = G.synthesis.camera
    yaws = np.linspace(cam["yaw_mean"] - args.yaw_range, cam["yaw_mean"] + args.yaw_range, args.views)
    ws = mapped_ws(G, args, args.seeds)
    images, depths = [], []
    for yaw in tqdm(yaws, desc="views", unit="view"):
        img, extras = render(G, args, ws, float(yaw), cam["pitch_mean"], extras=True)
        images.append(to_uint8(img, quantize="nvidia"))
        depths.append(depth_to_uint8(extras["depth"], *G.synthesis.depth_range, img.shape[-1]))
    shape = (len(args.seeds), args.views)  # row = seed, column = view
    return [
        save_image_grid(torch.stack(images, dim=1).flatten(0, 1), args.outdir / "grid.png", shape),
        save_image_grid(torch.stack(depths, dim=1).flatten(0, 1), args.outdir / "depth.png", shape),
    ]


def make_swap_png(G, args) -> list[Path]:
    cam = G.synthesis.camera
    ws = mapped_ws(G, args, args.seeds)
    k = G.num_nerf_ws
    rows = []
    for i in tqdm(range(len(args.seeds)), desc="swap rows", unit="row"):
        mixed = torch.cat([ws[i : i + 1, :k].expand(len(args.seeds), -1, -1), ws[:, k:]], dim=1)
        rows.append(to_uint8(render(G, args, mixed, cam["yaw_mean"], cam["pitch_mean"]), quantize="nvidia"))
    n = len(args.seeds)
    return [save_image_grid(torch.cat(rows), args.outdir / "swap.png", (n, n))]


def density_grid(G, ws: torch.Tensor, res: int, cube: float, chunk: int) -> np.ndarray:
    """Raw density on a res^3 grid over [-cube/2, cube/2]^3; array axes (x, y, z)."""
    lin = torch.linspace(-cube / 2, cube / 2, res, device=ws.device)
    volume = G.synthesis.volume(ws[:, 0])
    pts = torch.stack(torch.meshgrid(lin, lin, lin, indexing="ij"), dim=-1).reshape(1, -1, 3)
    out = torch.empty(pts.shape[1])
    for start in tqdm(range(0, pts.shape[1], chunk), desc="density", unit="chunk", leave=False):
        sigma, _ = G.synthesis.query(ws, pts[:, start : start + chunk], volume=volume)
        out[start : start + chunk] = sigma[0].float().cpu()
    return out.reshape(res, res, res).numpy()


def write_ply(path: Path, verts: np.ndarray, faces: np.ndarray) -> Path:
    """Binary little-endian PLY (float32 x y z, uchar-count int32 triangles)."""
    header = (
        f"ply\nformat binary_little_endian 1.0\nelement vertex {len(verts)}\nproperty float x\nproperty float y\n"
        f"property float z\nelement face {len(faces)}\nproperty list uchar int vertex_indices\nend_header\n"
    )
    tri = np.empty(len(faces), dtype=[("n", "u1"), ("i", "<i4", (3,))])
    tri["n"], tri["i"] = 3, faces

    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(header.encode("ascii"))
            f.write(np.ascontiguousarray(verts, dtype="<f4").tobytes())
            f.write(tri.tobytes())

    return _replace_atomic(path, write)


def write_obj(path: Path, verts: np.ndarray, faces: np.ndarray) -> Path:
    def write(tmp):
        with open(tmp, "w") as f:
            np.savetxt(f, verts, fmt="v %.6f %.6f %.6f")
            np.savetxt(f, faces + 1, fmt="f %d %d %d")

    return _replace_atomic(path, write)


def make_meshes(G, args) -> list[Path]:
    from skimage.measure import marching_cubes

    paths = []
    for seed in tqdm(args.seeds, desc="meshes", unit="seed"):
        field = density_grid(G, mapped_ws(G, args, [seed]), args.mesh_res, args.cube, args.chunk)
        lo, hi = float(field.min()), float(field.max())
        if not lo < args.mesh_level < hi:
            raise ValueError(
                f"--mesh-level {args.mesh_level}: outside the density range ({lo:.4g}, {hi:.4g}) of seed {seed}; "
                "pick a level inside it"
            )
        step = args.cube / (args.mesh_res - 1)
        verts, faces, _, _ = marching_cubes(field, level=args.mesh_level, spacing=(step, step, step))
        verts = (verts - args.cube / 2).astype(np.float32)
        paths.append(write_ply(args.outdir / f"seed{seed:04d}.ply", verts, faces))
        paths.append(write_obj(args.outdir / f"seed{seed:04d}.obj", verts, faces))
        log.info("seed %d: %d vertices, %d faces", seed, len(verts), len(faces))
    return paths


@torch.no_grad()
def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args.device = check_device(args.device)
    G = load_generator(args.network, args.device)
    if args.lod is not None and not 0 <= args.lod <= G.max_lod:
        raise ValueError(f"--lod {args.lod}: expected a value in [0, {G.max_lod}] for this network")
    make = {"video": make_videos, "grid": make_grid_pngs, "swap": make_swap_png, "mesh": make_meshes}[args.mode]
    paths = make(G, args)
    log.info("wrote %s", ", ".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (FileNotFoundError, ValueError, pickle.UnpicklingError) as e:
        sys.exit(f"error: {e}")
