"""Seconds per GAN training step and peak memory on the CPU (foundation and InsGen benchmarks).

Setting of the reference measurement: batch 8, channel_base 16384, channel_max 256, 8 mapping layers, 2 threads,
32x32 and 64x64; the step time is amortised over lazy regularisation (16 iterations = 1 Dreg + 4 Greg).
Every configuration runs in its own subprocess (peak RSS per configuration; the allocator setting is an
environment variable read at process start). Printed: median seconds per amortised step over interleaved
repeats and the ratios against the baselines measured in the same run (ops ref, stock allocator, the
StyleGAN2-ADA row).

Methods: ``stylegan2_ada``; ``insgen`` (query views read off the adversarial D passes, the suite default);
``insgen-separate`` (the original's separate query passes); ``insgen-no-g`` (lambda_g = 0).
``--flops`` also counts the convolution and matmul FLOPs of one amortised step and measures this machine's
sgemm peak: their ratio is a lower bound on the step time of any implementation doing the same work.

Backends: ``ref``, ``compiled``, ``auto`` (the ops/ switch) and ``floor``: upfirdn2d, bias_act and grid_sample
replaced by stand-ins that only write an output of the right shape (and pass gradients of the right shapes),
everything else unchanged. Its step time bounds what any kernels for these ops can reach (Amdahl): ref / floor
is the largest ref / compiled ratio possible. The floor's images are meaningless; only its time is.

    python experiments/bench_train.py                 # full matrix
    python experiments/bench_train.py --res 32 --repeats 1 --flops
    python experiments/bench_train.py --res 32 --allocators tuned --backends ref compiled floor --repeats 3
    python experiments/bench_train.py --res 32 --backends auto --allocators tuned \
        --methods stylegan2_ada insgen insgen-separate
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


METHODS = ("stylegan2_ada", "insgen", "insgen-separate", "insgen-no-g")


def seeded_bench_parts(res: int):
    """(G, D, module kwargs) of the benchmark, seeded so that every row and every method script starts alike."""
    import torch

    torch.manual_seed(0)
    G, D = bench_networks(res)
    return G, D, bench_module_kwargs(res)


def bench_module(method: str, res: int):
    """The module of one benchmark row on :func:`seeded_bench_parts`."""
    from lightning_modules.gan import AdversarialModule
    from lightning_modules.insgen import InsGenModule

    G, D, kwargs = seeded_bench_parts(res)
    if method == "stylegan2_ada":
        return AdversarialModule(G, D, **kwargs)
    insgen = {"queue": {"real_size": 10, "fake_size": 10}}  # 5 % of the 200 mirrored faces
    if method == "insgen-separate":
        insgen["query_view"] = "separate"
    elif method == "insgen-no-g":
        insgen["lambda_g"] = 0.0
    elif method != "insgen":
        raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
    return InsGenModule(G, D, insgen=insgen, **kwargs)


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


def floor_ops() -> dict:
    """Stand-ins for the reference paths of the three ops that cost one output-sized write (forward) and one
    input-sized gradient (backward), with the reference's output shapes: the ``floor`` backend."""
    import ops.upfirdn2d as up

    def upfirdn2d_floor(x, f, up_=1, down=1, padding=0, flip_filter=False, gain=1):
        ux, uy = up._parse_scaling(up_)
        dx, dy = up._parse_scaling(down)
        px0, px1, py0, py1 = up._parse_padding(padding)
        fw, fh = up._get_filter_size(f)
        out_w = (x.shape[3] * ux + px0 + px1 - fw) // dx + 1
        out_h = (x.shape[2] * uy + py0 + py1 - fh) // dy + 1
        return x[:, :, :1, :1].expand(x.shape[0], x.shape[1], out_h, out_w) * 1.0

    def bias_act_floor(x, b=None, dim=1, act="linear", alpha=None, gain=None, clamp=None):
        return x * 1.0 if b is None else x + b.reshape([-1 if i == dim else 1 for i in range(x.ndim)])

    def grid_sample_floor(input, grid):
        return input[:, :, :1, :1].expand(input.shape[0], input.shape[1], grid.shape[1], grid.shape[2]) * 1.0

    return {"upfirdn2d": upfirdn2d_floor, "bias_act": bias_act_floor, "grid_sample": grid_sample_floor}


def install_floor_ops() -> None:
    """Swap the reference paths for :func:`floor_ops` and select ``ref`` (this process only)."""
    import ops
    import ops.bias_act as ba
    import ops.grid_sample as gs
    import ops.upfirdn2d as up

    floor = floor_ops()
    up._upfirdn2d_ref, ba._bias_act_ref, gs._grid_sample_ref = (
        floor["upfirdn2d"],
        floor["bias_act"],
        floor["grid_sample"],
    )
    ops.set_backend("ref")


