"""Rays per second of VolumeGAN's renderer with the compiled vs the reference trilinear volume lookup.

The released FFHQ-256 generator (genforce/volumegan configs/volumegan_ffhq_config.py: 32 x 32 rays, 12 coarse +
12 importance samples, 32^3 x 32 feature volume, 4 x 256 MLP, 512-d features) unless ``--small``. Rows:

- ``lookup``: ``ops.volume_sample`` alone on the ray samples of one batch, forward + backward (volume grad);
- ``render fwd``: the volume-rendering part (``render_features``: volume, two MLP passes, compositing) without grad;
- ``render fwd+bwd``: the same with a backward to every parameter;
- ``render PL``: path-length-style double backward (gradient w.r.t. ws with ``create_graph``, then backward);
- ``synthesis fwd+bwd``: the full generator at 256 x 256 (neural renderer included), for context;
- ``demo step lod 2`` / ``demo step lod 0``: training iterations of ``experiment=volumegan_demo`` (its module and
  embedded faces, batch 16) through a Trainer (``bench_train.time_training_steps``), at the schedule's first level
  (8 px) and at full resolution (32 px, ``model.pg.enabled=false``); mean seconds per iteration over
  ``--demo-iters`` iterations (16 = one cycle of the lazy phases: 4 path-length and 1 R1 step included).

Backends are interleaved per repeat (``ref``, ``compiled``) on the same seeded inputs; the table gives medians,
rays per second (batch x 32 x 32 / time) and the ratio ref / compiled (> 1 = compiled faster); the demo rows give
milliseconds per training iteration and the same ratio.

    GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736 \\
        python experiments/bench_volumegan.py --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import time

SMALL = dict(
    z_dim=64,
    w_dim=64,
    img_resolution=64,
    nerf_resolution=16,
    volume_channels=[32, 32, 16, 8],
    mlp_hidden=64,
    feat_dim=64,
    channel_base=2048,
    channel_max=64,
)
BACKENDS = ("ref", "compiled")


def cases(G, batch: int):
    """name -> callable running one timed repetition (inputs seeded once, identical for both backends)."""
    import torch

    from ops.volume_sample import volume_sample

    syn = G.synthesis
    torch.manual_seed(0)
    ws = G.mapping(torch.randn(batch, G.z_dim), None).detach()
    camera = G.sample_camera(batch)
    cam2world = syn.cam2world(camera, batch, ws.device)
    with torch.no_grad():
        volume = syn.volume(ws[:, 0])
    r, s = syn.nerf_resolution, syn.num_coarse + syn.num_fine
    points = torch.rand(batch, r * r * s, 3) * 1.8 - 0.9

    def lookup():
        v = volume.detach().requires_grad_()
        volume_sample(v, points).sum().backward()

    def render_fwd():
        torch.manual_seed(1)
        with torch.no_grad():
            syn.render_features(ws, cam2world)

    def render_bwd():
        torch.manual_seed(1)
        G.zero_grad(set_to_none=True)
        syn.render_features(ws, cam2world)["feature"].square().mean().backward()

    def render_pl():
        torch.manual_seed(1)
        G.zero_grad(set_to_none=True)
        w = ws.detach().requires_grad_()
        feat = syn.render_features(w, cam2world)["feature"]
        (g,) = torch.autograd.grad(feat.square().mean(), w, create_graph=True)
        g.square().sum().backward()

    def synthesis_bwd():
        torch.manual_seed(1)
        G.zero_grad(set_to_none=True)
        syn(ws, camera=camera).square().mean().backward()

    return {
        "lookup": lookup,
        "render fwd": render_fwd,
        "render fwd+bwd": render_bwd,
        "render PL": render_pl,
        "synthesis fwd+bwd": synthesis_bwd,
    }


def demo_cases(iters: int, warmup: int = 1):
    """name -> callable returning the mean seconds per training iteration of the demo (rows ``demo step lod *``)."""
    import torch

    from experiments.bench_train import time_training_steps
    from experiments.compose import compose_experiment, instantiate_datamodule, instantiate_module

    def build(overrides):
        keep = ["model.video.num=0", "model.sample_every_kimg=1000", "model.total_kimg=1000"]  # no figures, no stop
        cfg = compose_experiment("volumegan_demo", [*keep, *overrides])
        torch.manual_seed(0)
        return instantiate_module(cfg), instantiate_datamodule(cfg)

    def row(module, datamodule):
        def run():
            return statistics.fmean(time_training_steps(module, datamodule, warmup=warmup, iters=iters))

        return run

    return {
        "demo step lod 2": row(*build(["model.pg.training_kimg=1000"])),  # held at the first level
        "demo step lod 0": row(*build(["model.pg.enabled=false"])),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--small", action="store_true", help="a small generator (16 x 16 rays) for a quick run")
    ap.add_argument("--skip", nargs="*", default=[], help="row names to leave out, e.g. 'render PL'")
    ap.add_argument("--demo-iters", type=int, default=16, help="timed iterations per demo row (0: no demo rows)")
    args = ap.parse_args(argv)

    import os

    import torch

    import ops
    from networks.volumegan import VolumeGANGenerator

    if not ops.extension_available():
        raise SystemExit("ops._C is not built: pip install --no-build-isolation --no-deps -e .")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    G = VolumeGANGenerator(**(SMALL if args.small else {})).train()
    rows = cases(G, args.batch)
    if args.demo_iters > 0:
        rows.update(demo_cases(args.demo_iters))
    rows = {k: v for k, v in rows.items() if k not in args.skip}
    times: dict[tuple[str, str], list[float]] = {}
    for fn in rows.values():
        for backend in BACKENDS:  # warm-up
            ops.set_backend(backend)
            fn()
    for rep in range(args.repeats):
        for name, fn in rows.items():
            for backend in BACKENDS:
                ops.set_backend(backend)
                t0 = time.perf_counter()
                seconds = fn()  # the demo rows time their own iterations (Trainer set-up excluded)
                times.setdefault((name, backend), []).append(seconds or time.perf_counter() - t0)
        print(f"repeat {rep + 1}/{args.repeats} done", flush=True)
    rays = args.batch * G.synthesis.nerf_resolution**2
    print(
        f"\ntorch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, {rays} rays, "
        f"{G.synthesis.num_coarse}+{G.synthesis.num_fine} samples/ray, median of {args.repeats}, "
        f"GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '(unset)')}"
    )
    print(f"{'case':20s} {'ref ms':>9s} {'compiled ms':>12s} {'ref rays/s':>11s} {'comp rays/s':>12s} {'ratio':>7s}")
    for name in rows:
        ref, comp = (statistics.median(times[(name, b)]) for b in BACKENDS)
        if name.startswith("demo"):
            print(f"{name:20s} {ref * 1e3:9.1f} {comp * 1e3:12.1f} {'ms/iteration':>24s} {ref / comp:6.2f}x")
            continue
        print(
            f"{name:20s} {ref * 1e3:9.1f} {comp * 1e3:12.1f} {rays / ref:11.0f} {rays / comp:12.0f} {ref / comp:6.2f}x"
        )


if __name__ == "__main__":
    main()
