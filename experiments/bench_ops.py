"""Benchmark: compiled suite_ops kernels vs the pure-PyTorch reference path, forward + backward, on the CPU.

StyleGAN2 shapes (specs/ops.md §11; issue 4): upfirdn2d on [8, 256, 64, 64] with the [1,3,3,1] filter
(up=2, down=2, filter only), bias_act on [8, 512, 32, 32] (lrelu; linear + clamp). Prints the median time of
each path over repeats and the ratio reference / compiled (> 1 = compiled faster), 2 threads.

Run: ``GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736 \\
python experiments/bench_ops.py`` (the tunables stop glibc from returning large CPU buffers to the OS, which
otherwise page-faults every allocation; the Makefile sets them).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import ops  # noqa: E402
from ops.bias_act import bias_act  # noqa: E402
from ops.grid_sample import grid_sample  # noqa: E402
from ops.upfirdn2d import downsample2d, filter2d, setup_filter, upsample2d  # noqa: E402


def _time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _fwd_bwd(op, x):
    def run():
        xx = x.detach().requires_grad_()
        y = op(xx)
        y.backward(torch.ones_like(y))

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    if not ops.extension_available():
        raise SystemExit("ops._C is not built: pip install --no-build-isolation --no-deps -e .")
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '(unset)')}"
    )
    f = setup_filter([1, 3, 3, 1])
    x_up = torch.randn(args.batch, 256, 64, 64)
    x_act = torch.randn(args.batch, 512, 32, 32)
    b_act = torch.randn(512)
    grid = torch.rand(args.batch, 64, 64, 2) * 2 - 1
    cases = [
        ("upfirdn2d up=2 [N,256,64,64]", lambda x: upsample2d(x, f), x_up),
        ("upfirdn2d down=2 [N,256,64,64]", lambda x: downsample2d(x, f), x_up),
        ("upfirdn2d filter [N,256,64,64]", lambda x: filter2d(x, f), x_up),
        ("bias_act lrelu [N,512,32,32]", lambda x: bias_act(x, b_act, act="lrelu"), x_act),
        ("bias_act linear+clamp [N,512,32,32]", lambda x: bias_act(x, b_act, clamp=256.0), x_act),
        (
            "grid_sample [N,3,256,256]->64x64",
            lambda x: grid_sample(x, grid),
            torch.randn(args.batch, 3, 256, 256),
        ),
    ]
    print(f"{'case (forward+backward)':40s} {'ref ms':>9s} {'compiled ms':>12s} {'ref/compiled':>13s}")
    for name, op, x in cases:
        ms = {}
        for backend in ("ref", "compiled"):
            ops.set_backend(backend)
            ms[backend] = 1e3 * _time(_fwd_bwd(op, x), args.repeats)
        print(f"{name:40s} {ms['ref']:9.1f} {ms['compiled']:12.1f} {ms['ref'] / ms['compiled']:12.2f}x")


if __name__ == "__main__":
    main()
