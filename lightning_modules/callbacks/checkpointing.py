"""Atomic checkpoints: written to a temporary file, then renamed, so a crash never leaves a torn file."""

from __future__ import annotations

import os
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Checkpoint, ModelCheckpoint


def save_checkpoint_atomic(trainer: pl.Trainer, path: str | Path, weights_only: bool = False) -> Path:
    """Collective on all ranks (like ``trainer.save_checkpoint``); rank 0 renames ``<path>.tmp`` -> ``path``."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    if trainer.is_global_zero:
        path.parent.mkdir(parents=True, exist_ok=True)
    trainer.save_checkpoint(tmp, weights_only)
    if trainer.is_global_zero:
        os.replace(tmp, path)
    trainer.strategy.barrier("save_checkpoint_atomic")
    return path


class AtomicModelCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint (epoch/step/metric driven) with atomic writes."""

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        save_checkpoint_atomic(trainer, filepath, self.save_weights_only)
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.after_save_checkpoint(self)


class KimgCheckpoint(Checkpoint):
    """Checkpoints scheduled by images seen, not by ``global_step`` (pitfalls §1).

    Writes ``last.ckpt`` every ``every_kimg`` and at the end of training; with ``keep_snapshots`` also
    ``network-snapshot-<kimg:06d>.ckpt`` as the reference's periodic pickles. Being a ``Checkpoint``, it
    replaces Lightning's default step-driven ModelCheckpoint.
    """

    def __init__(self, dirpath: str, every_kimg: float = 50.0, keep_snapshots: bool = False):
        self.dirpath = Path(dirpath)
        self.every_kimg = every_kimg
        self.keep_snapshots = keep_snapshots
        self._next_kimg: float | None = None

    def _kimg(self, pl_module) -> float:
        return int(pl_module.seen_img) / 1000

    def _save(self, trainer: pl.Trainer, pl_module) -> None:
        save_checkpoint_atomic(trainer, self.dirpath / "last.ckpt")
        if self.keep_snapshots:
            kimg = int(pl_module.seen_img) // 1000
            save_checkpoint_atomic(trainer, self.dirpath / f"network-snapshot-{kimg:06d}.ckpt")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        kimg = self._kimg(pl_module)
        if self._next_kimg is None:
            self._next_kimg = (kimg // self.every_kimg + 1) * self.every_kimg
        if kimg >= self._next_kimg and not trainer.should_stop:
            self._save(trainer, pl_module)
            self._next_kimg = (kimg // self.every_kimg + 1) * self.every_kimg

    def on_train_end(self, trainer, pl_module) -> None:
        self._save(trainer, pl_module)
