"""Seconds per StyleGAN2-ADA training step and peak memory on the CPU (issue: foundation benchmark).

Setting of the reference measurement: batch 8, channel_base 16384, channel_max 256, 8 mapping layers, 2 threads,
32x32 and 64x64; the step time is amortised over lazy regularisation (16 iterations = 1 Dreg + 4 Greg).
Every configuration runs in its own subprocess (peak RSS per configuration; the allocator setting is an
environment variable read at process start). Printed: median seconds per amortised step over repeats and the
ratios against the baselines measured in the same run.

    python experiments/bench_train.py                 # full matrix
    python experiments/bench_train.py --res 32 --repeats 1
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TUNED_MALLOC = "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736"
# The original implementation on this kind of machine (issue text): seconds per amortised step.
ORIGINAL = {32: {"stock": 0.86, "tuned": 0.82}, 64: {"stock": 3.6, "tuned": 2.9}}


def bench_networks(res: int, c_dim: int = 0):
    from networks.stylegan2 import Discriminator, Generator

    G = Generator(
        z_dim=512,
        c_dim=c_dim,
        w_dim=512,
        img_resolution=res,
        img_channels=3,
        mapping_kwargs={"num_layers": 8},
        synthesis_kwargs={"channel_base": 16384, "channel_max": 256},
    )
    D = Discriminator(c_dim=c_dim, img_resolution=res, img_channels=3, channel_base=16384, channel_max=256)
    return G, D


def bench_module_kwargs(res: int) -> dict:
    """AdversarialModule arguments of the benchmark: ADA bgc at p = 0.2, the auto preset's gamma, no grids."""
    from networks.augment import AugmentPipe

    return dict(
        batch_size=8,
        r1_gamma=0.0002 * res * res / 8,
        sample_every_kimg=1e9,
        ema_rampup=0.05,
        augment_pipe=AugmentPipe.from_preset("bgc"),
        augment_p=0.2,
        ada={"kimg": 100},
    )


def time_training_steps(module, datamodule, warmup: int, iters: int) -> list[float]:
    """Wall seconds of each of ``iters`` training steps after ``warmup`` steps, through a real Trainer."""
    import pytorch_lightning as pl

    class Timer(pl.Callback):
        def __init__(self):
            self.times: list[float] = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self._t = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.times.append(time.perf_counter() - self._t)

    timer = Timer()
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=-1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
        limit_train_batches=warmup + iters,
        max_steps=-1,
    )
    module.hparams.total_kimg = (warmup + iters) * module.global_batch / 1000
    trainer.fit(module, datamodule=datamodule)
    return timer.times[warmup:]


def run_one(res: int, backend: str, iters: int, method: str) -> dict:
    """One configuration in this process: amortised seconds per step and peak RSS."""
    import torch

    import ops
    from datamodules.embedded import EmbeddedImageDataModule
    from lightning_modules.gan import AdversarialModule

    torch.set_num_threads(2)
    ops.set_backend(backend)
    torch.manual_seed(0)
    G, D = bench_networks(res)
    if method != "stylegan2_ada":
        raise ValueError(f"unknown method {method!r}")
    module = AdversarialModule(G, D, **bench_module_kwargs(res))
    dm = EmbeddedImageDataModule(name="faces", resolution=res, batch_size=8, num_workers=0, xflip=True)
    times = time_training_steps(module, dm, warmup=2, iters=iters)
    return {
        "sec_per_step": sum(times) / len(times),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def spawn(res: int, backend: str, allocator: str, iters: int, method: str) -> dict:
    env = dict(os.environ)
    env.pop("GLIBC_TUNABLES", None)
    if allocator == "tuned":
        env["GLIBC_TUNABLES"] = TUNED_MALLOC
    env["WANDB_MODE"] = "disabled"
    cmd = [sys.executable, __file__, "--worker", json.dumps([res, backend, iters, method])]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"benchmark worker failed for {res} {backend} {allocator}:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--res", type=int, nargs="+", default=[32, 64])
    ap.add_argument("--backends", nargs="+", default=["ref", "auto"])
    ap.add_argument("--allocators", nargs="+", default=["stock", "tuned"])
    ap.add_argument("--iters", type=int, default=16, help="timed steps (16 = one full lazy-reg cycle)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        res, backend, iters, method = json.loads(args.worker)
        print(json.dumps(run_one(res, backend, iters, method)))
        return

    rows = {}
    for res in args.res:
        for backend in args.backends:
            for alloc in args.allocators:
                runs = [spawn(res, backend, alloc, args.iters, "stylegan2_ada") for _ in range(args.repeats)]
                rows[(res, backend, alloc)] = {
                    "sec": statistics.median(r["sec_per_step"] for r in runs),
                    "rss": max(r["peak_rss_mb"] for r in runs),
                }
                r = rows[(res, backend, alloc)]
                print(
                    f"res {res:4d}  ops {backend:8s}  malloc {alloc:6s}  {r['sec']:.3f} s/step  peak {r['rss']:.0f} MB"
                )
    print("\nratios (higher = faster):")
    for res in args.res:
        orig = min(ORIGINAL.get(res, {}).values(), default=None)
        for (r, backend, alloc), row in rows.items():
            if r != res:
                continue
            line = f"res {res} ops {backend} malloc {alloc}:"
            if orig:
                line += f" original best {orig:.2f} s / ours = {orig / row['sec']:.2f}x"
            if (res, "ref", alloc) in rows and backend != "ref":
                line += f"; ref / {backend} = {rows[(res, 'ref', alloc)]['sec'] / row['sec']:.2f}x"
            if alloc == "tuned" and (res, backend, "stock") in rows:
                line += f"; stock / tuned = {rows[(res, backend, 'stock')]['sec'] / row['sec']:.2f}x"
            print(line)


if __name__ == "__main__":
    main()
