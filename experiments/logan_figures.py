"""Figures of docs/logan.md: every LoGAN operation of the ``logan_indoor_demo`` preset on 64x64 rooms.

    python experiments/logan_figures.py --network logs/stylegan2_indoor_demo/seed0/checkpoints/last.ckpt
    python experiments/logan_figures.py            # no trained GAN at hand: fit one (see below), then edit

Without ``--network`` the generator is the demo's StyleGAN2 architecture (experiment/demo networks) fitted by
plain L1 regression so that the latent codes the preset draws (targets, insert sources, style sources) render
chosen procedural rooms (datamodules/embedded_indoor.py). It is not a GAN, but its features are those of a
StyleGAN2 synthesis network that draws these rooms, which is what the operators act on. The committed figures:
400 steps (L1 0.065), 3-4 s per step on the shared 2-core CPU with the reference ops (``--save-fit`` keeps the
fitted generator for ``--network``). Writes ``logan_operations.png`` (rows = samples, columns = before +
operations) and ``logan_regions.png`` (the changed region of each operation over the input) to ``--out``, and
prints the metrics.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from datamodules.embedded_indoor import CLASS_ID, render_room
from editing.logan_pipeline import run_logan
from editing.manipulate import sample_z
from editing.scene_masks import PaletteParser
from networks.stylegan2 import Generator

ROOT = Path(__file__).resolve().parents[1]


def preset(num_samples: int, size: int) -> dict:
    """The ``logan_indoor_demo`` preset's ``logan`` block."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("edit", overrides=["edit=logan_indoor_demo", "network=unused"])
    logan = OmegaConf.to_container(cfg.logan, resolve=True)
    logan.update(num_samples=num_samples, html_size=size)
    return logan


def _rooms_with(classes: set[str], count: int, start: int) -> list[np.ndarray]:
    """``count`` 64x64 rooms (RGB uint8) that contain every class of ``classes``, scanning seeds from ``start``."""
    out, seed = [], start
    need = {CLASS_ID[c] for c in classes}
    while len(out) < count:
        scene = render_room(np.random.default_rng([7, seed]), 64)
        if need <= set(np.unique(scene.labels).tolist()):
            out.append(scene.rgb)
        seed += 1
    return out


def latent_rooms(cfg: dict, G: Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The z the preset draws and a room for each: targets hold a bed and a table, each source its object."""
    zs, rooms = [sample_z(G, cfg["num_samples"], cfg["seed"])], _rooms_with({"bed", "table"}, cfg["num_samples"], 0)
    sources: list[tuple[int, set]] = []
    for op in cfg["operations"]:
        for item in [op, *(op.get("items") or [])]:
            if item.get("source_seed") is not None:
                cls = (item.get("object") or {}).get("class")
                sources.append((int(item["source_seed"]), {cls} if isinstance(cls, str) else set(cls or [])))
            for key in ("style_seed", "room_style_seed"):
                if item.get(key) is not None:
                    sources.append((int(item[key]), set()))
    for k, (seed, classes) in enumerate(sources):
        zs.append(sample_z(G, 1, seed))
        rooms += _rooms_with(classes, 1, 1000 * (k + 1))
    images = torch.from_numpy(np.stack(rooms)).permute(0, 3, 1, 2).float() / 127.5 - 1
    return torch.cat(zs), images


def fit_generator(cfg: dict, steps: int, seed: int = 0) -> Generator:
    """The demo architecture fitted by L1 regression: mapping(z) with the preset's truncation renders the rooms."""
    torch.manual_seed(seed)
    G = Generator(
        z_dim=128,
        c_dim=0,
        w_dim=128,
        img_resolution=64,
        img_channels=3,
        mapping_kwargs={"num_layers": 2},
        synthesis_kwargs={"channel_base": 2048, "channel_max": 64, "num_fp16_res": 0, "conv_clamp": None},
    )
    z, target = latent_rooms(cfg, G)
    opt = torch.optim.Adam(G.parameters(), lr=2e-3, betas=(0.9, 0.99))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    G.train()
    for step in range(steps):
        ws = G.mapping(z, None, truncation_psi=cfg["truncation_psi"], truncation_cutoff=cfg.get("truncation_layers"))
        loss = (G.synthesis(ws, noise_mode="const") - target).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0 or step == steps - 1:
            print(f"fit step {step}: L1 {loss.item():.4f}", flush=True)
    return G.eval().requires_grad_(False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--network", default=None, help="a trained indoor StyleGAN2 (any file load_networks reads)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "images"))
    ap.add_argument("--samples", type=int, default=3)
    ap.add_argument("--size", type=int, default=64, help="pixels per image in the PNGs")
    ap.add_argument("--steps", type=int, default=400, help="regression steps without --network")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--save-fit", default=None, help="also write the fitted generator here (networks file)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = preset(args.samples, args.size)
    if args.network:
        from experiments.edit import load_generator

        G = load_generator(args.network, "G_ema", "cpu")
    else:
        G = fit_generator(cfg, args.steps)
        if args.save_fit:
            from networks.checkpoint import save_networks

            save_networks(args.save_fit, {"G_ema": G}, {"fit_steps": args.steps})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        result = run_logan(G, cfg, tmp, PaletteParser(), "cpu", "LoGAN figures")
        shutil.copyfile(Path(tmp) / "grid.png", out / "logan_operations.png")
        shutil.copyfile(Path(tmp) / "masks.png", out / "logan_regions.png")
    print(json.dumps({"columns": result["columns"], "metrics": result["metrics"]}, indent=1))


if __name__ == "__main__":
    main()
