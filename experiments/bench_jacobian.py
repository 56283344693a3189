"""Benchmark: the generator Jacobian by forward mode (one JVP per latent dimension) vs reverse mode (one VJP per
output row), and the full pipelines (Jacobian + factorisation) ReSeFa vs LowRankGAN (arXiv 2106.04488 Sec. 3,
arXiv 2202.09649 Sec. 3).

By default both complete Jacobians are computed and timed, nothing is extrapolated: 512 JVP columns
(``JacobianEngine.forward``, vmapped chunks, reference ops) against all ``res²`` channel-summed rows by reverse
mode (``JacobianEngine.reverse`` with batched latent copies, ``--rev-chunk`` rows per backward, the active ops
backend); the two Jacobians must agree. The originals' one-backward-per-row loop is timed on ``--per-row`` rows
for its cost per row. ``--subset COLS ROWS`` instead times that many columns and rows and extrapolates linearly
(both modes are linear in their number of passes), for sizes where the full reverse Jacobian takes hours.

    python experiments/bench_jacobian.py --res 256                      # measured, W space, 512-d w
    python experiments/bench_jacobian.py --res 64 128 --subset 32 16 --channel-base 4096 --channel-max 128
    python experiments/bench_jacobian.py --res 64 --subset 32 16 --pipeline
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from editing.jacobian import JacobianEngine, accumulate_grams, reference_ops
from editing.lowrankgan import lowrank_directions
from editing.regions import box_mask, get_box
from editing.resefa import resefa_directions
from networks.stylegan2 import Generator


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def build_engine(args, res: int) -> tuple[JacobianEngine, torch.Tensor]:
    """Random-init StyleGAN2 of output ``res``², 512-d w, and the W-space engine at one mapped latent."""
    torch.manual_seed(0)
    G = Generator(
        z_dim=512,
        c_dim=0,
        w_dim=512,
        img_resolution=res,
        img_channels=3,
        mapping_kwargs={"num_layers": 2},
        synthesis_kwargs={"channel_base": args.channel_base, "channel_max": args.channel_max},
    ).eval()
    G.requires_grad_(False)
    engine = JacobianEngine(G, space="w", size=None, reduce="sum")
    return engine, engine.latent_from_z(torch.randn(1, 512))[0].detach()


def bench_full(args, res: int) -> dict:
    """Both complete Jacobians, timed once each after a one-chunk warm-up."""
    engine, x = build_engine(args, res)
    rows_total, cols_total = res * res, engine.input_dim
    next(engine.forward_chunks(x, args.chunk, args.impl, columns=torch.arange(args.chunk)))  # vmap tracing
    engine.reverse(x, rows=torch.arange(args.rev_chunk), chunk=args.rev_chunk)
    start = time.perf_counter()
    J_fwd = engine.forward(x, chunk=args.chunk, impl=args.impl)
    t_fwd = time.perf_counter() - start
    J_rev = torch.empty_like(J_fwd)
    start = time.perf_counter()
    for ids, rows in engine.reverse_chunks(x, chunk=args.rev_chunk):
        J_rev[ids] = rows
    t_rev = time.perf_counter() - start
    per_row = torch.arange(0, rows_total, rows_total // args.per_row)[: args.per_row]
    t_row = median_time(lambda: engine.reverse(x, rows=per_row, chunk=1), 1) / per_row.numel()
    return {
        "res": res,
        "rows": rows_total,
        "cols": cols_total,
        "forward_s": t_fwd,
        "reverse_s": t_rev,
        "ratio": t_rev / t_fwd,
        "per_row_s": t_row,
        # Frobenius norm: a row whose pixel sits at an activation's kink may take the other branch in a batch,
        # where the convolutions round differently, so the largest single difference is not a useful check.
        "rel_diff": float(torch.linalg.norm(J_fwd - J_rev) / torch.linalg.norm(J_rev)),
    }


def bench_subset(args, res: int) -> dict:
    """Per-pass times on ``--subset`` columns and rows, extrapolated to the full Jacobian."""
    engine, x = build_engine(args, res)
    rows_total, cols_total = res * res, engine.input_dim
    n_cols, n_rows = args.subset
    cols = torch.arange(n_cols)
    rows = torch.arange(0, rows_total, rows_total // n_rows)[:n_rows]

    def fwd(impl):
        return lambda: [b for _, b in engine.forward_chunks(x, args.chunk, impl, columns=cols)]

    with reference_ops():
        fwd("vmap")()  # warm-up (vmap tracing) for both paths
        fwd("batch")()
    t_rev = median_time(lambda: engine.reverse(x, rows=rows), args.repeats) / rows.numel()
    t_vmap = median_time(fwd("vmap"), args.repeats) / cols.numel()
    t_batch = median_time(fwd("batch"), args.repeats) / cols.numel()
    out = {
        "res": res,
        "rev_s_per_row": t_rev,
        "fwd_vmap_s_per_col": t_vmap,
        "fwd_batch_s_per_col": t_batch,
        "reverse_full_s": t_rev * rows_total,
        "forward_full_s": min(t_vmap, t_batch) * cols_total,
        "ratio_vmap": t_rev * rows_total / (t_vmap * cols_total),
        "ratio_batch": t_rev * rows_total / (t_batch * cols_total),
    }
    if args.pipeline:
        mask = box_mask(get_box("eyes"), size=res)
        impl = "vmap" if t_vmap <= t_batch else "batch"
        start = time.perf_counter()
        acc = accumulate_grams(engine, x[None], {"eyes": mask}, chunk=args.chunk, impl=impl)
        t_jac = time.perf_counter() - start
        A, B = acc.mean("eyes")
        t_resefa = median_time(lambda: resefa_directions(A, B, full_rank=True), args.repeats)
        start = time.perf_counter()
        lr = lowrank_directions(A, B, lambda_inv=60, max_iter=args.pcp_iters)
        t_pcp = time.perf_counter() - start
        out.update(
            jacobian_s=t_jac,
            resefa_factorise_s=t_resefa,
            pcp_s=t_pcp,
            pcp_iterations=lr.iterations,
            pipeline_ratio=(t_jac + t_pcp) / (t_jac + t_resefa),
            factorise_ratio=t_pcp / t_resefa,
        )
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--res", "--sizes", type=int, nargs="+", default=[256], help="generator output sizes (the grid)")
    p.add_argument("--channel-base", type=int, default=1024)
    p.add_argument("--channel-max", type=int, default=16)
    p.add_argument("--impl", default="vmap", choices=["vmap", "batch"], help="forward-mode implementation")
    p.add_argument("--chunk", type=int, default=32, help="JVP columns per vectorised call")
    p.add_argument("--rev-chunk", type=int, default=64, help="reverse-mode rows per batched backward")
    p.add_argument("--per-row", type=int, default=32, help="rows timed with the originals' per-row loop")
    p.add_argument("--subset", type=int, nargs=2, metavar=("COLS", "ROWS"), help="time a subset and extrapolate")
    p.add_argument("--repeats", type=int, default=3, help="--subset: median of repeats")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--pipeline", action="store_true", help="--subset: also time Jacobian + ReSeFa vs LowRankGAN")
    p.add_argument("--pcp-iters", type=int, default=10000, help="PCP iteration cap (each is one 512x512 SVD)")
    args = p.parse_args()
    if args.pipeline and not args.subset:
        args.subset = [32, 16]  # the pipeline's Jacobian is forward mode only: no full reverse run
    torch.set_num_threads(args.threads)
    print(f"threads={args.threads} channel_base={args.channel_base} channel_max={args.channel_max} W space, 512-d w")
    for res in args.res:
        if not args.subset:
            r = bench_full(args, res)
            print(
                f"{res}x{res}, measured: forward mode {r['forward_s']:.1f} s ({r['cols']} columns, {args.impl}, "
                f"chunk {args.chunk}); reverse mode {r['reverse_s']:.1f} s ({r['rows']} rows, {args.rev_chunk} per "
                f"backward); reverse / forward = {r['ratio']:.1f}x; ||J_fwd - J_rev|| / ||J_rev|| = "
                f"{r['rel_diff']:.1e}; the originals' per-row loop {r['per_row_s'] * 1e3:.1f} ms/row "
                f"({args.per_row} rows)"
            )
            continue
        r = bench_subset(args, res)
        print(
            f"{res}x{res}, extrapolated from {args.subset[0]} columns / {args.subset[1]} rows: reverse "
            f"{r['rev_s_per_row'] * 1e3:.1f} ms/row -> {r['reverse_full_s']:.0f} s; forward vmap "
            f"{r['fwd_vmap_s_per_col'] * 1e3:.1f} ms/col, batch {r['fwd_batch_s_per_col'] * 1e3:.1f} ms/col -> "
            f"{r['forward_full_s']:.1f} s; speed-up vmap {r['ratio_vmap']:.1f}x, batch {r['ratio_batch']:.1f}x"
        )
        if "pipeline_ratio" in r:
            print(
                f"  pipeline: Jacobian {r['jacobian_s']:.1f} s; "
                f"ReSeFa eigh {r['resefa_factorise_s'] * 1e3:.1f} ms; "
                f"LowRankGAN PCP {r['pcp_s']:.1f} s ({r['pcp_iterations']} iterations, "
                f"{r['pcp_s'] / sum(r['pcp_iterations']) * 1e3:.0f} ms each); "
                f"LowRankGAN/ReSeFa pipeline {r['pipeline_ratio']:.2f}x, "
                f"factorisation {r['factorise_ratio']:.0f}x"
            )


if __name__ == "__main__":
    main()
