"""Evaluate a generator checkpoint under named metric protocols (docs/metrics.md).

    python experiments/evaluate.py --network run/checkpoints/last.ckpt --metrics fid50k_full,kid50k_full \
        --data data/ffhq256.zip --detectors-dir detectors

``--network`` is anything ``networks.checkpoint.load_networks`` reads (our checkpoints, converted official
snapshots). ``--data`` is a dataset path (folder / zip / LMDB) or ``embedded:faces`` / ``embedded:digits``.
``--detector random-cnn`` replaces every detector with a tiny seeded random CNN (offline/tests only: numbers
NOT comparable to papers). Each result is printed and appended with its protocol record to ``--out``.
``--di N`` adds EqGAN-SA's disequilibrium indicator of the file's G and D on N reals of ``--di-data`` (default
``--data``; pass held-out images where they exist), ``metrics.disequilibrium.evaluate_dataset_di``; ``--metrics ''``
skips the FID-type metrics. ``--reprojection N`` adds the 3-D consistency of a VolumeGAN generator on N seeded latents
(``metrics.reprojection.evaluate_reprojection``: reprojection error of rendered depth and colour between two views).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import pickle
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from metrics.detectors import load_detector
from metrics.evaluation import append_jsonl, evaluate_generator
from metrics.protocol import MetricProtocol, load_preset

log = logging.getLogger("evaluate")


def open_dataset(
    data: str, resolution: int, full: bool, max_images: int | None, xflip: bool, num_channels: int | None = None
):
    """``embedded:<name>`` or a dataset path; ``full`` ignores subset and x-flip (the ``_full`` reference).

    ``num_channels`` (the generator's) converts every image of a dataset path, whatever its first image is.
    """
    kw = {} if full else {"max_images": max_images, "xflip": xflip}
    if data.startswith("embedded:"):
        from datamodules.embedded import EmbeddedImageDataset

        return EmbeddedImageDataset(data.split(":", 1)[1], resolution=resolution, **kw)
    from datamodules.images import ImageFolderDataset

    return ImageFolderDataset(data, resolution=resolution, use_labels=False, num_channels=num_channels, **kw)


def evaluate_network(
    G: nn.Module,
    protocols: list[MetricProtocol],
    data: str,
    detectors_dir: str | None = None,
    detector: str | None = None,
    cache_dir: str | None = None,
    batch_size: int = 32,
    max_images: int | None = None,
    xflip: bool = False,
) -> list[dict[str, Any]]:
    """Evaluate ``G`` on ``protocols`` against ``data``; ``detector`` overrides every protocol's detector."""
    if detector is not None:
        protocols = [dataclasses.replace(p, detector=detector) for p in protocols]
    res, channels = int(G.img_resolution), int(G.img_channels)

    def reference(p: MetricProtocol):
        if p.reference == "custom":
            return open_dataset(p.reference_path, res, True, None, False, channels)
        return open_dataset(data, res, p.reference == "full", max_images, xflip, channels)

    return evaluate_generator(
        G,
        protocols,
        reference=reference,
        detector=lambda name: load_detector(name, detectors_dir),
        cache_dir=cache_dir,
        batch_size=batch_size,
    )


def disequilibrium(nets: dict, args: argparse.Namespace) -> dict[str, Any]:
    """DI of the file's D against its ``--di-generator`` on ``--di`` reals of ``--di-data`` (all images, no flip)."""
    from metrics.disequilibrium import evaluate_dataset_di

    missing = [k for k in ("D", args.di_generator) if nets.get(k) is None]
    if missing:
        raise KeyError(f"{args.network}: --di needs {missing} but the file holds {nets['meta']['networks']}")
    D = nets["D"].eval().requires_grad_(False).to(args.device)
    G = nets[args.di_generator].eval().requires_grad_(False).to(args.device)
    data = args.di_data or args.data
    reals = open_dataset(data, int(G.img_resolution), True, None, False, int(G.img_channels))
    return evaluate_dataset_di(G, D, reals, args.di, args.batch, args.di_seed, reals=data, generator=args.di_generator)


def reprojection(G: nn.Module, args: argparse.Namespace) -> dict[str, Any]:
    """3-D consistency of a volume-rendering generator on ``--reprojection`` seeded latents (docs/metrics.md)."""
    from metrics.reprojection import evaluate_reprojection

    if not hasattr(getattr(G, "synthesis", None), "render_features"):
        raise ValueError(f"{args.network}: --reprojection needs a VolumeGAN generator, got {type(G).__name__}")
    deltas = (5.0, 10.0, 15.0)
    results = evaluate_reprojection(G, n_samples=args.reprojection, yaw_deltas_deg=deltas, batch_size=args.batch)
    protocol = {
        "metric": "reprojection",
        "n_samples": args.reprojection,
        "yaw_deltas_deg": list(deltas),
        "truncation_psi": 1.0,
        "noise_mode": "const",
        "seed": 0,
        "design": "qiuyu96/Carver metrics/reprojection_error.py, backward bilinear sampling (docs/metrics.md)",
    }
    return {"name": "reprojection", "results": results, "protocol": protocol}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--network", required=True, help="checkpoint / network file (networks.checkpoint)")
    ap.add_argument("--metrics", default="fid50k_full", help="comma-separated presets of conf/metrics/")
    ap.add_argument("--data", required=True, help="dataset path or embedded:faces|digits")
    ap.add_argument("--detectors-dir", default="detectors", help="folder with inception-2015-12-05.pt etc.")
    ap.add_argument("--detector", default=None, help="override, e.g. random-cnn (not comparable to papers)")
    ap.add_argument("--cache-dir", default=None, help="hashed real-statistics cache folder")
    ap.add_argument("--n-fake", type=int, default=None, help="override n_fake of every protocol (logged)")
    ap.add_argument("--generator", choices=["G_ema", "G"], default="G_ema")
    ap.add_argument("--max-images", type=int, default=None, help="training subset (reference: train_subset)")
    ap.add_argument("--xflip", action="store_true", help="x-flip of the training set (reference: train_subset)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default=None, help="JSONL file for the results (default: next to the network)")
    ap.add_argument("--di", type=int, default=0, help="EqGAN-SA DI on this many reals and fakes (0: off)")
    ap.add_argument("--di-data", default=None, help="reals of the DI (held-out set; default: --data)")
    ap.add_argument("--di-generator", choices=["G", "G_ema"], default="G", help="DI fakes: G (D's opponent)")
    ap.add_argument("--di-seed", type=int, default=0)
    ap.add_argument("--reprojection", type=int, default=0, help="VolumeGAN 3-D consistency on N latents (0: off)")
    return ap.parse_args(argv)


def results_file(args: argparse.Namespace) -> Path:
    """``--out`` or ``<network>.metrics.jsonl``, checked writable before anything is computed."""
    from datamodules.side_files import writable

    out = Path(args.out) if args.out else Path(args.network).with_suffix(".metrics.jsonl")
    if not writable(out.parent):
        raise PermissionError(
            f"cannot write the results to {out}: {out.parent} is not writable; pass --out <a writable .jsonl path>"
        )
    return out


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    from networks.checkpoint import load_networks

    out = results_file(args)
    nets = load_networks(args.network)
    G = nets.get(args.generator)
    if G is None:
        raise KeyError(f"{args.network}: no {args.generator} in the file (has {sorted(k for k in nets if nets[k])})")
    G = G.eval().requires_grad_(False).to(args.device)
    protocols = [p for name in args.metrics.split(",") if name.strip() for p in load_preset(name.strip())]
    if args.n_fake is not None:
        protocols = [dataclasses.replace(p, n_fake=args.n_fake) for p in protocols]
    results = evaluate_network(
        G,
        protocols,
        args.data,
        detectors_dir=args.detectors_dir,
        detector=args.detector,
        cache_dir=args.cache_dir,
        batch_size=args.batch,
        max_images=args.max_images,
        xflip=args.xflip,
    )
    if args.di:
        results.append(disequilibrium(nets, args))
    if args.reprojection:
        results.append(reprojection(G, args))
    for r in results:
        r["protocol"] = {"network": str(args.network), "generator": args.generator, **r["protocol"]}
        append_jsonl(out, r)
        print(json.dumps(r["results"]))
    log.info("results with protocol records appended to %s", out)
    return results


if __name__ == "__main__":
    try:
        main()
    except (OSError, ValueError, KeyError, pickle.UnpicklingError) as e:
        sys.exit(f"error: {e}")
