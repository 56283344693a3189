"""Region-based latent directions and edits (LowRankGAN / ReSeFa) on a pretrained generator.

    python experiments/edit.py edit=resefa_ffhq_eyes network=stylegan2-ffhq-config-f.pkl
    python experiments/edit.py edit=demo network=tiny_g.pt task=all

Composes ``conf/edit.yaml``; see docs/editing.md and spec lowrankgan_resefa.md §4.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from editing.pipeline import compute_directions, direction_path, load_directions, run_edits  # noqa: E402
from editing.regions import region_mask  # noqa: E402

log = logging.getLogger("edit")

TASKS = ("compute_directions", "manipulate", "all")


def load_generator(path: str, key: str, device: str) -> torch.nn.Module:
    """The generator ``key`` (default G_ema, else G) of any file ``networks.checkpoint.load_networks``
    reads.
    """
    from networks.checkpoint import load_networks

    nets = load_networks(path, device=device)
    G = nets.get(key) or nets.get("G_ema") or nets.get("G")
    if G is None:
        raise ValueError(f"network={path}: no generator found (expected '{key}', 'G_ema' or 'G')")
    return G.eval().requires_grad_(False)


def build_masks(cfg: DictConfig, size: int) -> dict[str, torch.Tensor]:
    """Region masks on the Jacobian grid from ``region.*`` (boxes by name, a user box, or label-map
    labels).
    """
    r = cfg.region
    if r.labels is not None:
        labels = list(r.labels)
        return {"labels_" + "_".join(map(str, labels)): region_mask(labels=labels, label_map=r.label_map, size=size)}
    if r.box is not None:
        return {"box": region_mask(box=list(r.box), size=size, base=r.base)}
    if not r.names:
        raise ValueError("region.names is empty: expected at least one box name (or region.box / region.labels)")
    return {n: region_mask(name=n, dataset=r.dataset, size=size, base=r.base) for n in r.names}


def run(cfg: DictConfig) -> dict:
    """Compute directions and/or render edits as ``cfg.task`` says; returns what was written."""
    if cfg.task not in TASKS:
        raise ValueError(f"task={cfg.task!r}: expected one of {TASKS}")
    out_dir = Path(cfg.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    G = load_generator(cfg.network, cfg.network_key, cfg.device)
    size = cfg.jacobian.size or int(G.img_resolution)
    masks = build_masks(cfg, size)
    result: dict = {}
    if cfg.wandb.enabled:
        import wandb

        wandb.init(
            project=cfg.wandb.project,
            mode=cfg.wandb.mode,
            dir=str(out_dir),
            name=cfg.run_id,
            config=OmegaConf.to_container(cfg, resolve=True),
        )
    if cfg.task in ("compute_directions", "all"):
        result["directions"] = compute_directions(
            G,
            masks,
            out_dir,
            method=cfg.method,
            jacobian=OmegaConf.to_container(cfg.jacobian, resolve=True),
            resefa=OmegaConf.to_container(cfg.resefa, resolve=True),
            lowrank=OmegaConf.to_container(cfg.lowrank, resolve=True),
            device=cfg.device,
        )
    if cfg.task in ("manipulate", "all"):
        d = cfg.directions
        region = d.region or next(iter(masks))
        if d.path is not None:
            path = Path(d.path)
        else:
            projected = cfg.method == "lowrankgan" and bool(cfg.lowrank.projected)
            path = direction_path(out_dir, region, int(d.image), cfg.method, projected)
        dirs = load_directions(path, int(d.start), d.end)
        e = cfg.edit
        alphas = np.linspace(e.alpha_min, e.alpha_max, e.num_alphas).tolist()
        result["edits"] = run_edits(
            G,
            dirs,
            out_dir / "edits" / region,
            layers=list(e.layers),
            alphas=alphas,
            num_samples=e.num_samples,
            seed=e.seed,
            truncation_psi=e.truncation_psi,
            truncation_layers=e.truncation_layers,
            noise_mode=e.noise_mode,
            batch=e.batch,
            html_size=e.html_size,
            video=e.video,
            fps=e.fps,
            mask=masks.get(region),
            device=cfg.device,
            title=f"{cfg.method} {region} ({path.name})",
        )
    if cfg.wandb.enabled:
        import wandb

        wandb.finish()
    (out_dir / "edit_result.json").write_text(json.dumps(result, indent=2, default=str))
    log.info("edit outputs in %s", out_dir)
    return result


@hydra.main(version_base="1.3", config_path="../conf", config_name="edit")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