def run_one(res: int, backend: str, iters: int, method: str) -> dict:
    """One configuration in this process: amortised seconds per step and peak RSS."""
    import torch

    import ops
    from datamodules.embedded import EmbeddedImageDataModule

    torch.set_num_threads(2)
    if backend == "floor":
        install_floor_ops()
    else:
        ops.set_backend(backend)
    module = bench_module(method, res)
    dm = EmbeddedImageDataModule(name="faces", resolution=res, batch_size=8, num_workers=0, xflip=True)
    times = time_training_steps(module, dm, warmup=2, iters=iters)
    return {
        "sec_per_step": sum(times) / len(times),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def amortised_gflop(method: str, res: int) -> dict[str, float]:
    """Convolution + matmul GFLOP of each phase at batch 8 and of one amortised step (Gmain + Dmain every
    iteration, Greg every 4th, Dreg every 16th), counted with torch's FLOP formulas on the ops as dispatched."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import flop_registry

    class Count(TorchDispatchMode):
        total = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            if func._overloadpacket in flop_registry:
                self.total += flop_registry[func._overloadpacket](*args, **kwargs, out_val=out)
            return out

    module = bench_module(method, res)
    module.trainer = None
    real, c = torch.rand(8, 3, res, res) * 2 - 1, torch.zeros(8, 0)
    weights = {"Gmain": 1.0, "Greg": 1 / 4, "Dmain": 1.0, "Dreg": 1 / 16}
    out = {}
    for phase, weight in weights.items():
        trained, frozen = (module.G, module.D) if phase.startswith("G") else (module.D, module.G)
        trained.requires_grad_(True)
        frozen.requires_grad_(False)
        module._stats = {}
        loss_fn = getattr(module, f"{phase[0].lower()}{phase[1:].lower()}_loss")
        with Count() as count:
            sum(loss_fn(real, c).values()).backward()
        module.zero_grad(set_to_none=True)
        out[phase] = count.total / 1e9
        out["amortised"] = out.get("amortised", 0.0) + weight * out[phase]
    return out


def sgemm_peak_gflops(n: int = 2048, repeats: int = 7) -> float:
    """Best-of-``repeats`` fp32 matmul rate of this machine with the benchmark's 2 threads."""
    import torch

    torch.set_num_threads(2)
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


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
    ap.add_argument("--methods", nargs="+", default=["stylegan2_ada"], choices=METHODS)
    ap.add_argument("--flops", action="store_true", help="also count FLOPs and print the sgemm lower bound")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        res, backend, iters, method = json.loads(args.worker)
        print(json.dumps(run_one(res, backend, iters, method)))
        return

    # Repeats are interleaved (every configuration once per round) so that slow phases of a shared machine hit
    # all rows alike; the median over rounds is reported.
    configs = [
        (res, backend, alloc, method)
        for res in args.res
        for backend in args.backends
        for alloc in args.allocators
        for method in args.methods
    ]
    runs: dict[tuple, list[dict]] = {key: [] for key in configs}
    for round_idx in range(args.repeats):
        for key in configs:
            runs[key].append(spawn(key[0], key[1], key[2], args.iters, key[3]))
            res, backend, alloc, method = key
            print(
                f"round {round_idx}  res {res:4d}  ops {backend:8s}  malloc {alloc:6s}  {method:16s} "
                f"{runs[key][-1]['sec_per_step']:.3f} s/step",
                flush=True,
            )
    rows = {}
    for key in configs:
        rows[key] = {
            "sec": statistics.median(r["sec_per_step"] for r in runs[key]),
            "rss": max(r["peak_rss_mb"] for r in runs[key]),
        }
        res, backend, alloc, method = key
        print(
            f"res {res:4d}  ops {backend:8s}  malloc {alloc:6s}  {method:16s} "
            f"median {rows[key]['sec']:.3f} s/step  peak {rows[key]['rss']:.0f} MB"
        )
    print("\nratios (higher = faster; 'x ADA' = cost relative to the stylegan2_ada row):")
    for (res, backend, alloc, method), row in rows.items():
        line = f"res {res} ops {backend} malloc {alloc} {method}:"
        orig = min(ORIGINAL.get(res, {}).values(), default=None)
        if method == "stylegan2_ada":
            if orig:
                line += f" original best {orig:.2f} s / ours = {orig / row['sec']:.2f}x"
            if (res, "ref", alloc, method) in rows and backend != "ref":
                line += f"; ref / {backend} = {rows[(res, 'ref', alloc, method)]['sec'] / row['sec']:.2f}x"
                if backend == "floor":
                    line += " (the most any ops kernels could give)"
            if alloc == "tuned" and (res, backend, "stock", method) in rows:
                line += f"; stock / tuned = {rows[(res, backend, 'stock', method)]['sec'] / row['sec']:.2f}x"
        elif (res, backend, alloc, "stylegan2_ada") in rows:
            line += f" {row['sec'] / rows[(res, backend, alloc, 'stylegan2_ada')]['sec']:.2f}x ADA"
        print(line)
    if args.flops:
        peak = sgemm_peak_gflops()
        print(f"\nsgemm peak of this machine (2 threads, 2048^3, best of 7): {peak:.1f} GFLOP/s")
        for res in args.res:
            for method in args.methods:
                gflop = amortised_gflop(method, res)
                phases = ", ".join(f"{k} {v:.1f}" for k, v in gflop.items() if k != "amortised")
                line = (
                    f"res {res} {method}: {gflop['amortised']:.1f} GFLOP (conv + matmul) per amortised step "
                    f"({phases}); lower bound at the sgemm peak {gflop['amortised'] / peak:.2f} s/step"
                )
                orig = min(ORIGINAL.get(res, {}).values(), default=None)
                if orig and method == "stylegan2_ada":
                    line += (
                        f"; the quoted original {orig:.2f} s would need {gflop['amortised'] / orig:.0f} GFLOP/s, "
                        f"1.25x faster than it {1.25 * gflop['amortised'] / orig:.0f} GFLOP/s"
                    )
                print(line)


if __name__ == "__main__":
    main()
