"""Training-free editing of a pretrained generator: region-based latent directions (LowRankGAN / ReSeFa) and local
feature editing (LoGAN).

    python experiments/edit.py edit=resefa_ffhq_eyes network=stylegan2-ffhq-config-f.pkl
    python experiments/edit.py edit=resefa_ffhq_eyes network=... method=lowrankgan   # LowRankGAN's defaults
    python experiments/edit.py edit=logan_bedroom network=stylegan2_bedroom-6fa55a6e.pt
    python experiments/edit.py edit=demo network=tiny_g.pt task=all

Composes ``conf/edit.yaml`` (method defaults in ``conf/method/``, presets in ``conf/edit/``); see docs/editing.md
and docs/logan.md.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from editing.logan_pipeline import run_logan
from editing.pipeline import compute_directions, direction_path, load_directions, run_edits
from editing.regions import region_mask
from editing.scene_masks import PARSERS, CheckpointParser, LabelMapParser, PaletteParser

ROOT = Path(__file__).resolve().parents[1]

log = logging.getLogger("edit")

TASKS = ("compute_directions", "manipulate", "all")
METHODS = ("resefa", "lowrankgan", "logan")


def resolve_device(device: str) -> str:
    """``auto`` → ``cuda`` when a GPU is visible, else ``cpu`` (with a warning: 1024² models take hours)."""
    if device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    log.warning("device=auto: no CUDA device, running on the CPU")
    return "cpu"


def load_generator(path: str, key: str, device: str, hint: str | None = None) -> torch.nn.Module:
    """The generator ``key`` (default G_ema, else G) of any file ``networks.checkpoint.load_networks``
    reads.
    """
    from networks.checkpoint import load_networks

    if not Path(path).is_file():
        raise FileNotFoundError(f"network={path} not found" + (f"; {hint}" if hint else ""))
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


def build_parser(masks: DictConfig, device: str):
    """The scene parser of ``logan.masks.parser`` (None for boxes only)."""
    kind = masks.parser
    if kind not in PARSERS:
        raise ValueError(f"logan.masks.parser={kind!r}: expected one of {PARSERS}")
    if kind == "none":
        return None
    if kind == "palette":
        return PaletteParser()
    if kind == "label_maps":
        return LabelMapParser(list(masks.label_maps))
    ck = masks.checkpoint
    if ck.path is None or ck.module is None:
        raise ValueError(
            "logan.masks.parser=checkpoint needs logan.masks.checkpoint.path (a state dict) and "
            "logan.masks.checkpoint.module ({_target_: <class of the segmentation network>, ...})"
        )
    module = hydra.utils.instantiate(ck.module)
    return CheckpointParser(
        module,
        ck.path,
        input_size=ck.input_size,
        mean=list(ck.mean),
        std=list(ck.std),
        strip_prefix=ck.strip_prefix,
        device=device,
    )


def run_directions(cfg: DictConfig, G: torch.nn.Module, out_dir: Path, device: str) -> dict:
    """LowRankGAN / ReSeFa: directions and/or layer-wise edits as ``cfg.task`` says."""
    if cfg.task not in TASKS:
        raise ValueError(f"task={cfg.task!r}: expected one of {TASKS}")
    size = cfg.jacobian.size or int(G.img_resolution)
    masks = build_masks(cfg, size)
    result: dict = {}
    if cfg.task in ("compute_directions", "all"):
        result["directions"] = compute_directions(
            G,
            masks,
            out_dir,
            method=cfg.method,
            jacobian=OmegaConf.to_container(cfg.jacobian, resolve=True),
            resefa=OmegaConf.to_container(cfg.resefa, resolve=True),
            lowrank=OmegaConf.to_container(cfg.lowrank, resolve=True),
            device=device,
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
            device=device,
            title=f"{cfg.method} {region} ({path.name})",
        )
    return result


def run(cfg: DictConfig) -> dict:
    """Run the configured method; returns what was written."""
    if cfg.method not in METHODS:
        raise ValueError(f"method={cfg.method!r}: expected one of {METHODS}")
    out_dir = Path(cfg.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device)
    G = load_generator(cfg.network, cfg.network_key, device, cfg.get("network_hint"))
    if cfg.wandb.enabled:
        import wandb

        wandb.init(
            project=cfg.wandb.project,
            mode=cfg.wandb.mode,
            dir=str(out_dir),
            name=cfg.run_id,
            config=OmegaConf.to_container(cfg, resolve=True),
        )
    if cfg.method == "logan":
        parser = build_parser(cfg.logan.masks, device)
        logan_cfg = OmegaConf.to_container(cfg.logan, resolve=True)
        result = {"logan": run_logan(G, logan_cfg, out_dir / "logan", parser, device, f"LoGAN {cfg.preset}")}
    else:
        result = run_directions(cfg, G, out_dir, device)
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
