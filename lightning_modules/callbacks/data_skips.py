"""The count of undecodable files a run skipped, as the metric ``data/skipped``.

Recognition recipes log it at each epoch end; GAN runs have one endless epoch, so this callback logs it every
``every_n_batches`` training batches and at the end of training, straight to the loggers (rank 0, no device
sync). The number is ``trainer.datamodule.skipped``: distinct files (``datamodules.base.SkipCounter``) of rank
0's data pipeline.
"""

from __future__ import annotations

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback


def log_data_skips(trainer: pl.Trainer) -> int | None:
    """Send ``data/skipped`` to every logger of ``trainer`` (rank 0); returns the count, None without one."""
    skipped = getattr(trainer.datamodule, "skipped", None)
    if skipped is None or not trainer.is_global_zero:
        return None
    for logger in trainer.loggers:
        logger.log_metrics({"data/skipped": float(skipped)}, step=trainer.global_step)
    return int(skipped)


class DataSkipLogger(Callback):
    """Logs ``data/skipped`` every ``every_n_batches`` training batches and when training ends."""

    def __init__(self, every_n_batches: int = 100):
        if not isinstance(every_n_batches, int) or isinstance(every_n_batches, bool) or every_n_batches < 1:
            raise ValueError(f"callbacks.data_skips.every_n_batches: expected an integer >= 1, got {every_n_batches!r}")
        self.every_n_batches = every_n_batches

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx: int):
        if batch_idx % self.every_n_batches == 0:
            log_data_skips(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        log_data_skips(trainer)
