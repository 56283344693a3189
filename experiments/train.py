"""Train any method of the suite: ``python experiments/train.py experiment=<name> [overrides]``.

Composes ``conf/train.yaml``, instantiates datamodule, LightningModule, callbacks, loggers and Trainer, and
fits, resuming from the run directory's newest readable checkpoint when ``ckpt_path=auto``. Checkpoints are
read weights-only and checked before Lightning sees them (``experiments/resume.py``, docs/reliability.md).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import hydra
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from experiments.resume import (
    ResumeError,
    check_argument_types,
    check_config,
    check_network_arguments,
    explain_load_error,
    find_checkpoint,
    keep_previous_metrics,
)
from lightning_modules.callbacks.checkpointing import ApplyConfiguredOptimizerSettings, RunConfigRecord
from lightning_modules.config import check_keys
from lightning_modules.presets import register_resolvers

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


def run_config(cfg: DictConfig) -> dict:
    """The composed config as plain data (without Hydra's own node): stored in every checkpoint."""
    return OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True)


def check_launch(cfg: DictConfig) -> None:
    """Multirun + the subprocess DDP launcher relaunches the sweep or hangs (Lightning-AI/pytorch-lightning#15737):
    refuse it."""
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

    ops.configure(cfg.ops)
    check_launch(cfg)
    check_argument_types(cfg)
    threads = cfg.get("cpu_threads")
    if threads is not None:
        if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
            raise ValueError(f"cpu_threads must be a positive integer or null, got {threads!r}")
        torch.set_num_threads(threads)
    if cfg.get("print_config"):
        log.info("config:\n%s", OmegaConf.to_yaml(cfg, resolve=True))
    output_dir = Path(cfg.paths.output_dir)
    root_dir = Path(cfg.trainer.get("default_root_dir") or output_dir)
    ckpt_path, ckpt = find_checkpoint(cfg.get("ckpt_path"), Path(cfg.paths.ckpt_dir), root_dir)
    config = run_config(cfg)
    changed = check_config(ckpt.get("run_config"), config, cfg.get("resume_config_changes"), ckpt_path) if ckpt else []
    pl.seed_everything(cfg.seed, workers=True)

    datamodule = hydra.utils.instantiate(cfg.data)
    check_keys(cfg.model, "model")
    model = hydra.utils.instantiate(cfg.model, _convert_="partial")
    if ckpt:
        check_network_arguments(ckpt, ckpt_path, model)
    del ckpt  # memory-mapped; Lightning reads the file again
    callbacks = [hydra.utils.instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    callbacks.append(RunConfigRecord(config))
    if any(k.startswith("model.") for k in changed):
        callbacks.append(ApplyConfiguredOptimizerSettings())
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
    keep_previous_metrics([lg.log_dir for lg in loggers if type(lg).__name__.endswith("CSVLogger")], bool(ckpt_path))
    trainer: pl.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    if ckpt_path:
        log.info("resuming from %s", ckpt_path)
    try:
        try:
            trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        except RuntimeError as e:
            explained = explain_load_error(e, ckpt_path)
            if explained is None:
                raise
            raise explained from None
        if cfg.get("test_after_fit"):  # recognition protocols: test the checkpoint selected on validation
            fit_metrics = dict(trainer.callback_metrics)
            best = getattr(trainer.checkpoint_callback, "best_model_path", "") or None
            trainer.test(model, datamodule=datamodule, ckpt_path=best, weights_only=True)
            for k, v in fit_metrics.items():  # trainer.test resets callback_metrics; keep the fit ones too
                trainer.callback_metrics.setdefault(k, v)
    finally:
        if any(type(lg).__name__ == "WandbLogger" for lg in loggers):
            import wandb

            wandb.finish()
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if getattr(v, "numel", lambda: 1)() == 1}
    log.info("finished: %s", {k: round(v, 4) for k, v in metrics.items()})
    if ops.cpu_allocator.get_cpu_allocator() == "caching":
        log.info(ops.cpu_allocator.cpu_allocator_summary())
    return metrics


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    try:
        metrics = train(cfg)
    except ResumeError as e:  # a refused checkpoint or config change: the message says what to do
        sys.exit(f"error: {e}")
    objective = cfg.get("optimized_metric")
    return metrics.get(objective) if objective else None


if __name__ == "__main__":
    main()
