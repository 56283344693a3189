"""Seconds per training step of InsGen vs plain StyleGAN2-ADA, measured in one process (spec insgen.md §9 #5).

Settings of the StyleGAN2 benchmark (experiments/bench_train.py, whose network factory and Trainer-driven step
timer are reused): 32x32, batch 8, channel_base 16384, channel_max 256, 8 mapping layers, 2 threads, ADA pipe at
p = 0.2, lazy R1 / path length; the step time is amortised over lazy regularisation (16 iterations = 1 Dreg +
4 Greg). Variants: ``ada`` (AdversarialModule), ``insgen`` (InsGenModule, official defaults), ``insgen-no-g``
(lambda_g = 0: no G-phase ID term). Variants are interleaved per repeat; the median over repeats is printed with
its ratio to ``ada``. The original costs about 1.75x ADA at 32x32 on this kind of CPU (issue 6); target <= 1.4x.

    python experiments/bench_insgen.py --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

VARIANTS = ("ada", "insgen", "insgen-no-g")


def build(variant: str, res: int):
    import torch

    from experiments.bench_train import bench_module_kwargs, bench_networks
    from lightning_modules.gan import AdversarialModule
    from lightning_modules.insgen import InsGenModule

    torch.manual_seed(0)
    G, D = bench_networks(res)
    kwargs = bench_module_kwargs(res)
    if variant == "ada":
        return AdversarialModule(G, D, **kwargs)
    insgen = {"queue": {"real_size": 10, "fake_size": 10}}  # 5 % of the 200 mirrored faces
    if variant == "insgen-no-g":
        insgen["lambda_g"] = 0.0
    return InsGenModule(G, D, insgen=insgen, **kwargs)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--res", type=int, default=32)
    ap.add_argument("--iters", type=int, default=16, help="timed steps (16 = one full lazy-reg cycle)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    args = ap.parse_args(argv)

    import torch

    from datamodules.embedded import EmbeddedImageDataModule
    from experiments.bench_train import time_training_steps

    torch.set_num_threads(args.threads)
    if "ada" not in args.variants:
        args.variants.insert(0, "ada")
    results: dict[str, list[float]] = {v: [] for v in args.variants}
    for rep in range(args.repeats):
        for variant in args.variants:
            module = build(variant, args.res)
            dm = EmbeddedImageDataModule(name="faces", resolution=args.res, batch_size=8, num_workers=0, xflip=True)
            times = time_training_steps(module, dm, warmup=args.warmup, iters=args.iters)
            results[variant].append(sum(times) / len(times))
            print(f"repeat {rep} {variant:12s} {results[variant][-1]:.3f} s/step", flush=True)
    base = statistics.median(results["ada"])
    print(
        f"\n{args.res}x{args.res}, batch 8, {args.threads} threads, amortised over {args.iters} steps, "
        f"median of {args.repeats}"
    )
    print(f"{'variant':12s} {'s/step':>8s} {'x ada':>7s}")
    for variant, values in results.items():
        med = statistics.median(values)
        print(f"{variant:12s} {med:8.3f} {med / base:7.2f}")


if __name__ == "__main__":
    main()
