"""Render images from any supported network file (NVlabs ``generate.py`` flags).

``python experiments/generate.py --network FILE --seeds 0-3,5 --trunc 0.7 --outdir out`` writes
``seedXXXX.png`` per seed (``zXXXX.png`` with ``--z``), ``grid.png`` and, with ``--save-array``,
``images.npy``: the generator output before clamping/quantisation, float32 [N, C, H, W]. The file may be
any format ``networks.checkpoint.load_networks`` reads (converted on the fly); G_ema is used when present.
Non-finite ``--trunc`` or latents, and a network whose output is not finite, are refused: no image is written.
"""

from __future__ import annotations

import argparse
import logging
import math
import pickle
import re
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from networks.checkpoint import load_networks
from networks.image_output import save_image_grid, to_uint8

log = logging.getLogger("generate")


def parse_range(text: str) -> list[int]:
    """``'0-3,5'`` → ``[0, 1, 2, 3, 5]`` (NVlabs ``num_range``, comma-separated ranges)."""
    out = []
    for part in text.split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not m:
            raise argparse.ArgumentTypeError(f"--seeds: expected ranges like '0-3,5', got {part!r} in {text!r}")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi < lo:
            raise argparse.ArgumentTypeError(f"--seeds: range {part!r} ends before it starts")
        out.extend(range(lo, hi + 1))
    return out


def finite_float(text: str) -> float:
    """argparse type: a finite number (``nan``/``inf`` would render black or white images)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def check_device(name: str) -> torch.device:
    """``--device`` as a torch device that exists on this machine, else a ValueError saying what to pass."""
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise ValueError(f"--device {name!r} is not a device name (e.g. cpu, cuda, cuda:1): {e}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name}: no CUDA device is available here; pass --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) are visible")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {name}: MPS is not available here; pass --device cpu")
    return device


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--network", required=True, help="network file (any supported format)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--seeds", type=parse_range, help="seeds, e.g. 0-3,5")
    src.add_argument("--z", type=Path, help=".npy of latents [N, z_dim] to use instead of seeds")
    p.add_argument("--trunc", type=finite_float, default=1.0, help="truncation psi (default 1)")
    p.add_argument("--trunc-cutoff", type=int, default=None, help="truncate only the first N ws")
    p.add_argument("--noise-mode", choices=["const", "random", "none"], default="const")
    p.add_argument("--class", dest="class_idx", type=int, default=None, help="class label (conditional G)")
    p.add_argument("--outdir", type=Path, required=True)
    p.add_argument("--save-array", action="store_true", help="also write images.npy (float32, pre-clamp)")
    p.add_argument("--batch", type=positive_int, default=16, help="images per forward pass")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return p.parse_args(argv)


def latents(args, z_dim: int) -> tuple[np.ndarray, list[str]]:
    """z [N, z_dim] and the PNG names: seeds as NVlabs (RandomState(seed).randn), or the --z file."""
    if args.z is not None:
        if not args.z.is_file():
            raise FileNotFoundError(f"--z: file not found: {args.z}")
        z = np.load(args.z)
        if z.ndim != 2 or z.shape[1] != z_dim:
            raise ValueError(f"--z {args.z}: expected an array [N, {z_dim}], got shape {list(z.shape)}")
        if not np.issubdtype(z.dtype, np.number):
            raise ValueError(f"--z {args.z}: expected numbers, got dtype {z.dtype}")
        bad = np.flatnonzero(~np.isfinite(z).all(axis=1))
        if len(bad):
            raise ValueError(f"--z {args.z}: {len(bad)} latents hold NaN or inf values (rows {bad[:5].tolist()})")
        return z.astype(np.float32), [f"z{i:04d}.png" for i in range(len(z))]
    z = np.stack([np.random.RandomState(seed).randn(z_dim) for seed in args.seeds]).astype(np.float32)
    return z, [f"seed{seed:04d}.png" for seed in args.seeds]


def labels(G, class_idx: int | None, n: int, device) -> torch.Tensor | None:
    if G.c_dim == 0:
        if class_idx is not None:
            log.warning("--class=%d ignored: the network is unconditional", class_idx)
        return None
    if class_idx is None or not 0 <= class_idx < G.c_dim:
        raise ValueError(f"--class: the network is conditional with {G.c_dim} classes; pass --class 0..{G.c_dim - 1}")
    c = torch.zeros([n, G.c_dim], device=device)
    c[:, class_idx] = 1
    return c


@torch.no_grad()
def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args.device = check_device(args.device)
    nets = load_networks(args.network, device=args.device)
    G = nets["G_ema"] if nets["G_ema"] is not None else nets["G"]
    if G is None:
        raise ValueError(f"{args.network}: the file holds no generator (networks: {nets['meta']['networks']})")
    z, names = latents(args, G.z_dim)
    c_all = labels(G, args.class_idx, len(z), args.device)
    args.outdir.mkdir(parents=True, exist_ok=True)
    raw, pngs = [], []
    starts = range(0, len(z), args.batch)
    for start in tqdm(starts, desc="generate", unit="batch", disable=len(starts) < 2):
        zb = torch.from_numpy(z[start : start + args.batch]).to(args.device)
        cb = None if c_all is None else c_all[start : start + args.batch]
        img = G(zb, cb, truncation_psi=args.trunc, truncation_cutoff=args.trunc_cutoff, noise_mode=args.noise_mode)
        bad = (~torch.isfinite(img).flatten(1).all(dim=1)).nonzero().flatten().tolist()
        if bad:
            raise ValueError(
                f"{args.network}: the generator output is not finite for {names[start + bad[0]]} and "
                f"{len(bad) - 1} more of this batch; the network file is broken (no image written for them)"
            )
        if args.save_array:
            raw.append(img.float().cpu().numpy())
        batch = to_uint8(img, quantize="nvidia").cpu()
        for name, im in zip(names[start : start + args.batch], batch):
            save_image_grid(im[None], args.outdir / name, (1, 1))
        pngs.append(batch)
    save_image_grid(torch.cat(pngs), args.outdir / "grid.png")
    if args.save_array:
        np.save(args.outdir / "images.npy", np.concatenate(raw).astype(np.float32))
    log.info("wrote %d images + grid.png to %s", len(z), args.outdir)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except torch.OutOfMemoryError as e:
        sys.exit(f"error: out of memory on the device ({str(e).splitlines()[0]}); lower --batch or use --device cpu")
    except (OSError, ValueError, KeyError, pickle.UnpicklingError) as e:
        sys.exit(f"error: {e}")
