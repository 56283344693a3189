"""Atomic checkpoints: written to a temporary file, then renamed, so a crash never leaves a torn file.

Also what a resume needs from every checkpoint: the run's composed config (``run_config``, compared on resume
by ``experiments/train.py``) and plain-data hyper-parameters, so the file loads with
``torch.load(weights_only=True)``; and the optimiser settings of the current config after an allowed change.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, Checkpoint, ModelCheckpoint

from datamodules.side_files import writable

log = logging.getLogger(__name__)


def save_checkpoint_atomic(trainer: pl.Trainer, path: str | Path, weights_only: bool = False) -> Path:
    """Collective on all ranks (like ``trainer.save_checkpoint``); rank 0 renames ``<path>.tmp`` -> ``path``."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    if trainer.is_global_zero:
        path.parent.mkdir(parents=True, exist_ok=True)
    trainer.save_checkpoint(tmp, weights_only)
    if trainer.is_global_zero:
        if not tmp.is_file():
            raise OSError(f"checkpoint {tmp} was not written: is {path.parent} writable? {_WRITABLE_HINT}")
        os.replace(tmp, path)
    trainer.strategy.barrier("save_checkpoint_atomic")
    return path


_WRITABLE_HINT = "point paths.log_dir (SUITE_LOG_DIR) or paths.ckpt_dir at a writable folder"


def check_checkpoint_dir(trainer: pl.Trainer, dirpath: str | Path | None) -> None:
    """Rank 0, before training: refuse a checkpoint folder that cannot be written (instead of failing at the
    first save, minutes or hours later)."""
    if dirpath is not None and trainer.is_global_zero and not writable(dirpath):
        raise PermissionError(f"checkpoint folder {dirpath} is not writable: {_WRITABLE_HINT}")


class AtomicModelCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint (epoch/step/metric driven) with atomic writes."""

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage == "fit":
            check_checkpoint_dir(trainer, self.dirpath)

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        save_checkpoint_atomic(trainer, filepath, self.save_weights_only)
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.after_save_checkpoint(self)


class KimgCheckpoint(Checkpoint):
    """Checkpoints scheduled by images seen, not by ``global_step`` (optimiser steps: several per GAN iteration).

    Writes ``last.ckpt`` every ``every_kimg`` and at the end of training; with ``keep_snapshots`` also
    ``network-snapshot-<kimg:06d>.ckpt`` as the reference's periodic pickles. Being a ``Checkpoint``, it
    replaces Lightning's default step-driven ModelCheckpoint.
    """

    def __init__(self, dirpath: str, every_kimg: float = 50.0, keep_snapshots: bool = False):
        if not isinstance(every_kimg, int | float) or isinstance(every_kimg, bool) or not every_kimg > 0:
            raise ValueError(
                f"callbacks.checkpoint.every_kimg: expected kimg > 0 between checkpoints, got {every_kimg!r}"
            )
        self.dirpath = Path(dirpath)
        self.every_kimg = every_kimg
        self.keep_snapshots = keep_snapshots
        self._next_kimg: float | None = None

    def _kimg(self, pl_module) -> float:
        return pl_module.progress.kimg

    def _save(self, trainer: pl.Trainer, pl_module) -> None:
        save_checkpoint_atomic(trainer, self.dirpath / "last.ckpt")
        if trainer.is_global_zero:
            log.info("checkpoint %s: %s", self.dirpath / "last.ckpt", pl_module.progress.summary())
        if self.keep_snapshots:
            kimg = pl_module.progress.seen_img // 1000
            save_checkpoint_atomic(trainer, self.dirpath / f"network-snapshot-{kimg:06d}.ckpt")

    def setup(self, trainer: pl.Trainer, pl_module, stage: str) -> None:
        if stage == "fit":
            check_checkpoint_dir(trainer, self.dirpath)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        kimg = self._kimg(pl_module)
        if self._next_kimg is None:
            self._next_kimg = (kimg // self.every_kimg + 1) * self.every_kimg
        if kimg >= self._next_kimg and not trainer.should_stop:
            self._save(trainer, pl_module)
            self._next_kimg = (kimg // self.every_kimg + 1) * self.every_kimg

    def on_train_end(self, trainer, pl_module) -> None:
        self._save(trainer, pl_module)


def plain_data(obj: Any) -> Any:
    """``obj`` as data ``torch.load(weights_only=True)`` reads: containers, str, numbers, bool, None, tensors.

    A ``functools.partial`` (Hydra ``_partial_: true`` optimisers) becomes its ``_target_`` config; any other
    object its ``repr``. Used on hyper-parameters, which a resume never reads back.
    """
    if obj is None or isinstance(obj, str | int | float | bool | torch.Tensor):
        return obj
    if isinstance(obj, dict):
        return {k if isinstance(k, str | int) else repr(k): plain_data(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(plain_data(v) for v in obj)
    if isinstance(obj, functools.partial):
        target = f"{getattr(obj.func, '__module__', '?')}.{getattr(obj.func, '__qualname__', repr(obj.func))}"
        return {"_target_": target, "_partial_": True, **plain_data(dict(obj.keywords))}
    return repr(obj)


class RunConfigRecord(Callback):
    """Stores the composed run config in every checkpoint (``run_config``) and keeps its hyper-parameters plain
    data, so the checkpoint loads weights-only and a resume can name the settings that changed."""

    def __init__(self, run_config: dict[str, Any]):
        self.run_config = plain_data(run_config)

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        checkpoint["run_config"] = self.run_config
        for key in ("hyper_parameters", "datamodule_hyper_parameters"):
            if key in checkpoint:
                checkpoint[key] = plain_data(dict(checkpoint[key]))


class ApplyConfiguredOptimizerSettings(Callback):
    """After a resume whose config change was allowed explicitly: the optimisers keep their restored state but
    take the hyper-parameters (lr, betas, weight decay, ...) the current config builds, instead of the
    checkpoint's. A scheduled lr is rescaled by new / old ``initial_lr`` and the scheduler's base lr updated.
    """

    def __init__(self) -> None:
        self._configured: list[list[dict[str, Any]]] = []

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Lightning calls on_fit_start after configure_optimizers and before restoring the checkpoint's state.
        self._configured = [[_settings(g) for g in opt.param_groups] for opt in trainer.optimizers]

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for i, (opt, groups) in enumerate(zip(trainer.optimizers, self._configured)):
            schedulers = [c.scheduler for c in trainer.lr_scheduler_configs if c.scheduler.optimizer is opt]
            for j, (group, want) in enumerate(zip(opt.param_groups, groups)):
                for key, value in want.items():
                    if key == "lr" and "initial_lr" in want:
                        continue  # scheduled: follows initial_lr below
                    if group.get(key) == value:
                        continue
                    if key == "initial_lr":
                        group["lr"] = group["lr"] * value / group[key]
                        for sched in schedulers:
                            sched.base_lrs[j] = value
                    log.warning(
                        "resume: optimizer %d group %d %s %r -> %r (from the config)", i, j, key, group.get(key), value
                    )
                    group[key] = value


def _settings(group: dict[str, Any]) -> dict[str, Any]:
    """The hyper-parameters of an optimiser param group (numbers, bools, tuples; no params, no tensors)."""
    return {k: v for k, v in group.items() if k != "params" and isinstance(v, int | float | bool | tuple | None)}
