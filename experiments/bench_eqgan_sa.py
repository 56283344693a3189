"""Seconds per training step of EqGAN-SA vs the plain StyleGAN2 generator, measured in one process.

Settings of the StyleGAN2 benchmark (experiments/bench_train.py; conf/experiment/bench_stylegan2_ada.yaml and
bench_eqgan_sa.yaml): 32x32, batch 8, channel_base 16384, channel_max 256, 8 mapping layers, 2 threads, the same
module settings (ADA pipe, lazy R1 / path length) for every variant; the step time is amortised over lazy
regularisation (16 iterations = 1 Dreg + 4 Greg). Variants: ``plain`` (StyleGAN2-ADA), ``sel`` (EqGAN-SA G, no
alignment), ``sel+align`` (EqGAN-SA), ``sel+align+di`` (with the training-time DI measurement). Variants are
interleaved per repeat; the median over repeats is printed with its ratio to ``plain``.

    python experiments/bench_eqgan_sa.py --repeats 3
"""

from __future__ import annotations

import argparse
import statistics

# variant -> (conf/experiment file, overrides)
VARIANTS = {
    "plain": ("bench_stylegan2_ada", []),
    "sel": ("bench_eqgan_sa", ["model.eqgan.ablation=sel", "model.di.enabled=false"]),
    "sel+align": ("bench_eqgan_sa", ["model.eqgan.ablation=full", "model.di.enabled=false"]),
    "sel+align+di": ("bench_eqgan_sa", ["model.eqgan.ablation=full", "model.di.enabled=true"]),
}


def build(variant: str, res: int):
    """(module, datamodule) of one variant, composed from its experiment file and seeded like bench_train's rows."""
    import torch

    from experiments.bench_train import bench_overrides
    from experiments.compose import compose_experiment, instantiate_datamodule, instantiate_module

    experiment, extra = VARIANTS[variant]
    cfg = compose_experiment(experiment, [*bench_overrides(res), *extra])
    torch.manual_seed(0)
    return instantiate_module(cfg), instantiate_datamodule(cfg)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--res", type=int, default=32)
    ap.add_argument("--iters", type=int, default=16, help="timed steps (16 = one full lazy-reg cycle)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="torch threads (2 = the StyleGAN2 benchmark)")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    args = ap.parse_args(argv)

    import logging

    import torch

    from experiments.bench_train import time_training_steps

    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    torch.set_num_threads(args.threads)
    times: dict[str, list[float]] = {v: [] for v in args.variants}
    for rep in range(args.repeats):
        for variant in args.variants:
            module, dm = build(variant, args.res)
            steps = time_training_steps(module, dm, warmup=args.warmup, iters=args.iters)
            times[variant].append(sum(steps) / len(steps))
            print(f"repeat {rep}  {variant:14s} {times[variant][-1]:.3f} s/step", flush=True)
    print(
        f"\nres {args.res}, batch 8, {args.threads} threads, amortised over {args.iters} steps, "
        f"median of {args.repeats}:"
    )
    base = statistics.median(times["plain"]) if "plain" in times else None
    for variant, ts in times.items():
        med = statistics.median(ts)
        ratio = f"  {med / base:.2f}x plain" if base else ""
        print(f"  {variant:14s} {med:.3f} s/step{ratio}")


if __name__ == "__main__":
    main()
