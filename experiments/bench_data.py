"""Loader throughput: images/s of ``ImageDataModule`` on a generated 256x256 zip (docs/data.md).

    python experiments/bench_data.py [--images 512] [--workers 2] [--batch 32]

Writes procedural images (smooth colour fields + noise, PNG) with ``prepare_data``'s layout to a temp zip,
then times batches from the training DataLoader (InfiniteSampler) with 0 workers (baseline) and with
``--workers``; prints the median of repeats and the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import PIL.Image

from datamodules.images import ImageDataModule
from experiments.prepare_data import _write


def make_zip(path: Path, n: int, res: int, seed: int = 0) -> None:
    """n procedural RGB images (PNG, compression 0) in the stylegan2-ada layout."""
    import io

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:res, 0:res] / res
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for i in range(n):
            f = rng.uniform(1, 6, size=3)
            p = rng.uniform(0, 2 * np.pi, size=3)
            img = np.stack([np.sin(f[c] * (xx + yy * c) * 2 * np.pi + p[c]) for c in range(3)], -1)
            img = (img * 100 + 128 + rng.normal(0, 10, img.shape)).clip(0, 255).astype(np.uint8)
            buf = io.BytesIO()
            PIL.Image.fromarray(img).save(buf, format="png", compress_level=0)
            _write(zf, f"{i // 1000:05d}/img{i:08d}.png", buf.getvalue())


def images_per_second(path: Path, workers: int, batch: int, batches: int, repeats: int) -> float:
    dm = ImageDataModule(str(path), resolution=256, batch_size=batch, num_workers=workers, pin_memory=False)
    dm.setup("fit")
    it = iter(dm.train_dataloader())
    next(it)  # worker start-up is not part of the throughput
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(batches):
            img, _c = next(it)
        rates.append(batches * img.shape[0] / (time.perf_counter() - t0))
    return statistics.median(rates)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--batches", type=int, default=8, help="batches per repeat")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench256.zip"
        t0 = time.perf_counter()
        make_zip(path, args.images, 256)
        print(
            f"wrote {args.images} images 256x256 ({path.stat().st_size / 2**20:.1f} MiB) "
            f"in {time.perf_counter() - t0:.1f}s"
        )
        base = images_per_second(path, 0, args.batch, args.batches, args.repeats)
        fast = images_per_second(path, args.workers, args.batch, args.batches, args.repeats)
    print(f"loader 0 workers: {base:.0f} img/s (baseline)")
    print(f"loader {args.workers} workers: {fast:.0f} img/s  ratio {fast / base:.2f}x")


if __name__ == "__main__":
    main()
