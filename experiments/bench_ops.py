"""Benchmark: compiled suite_ops kernels vs the pure-PyTorch reference path, forward + backward, on the CPU (2
threads) or a CUDA device (``--device cuda``, the CUDA kernels; timed with device synchronisation).

StyleGAN2 shapes: upfirdn2d on [8, 256, 64, 64] with the [1,3,3,1] filter (up=2, down=2, filter only), bias_act on
[8, 512, 32, 32] (lrelu; linear + clamp), grid_sample [8, 3, 256, 256] -> 64x64. Prints the median time of each
path over repeats and the ratio reference / compiled (> 1 = compiled faster).

``--winograd`` instead times 3x3 convolutions (padding 1, input and weight gradients) over channels x sizes:
oneDNN's direct convolution against ops/winograd.py with the compiled tile kernels; the ratios set
``ops.winograd.MIN_CHANNELS`` / ``MIN_WORK``, below which conv2d_resample keeps the direct convolution.

Run: ``GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736 \\
python experiments/bench_ops.py`` (the tunables stop glibc from returning large CPU buffers to the OS, which
otherwise page-faults every allocation; the Makefile sets them).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.nn.functional as F

import ops
from ops.bias_act import bias_act
from ops.grid_sample import grid_sample
from ops.upfirdn2d import downsample2d, filter2d, setup_filter, upsample2d
from ops.winograd import conv3x3_winograd


def _time(fn, repeats: int, device: torch.device) -> float:
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    fn()  # warm-up
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _fwd_bwd(op, x):
    def run():
        xx = x.detach().requires_grad_()
        y = op(xx)
        y.backward(torch.ones_like(y))

    return run


def _conv_fwd_bwd(conv, x, w):
    def run():
        xx, ww = x.detach().requires_grad_(), w.detach().requires_grad_()
        y = conv(xx, ww)
        y.backward(torch.ones_like(y))

    return run


def bench_winograd(batch: int, repeats: int) -> None:
    """Direct (oneDNN) vs Winograd F(4x4, 3x3) 3x3 convolutions, forward + backward, on the CPU."""
    ops.set_backend("compiled")
    print(f"{'3x3 conv, forward+backward':40s} {'direct ms':>9s} {'winograd ms':>12s} {'direct/wino':>12s}")
    for channels in (64, 128, 256, 512):
        for size in (8, 16, 32, 64):
            x = torch.randn(batch, channels, size, size)
            w = torch.randn(channels, channels, 3, 3)
            direct = 1e3 * _time(_conv_fwd_bwd(lambda a, b: F.conv2d(a, b, padding=1), x, w), repeats, x.device)
            wino = 1e3 * _time(_conv_fwd_bwd(conv3x3_winograd, x, w), repeats, x.device)
            name = f"[N,{channels},{size},{size}] -> {channels}"
            print(f"{name:40s} {direct:9.1f} {wino:12.1f} {direct / wino:11.2f}x", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    parser.add_argument("--winograd", action="store_true", help="direct vs Winograd 3x3 convolutions (CPU)")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(2)
    torch.manual_seed(0)
    if not ops.extension_available():
        raise SystemExit("ops._C is not built: pip install --no-build-isolation --no-deps -e .")
    if device.type == "cuda" and not (torch.cuda.is_available() and ops.cuda_kernels_built()):
        raise SystemExit(
            f"--device {args.device}: needs a CUDA device (available: {torch.cuda.is_available()}) and ops._C built "
            f"with CUDA kernels (built: {ops.cuda_kernels_built()}); see docs/ops.md 'Building'"
        )
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"threads {torch.get_num_threads()}"
    print(f"torch {torch.__version__}, {where}, GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '(unset)')}")
    if args.winograd:
        if device.type != "cpu":
            raise SystemExit("--winograd: the Winograd path is CPU-only (cuDNN picks its own algorithms on CUDA)")
        return bench_winograd(args.batch, args.repeats)
    f = setup_filter([1, 3, 3, 1], device=device)
    x_up = torch.randn(args.batch, 256, 64, 64, device=device)
    x_act = torch.randn(args.batch, 512, 32, 32, device=device)
    b_act = torch.randn(512, device=device)
    grid = torch.rand(args.batch, 64, 64, 2, device=device) * 2 - 1
    cases = [
        ("upfirdn2d up=2 [N,256,64,64]", lambda x: upsample2d(x, f), x_up),
        ("upfirdn2d down=2 [N,256,64,64]", lambda x: downsample2d(x, f), x_up),
        ("upfirdn2d filter [N,256,64,64]", lambda x: filter2d(x, f), x_up),
        ("bias_act lrelu [N,512,32,32]", lambda x: bias_act(x, b_act, act="lrelu"), x_act),
        ("bias_act linear+clamp [N,512,32,32]", lambda x: bias_act(x, b_act, clamp=256.0), x_act),
        (
            "grid_sample [N,3,256,256]->64x64",
            lambda x: grid_sample(x, grid),
            torch.randn(args.batch, 3, 256, 256, device=device),
        ),
    ]
    print(f"{'case (forward+backward)':40s} {'ref ms':>9s} {'compiled ms':>12s} {'ref/compiled':>13s}")
    for name, op, x in cases:
        ms = {}
        for backend in ("ref", "compiled"):
            ops.set_backend(backend)
            ms[backend] = 1e3 * _time(_fwd_bwd(op, x), args.repeats, device)
        print(f"{name:40s} {ms['ref']:9.1f} {ms['compiled']:12.1f} {ms['ref'] / ms['compiled']:12.2f}x")


if __name__ == "__main__":
    main()
