"""EqGAN-SA heatmap editing: render a grid while a heatmap centre moves (arXiv 2112.00718 Sec. 3.1).

Rows are latent seeds, columns the steps of the move (column 0 = the sampled heatmaps unchanged). Moving the
level-1 centre (``--level b8``, default) moves every level with it (L2/L3 centres are offsets of it); ``--level
b16|b32 --index k`` moves one centre of that level only.

    python experiments/eqgan_move_centres.py --network run/checkpoints/last.ckpt --seeds 0,1,2 \\
        --dx 0.6 --dy 0 --steps 7 --out move.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from networks.eqgan_sa import LEVELS, HeatmapParams
from networks.image_output import save_image_grid, to_uint8


def move_centres(
    params: HeatmapParams, level: str, index: int, delta: tuple[float, float], all_levels: bool = True
) -> HeatmapParams:
    """A copy of ``params`` with centre ``index`` of ``level`` shifted by ``delta`` = (dx, dy) in [-1, 1] units.

    For ``level='b8'`` with ``all_levels`` every centre of every level moves (they are offsets of the L1 centre).
    """
    if level not in LEVELS:
        raise ValueError(f"--level: expected one of {LEVELS}, got {level!r}")
    k = params.centres[level].shape[1]
    if not 0 <= index < k:
        raise ValueError(f"--index: level {level} has {k} centre(s), got index {index}")
    out = params.clone()
    shift = torch.tensor(delta, dtype=out.centres[level].dtype, device=out.centres[level].device)
    if level == "b8" and all_levels:
        for lvl in LEVELS:
            out.centres[lvl] += shift
    else:
        out.centres[level][:, index] += shift
    return out


@torch.no_grad()
def render_move(
    G: torch.nn.Module,
    seeds: list[int],
    steps: int,
    delta: tuple[float, float],
    level: str = "b8",
    index: int = 0,
    all_levels: bool = True,
    heatmap_seed: int = 0,
    truncation_psi: float = 1.0,
) -> torch.Tensor:
    """uint8 [len(seeds) * steps, C, H, W], row-major: seed i, step j at ``j / (steps - 1) * delta``."""
    if not getattr(G, "use_sel", False):
        raise ValueError("the network has no spatial encoding layers (EqGANGenerator with use_sel=true needed)")
    if steps < 2:
        raise ValueError(f"--steps: expected >= 2, got {steps}")
    device = next(G.parameters()).device
    z = torch.stack([torch.randn([G.z_dim], generator=torch.Generator().manual_seed(s)) for s in seeds]).to(device)
    c = torch.zeros([len(seeds), G.c_dim], device=device)
    base = G.sample_heatmaps(len(seeds), device=device, generator=torch.Generator().manual_seed(heatmap_seed))
    frames = []
    for j in range(steps):
        t = j / (steps - 1)
        params = move_centres(base, level, index, (t * delta[0], t * delta[1]), all_levels)
        frames.append(G(z, c, truncation_psi=truncation_psi, noise_mode="const", spatial=params))
    imgs = torch.stack(frames, dim=1)  # [seeds, steps, C, H, W]
    return to_uint8(imgs.flatten(0, 1))


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--network", required=True, help="any file networks.checkpoint.load_networks reads")
    ap.add_argument("--seeds", default="0,1,2,3", help="comma-separated latent seeds (rows)")
    ap.add_argument("--steps", type=int, default=7, help="columns: positions along the move")
    ap.add_argument("--dx", type=float, default=0.6, help="total x displacement in [-1, 1] image units")
    ap.add_argument("--dy", type=float, default=0.0, help="total y displacement in [-1, 1] image units")
    ap.add_argument("--level", default="b8", choices=LEVELS)
    ap.add_argument("--index", type=int, default=0, help="which centre of the level")
    ap.add_argument("--only-level", action="store_true", help="with --level b8: do not move L2/L3 with it")
    ap.add_argument("--heatmap-seed", type=int, default=0)
    ap.add_argument("--truncation-psi", type=float, default=1.0)
    ap.add_argument("--no-ema", action="store_true", help="use G instead of G_ema")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default="move_centres.png")
    args = ap.parse_args(argv)

    from networks.checkpoint import load_networks

    nets = load_networks(args.network, device=args.device)
    G = nets.get("G") if args.no_ema else (nets.get("G_ema") or nets.get("G"))
    if G is None:
        raise ValueError(f"{args.network}: no generator found")
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    grid = render_move(
        G.eval(),
        seeds,
        args.steps,
        (args.dx, args.dy),
        level=args.level,
        index=args.index,
        all_levels=not args.only_level,
        heatmap_seed=args.heatmap_seed,
        truncation_psi=args.truncation_psi,
    )
    path = save_image_grid(grid, args.out, (len(seeds), args.steps))
    print(f"wrote {path} ({len(seeds)} seeds x {args.steps} steps)")
    return path


if __name__ == "__main__":
    main()
