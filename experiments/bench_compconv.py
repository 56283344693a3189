"""Benchmark: vanilla vs CompConv parameters, MACs and CPU forward latency (CompConv, arXiv 2106.10486).

Prints ratios against the vanilla baseline measured in the same process (median of interleaved repeats):
ResNet-50 vs CompConv128 ResNet-50 at 224 x 224, then single 3 x 3 layers C -> C (C = 64 ... 512; the paper
claims about 20 % of the compute for the 512-channel layer).

    python experiments/bench_compconv.py [--batch 32] [--size 224] [--threads 2] [--repeats 5]
        [--depth-rule min|max] [--replace-1x1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from metrics.complexity import count_macs, count_params
from networks.classification_nets import resnet50
from networks.compconv import CompConv2d, convert_model


@torch.no_grad()
def latencies(models: dict[str, nn.Module], x: torch.Tensor, repeats: int) -> dict[str, float]:
    """Median forward time per model; repeats are interleaved so machine noise hits all models alike."""
    times: dict[str, list[float]] = {k: [] for k in models}
    for m in models.values():  # warm-up (allocator, oneDNN primitive cache)
        m(x)
    for _ in range(repeats):
        for k, m in models.items():
            t0 = time.perf_counter()
            m(x)
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def compare(name: str, vanilla: nn.Module, comp: nn.Module, x: torch.Tensor, repeats: int) -> None:
    vanilla.eval()
    comp.eval()
    pv, pc = count_params(vanilla), count_params(comp)
    mv, mc = count_macs(vanilla, x[:1]).total, count_macs(comp, x[:1]).total
    lat = latencies({"vanilla": vanilla, "compconv": comp}, x, repeats)
    lv, lc = lat["vanilla"] * 1e3, lat["compconv"] * 1e3
    print(
        f"{name:34s} params {pv / 1e6:8.3f}M -> {pc / 1e6:8.3f}M ({pc / pv:6.1%})  "
        f"MACs {mv / 1e9:7.3f}G -> {mc / 1e9:7.3f}G ({mc / mv:6.1%})  "
        f"latency {lv:8.1f}ms -> {lc:8.1f}ms ({lc / lv:6.1%})",
        flush=True,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--c0", type=int, default=128)
    ap.add_argument("--depth-rule", choices=("min", "max"), default="min")
    ap.add_argument("--replace-1x1", action="store_true", help="also replace the 1x1 convs of ResNet-50")
    ap.add_argument("--layer-size", type=int, default=14, help="spatial size of the single-layer comparison")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(
        f"torch {torch.__version__}, {args.threads} threads, batch {args.batch}, median of {args.repeats}; "
        "MACs per image; ratios = CompConv / vanilla",
        flush=True,
    )
    x = torch.randn(args.batch, 3, args.size, args.size)
    compare(
        f"ResNet-50 @{args.size} CompConv{args.c0}{' +1x1' if args.replace_1x1 else ''} ({args.depth_rule})",
        resnet50(),
        convert_model(resnet50(), c0=args.c0, depth_rule=args.depth_rule, replace_1x1=args.replace_1x1),
        x,
        args.repeats,
    )
    for c in (64, 128, 256, 512):
        comp = CompConv2d(c, c, 3, c0=args.c0, depth_rule=args.depth_rule)
        xl = torch.randn(args.batch, c, args.layer_size, args.layer_size)
        compare(
            f"3x3 conv {c}->{c} @{args.layer_size} (d={comp.depth})",
            nn.Conv2d(c, c, 3, 1, 1, bias=False),
            comp,
            xl,
            args.repeats,
        )


if __name__ == "__main__":
    main()
