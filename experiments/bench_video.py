"""Benchmark: video loader throughput (clips/s, PyAV decode + resize, N workers) vs the CMPL training step rate
(clips/s through both networks, forward + backward + on-device augmentation), measured in the same process on the
embedded action videos with the cmpl_demo settings. Prints medians of repeats and their ratio (loader / model):
a ratio above 1 means the loader keeps up.

    python experiments/bench_video.py [--workers 2] [--repeats 3] [--data-dir data]
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

import torch

from datamodules.embedded_actions import EmbeddedActionsDataModule
from lightning_modules.semi_supervised import CMPLModule
from networks.resnet3d import ResNet3d


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batches", type=int, default=8)
    ap.add_argument("--data-dir", default="data")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dm = EmbeddedActionsDataModule(root=f"{args.data_dir}/embedded_actions", batch_size=8, mu=3, frames=8, stride=2,
                                   num_workers=args.workers, labeled_percent=10, steps_per_epoch=10_000)  # fmt: skip
    dm.prepare_data()
    dm.setup("fit")
    loader = dm.train_dataloader()["unlabeled"]
    it = iter(loader)
    next(it)  # start the workers
    load_rates = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        n = sum(next(it)["video"].shape[0] for _ in range(args.batches))
        load_rates.append(n / (time.perf_counter() - t))

    net = functools.partial(ResNet3d, depth=18, num_classes=6, inflate=[1, 1, 1, 1], dropout=0.0)
    model = CMPLModule(net(width_mult=0.125), net(width_mult=0.03125), threshold=0.8)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    raw = {"labeled": next(iter(dm.train_dataloader()["labeled"])), "unlabeled": next(it)}
    step_rates = []
    for r in range(args.repeats + 1):
        t = time.perf_counter()
        for _ in range(args.batches // 2):
            batch = dm.on_after_batch_transfer(raw, 0)
            opt.zero_grad()
            model.compute_losses(batch)["loss"].backward()
            opt.step()
        clips = (args.batches // 2) * (batch["x"].shape[0] + batch["u_weak"].shape[0])
        if r:  # first repeat is warm-up
            step_rates.append(clips / (time.perf_counter() - t))
    load, step = statistics.median(load_rates), statistics.median(step_rates)
    print(f"loader ({args.workers} workers, 8x32x42 clips decoded from .avi): {load:.1f} clips/s")
    print(f"CMPL train step (labeled + unlabeled clips, weak+strong aug, both nets): {step:.1f} clips/s")
    print(f"ratio loader/model: {load / step:.2f}")


if __name__ == "__main__":
    main()
