"""Train any method of the suite: ``python experiments/train.py experiment=<name> [overrides]``.

Composes ``conf/train.yaml``, instantiates datamodule, LightningModule, callbacks, loggers and Trainer, and
fits, resuming from the run directory's newest checkpoint when ``ckpt_path=auto`` (pitfalls §9).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lightning_modules.presets import register_resolvers  # noqa: E402

log = logging.getLogger("train")
register_resolvers()


def wandb_mode_default() -> None:
    """W&B offline unless the user is logged in (API key or netrc) or chose a mode."""
    if "WANDB_MODE" in os.environ:
        return
    netrc = Path.home() / ".netrc"
    logged_in = "WANDB_API_KEY" in os.environ or (netrc.exists() and "api.wandb.ai" in netrc.read_text())
    if not logged_in:
        os.environ["WANDB_MODE"] = "offline"


def persistent_wandb_id(output_dir: Path) -> str:
    """The W&B run id kept next to the checkpoints, so a resumed or requeued run continues its W&B run."""
    path = output_dir / "wandb_id.txt"
    if path.exists():
        return path.read_text().strip()
    import secrets

    run_id = secrets.token_hex(4)  # W&B ids: 8 lowercase alphanumerics, like wandb's own generator
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(run_id)
    return run_id


def resolve_ckpt_path(ckpt_path: str | None, ckpt_dir: Path, root_dir: Path) -> str | None:
    """``auto`` -> newest of last.ckpt / hpc_ckpt_*.ckpt in this run directory, else None (fresh start)."""
    if ckpt_path != "auto":
        if ckpt_path is not None and not Path(ckpt_path).exists():
            raise FileNotFoundError(f"ckpt_path={ckpt_path}: no such checkpoint file")
        return ckpt_path
    candidates = [p for p in [ckpt_dir / "last.ckpt", *root_dir.glob("hpc_ckpt_*.ckpt")] if p.is_file()]
    if not candidates:
        return None
    return str(max(candidates, key=lambda p: p.stat().st_mtime))


def check_launch(cfg: DictConfig) -> None:
    """Multirun + the subprocess DDP launcher relaunches the sweep or hangs (pitfalls §8): refuse it."""
    from hydra.core.hydra_config import HydraConfig

    strategy = cfg.trainer.get("strategy")
    mode = HydraConfig.get().mode.name if HydraConfig.initialized() else "RUN"
    is_subprocess_ddp = isinstance(strategy, str) and strategy.startswith("ddp") and "spawn" not in strategy
    if isinstance(strategy, DictConfig):
        is_subprocess_ddp = strategy.get("start_method", "popen") == "popen" and cfg.trainer.get("devices") != 1
    if mode == "MULTIRUN" and is_subprocess_ddp and "SLURM_JOB_ID" not in os.environ:
        raise ValueError(
            "multirun with trainer.strategy DDP (subprocess launcher) is not supported: use trainer=ddp_sim "
            "(spawn) for local sweeps, or the submitit launcher (hydra/launcher=slurm) on a cluster"
        )


def train(cfg: DictConfig) -> dict[str, float]:
    """Instantiate everything from ``cfg`` and fit; returns the final logged metrics."""
    import ops

    # Environment variables carry the choice into spawned DDP workers; the calls apply it here.
    os.environ["SUITE_OPS_BACKEND"] = cfg.ops.backend
    os.environ["SUITE_OPS_LINEAR_CLAMP_GRAD"] = cfg.ops.linear_clamp_grad
    ops.set_backend(cfg.ops.backend)
    ops.bias_act.set_linear_clamp_grad(cfg.ops.linear_clamp_grad)
    check_launch(cfg)
    if cfg.get("print_config"):
        log.info("config:\n%s", OmegaConf.to_yaml(cfg, resolve=True))
    output_dir = Path(cfg.paths.output_dir)
    pl.seed_everything(cfg.seed, workers=True)

    datamodule = hydra.utils.instantiate(cfg.data)
    model = hydra.utils.instantiate(cfg.model, _convert_="partial")
    callbacks = [hydra.utils.instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    if cfg.get("metrics") and "_target_" in cfg.metrics:
        callbacks.append(hydra.utils.instantiate(cfg.metrics))
    loggers = []
    for name, lcfg in (cfg.get("logger") or {}).items():
        if not lcfg:
            continue
        if name == "wandb":
            wandb_mode_default()
            lcfg = OmegaConf.merge(lcfg, {"id": lcfg.get("id") or persistent_wandb_id(output_dir)})
        loggers.append(hydra.utils.instantiate(lcfg))
    trainer: pl.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), Path(cfg.paths.ckpt_dir), Path(trainer.default_root_dir))
    if ckpt_path:
        log.info("resuming from %s", ckpt_path)
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    finally:
        if any(type(lg).__name__ == "WandbLogger" for lg in loggers):
            import wandb

            wandb.finish()
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if getattr(v, "numel", lambda: 1)() == 1}
    log.info("finished: %s", {k: round(v, 4) for k, v in metrics.items()})
    return metrics


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics = train(cfg)
    objective = cfg.get("optimized_metric")
    return metrics.get(objective) if objective else None


if __name__ == "__main__":
    main()
