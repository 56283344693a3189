"""Image classification recipe (automatic optimisation) used for CompConv (arXiv 2106.10486).

Training recipe [X] (suite choice; the paper's is not transcribed): SGD momentum 0.9, lr 0.1 x batch/256, weight
decay 1e-4, cosine schedule; all of it comes from the config as ``optimizer`` / ``scheduler`` partials.
"""

from __future__ import annotations

from collections.abc import Callable

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from metrics.complexity import count_macs, count_params


class ImageClassifier(pl.LightningModule):
    """Cross-entropy training of ``net`` with top-1/top-5 accuracy (torchmetrics) on validation and test.

    ``optimizer(params)`` and ``scheduler(optimizer)`` are partials (Hydra ``_partial_: true``);
    ``scheduler_interval`` is ``epoch`` or ``step``. ``example_input_size`` (C, H, W), when given, makes the
    module count the network's MACs once at fit start and log them with the parameter count.
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        num_classes: int,
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        scheduler_interval: str = "epoch",
        label_smoothing: float = 0.0,
        example_input_size: tuple[int, int, int] | None = None,
    ) -> None:
        super().__init__()
        if scheduler_interval not in ("epoch", "step"):
            raise ValueError(f"model.scheduler_interval must be 'epoch' or 'step', got {scheduler_interval!r}")
        # the optimiser / scheduler partials stay out of the checkpoint: it must load with weights_only=True
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"], logger=False)
        self.net = net
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        top5 = min(5, num_classes)
        self.train_top1 = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        self.val_top1 = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        self.val_top5 = MulticlassAccuracy(num_classes, top_k=top5, average="micro")
        self.test_top1 = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        self.test_top5 = MulticlassAccuracy(num_classes, top_k=top5, average="micro")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def on_fit_start(self) -> None:
        stats = {"model/params_M": count_params(self.net) / 1e6}
        if self.hparams.example_input_size is not None:
            example = torch.zeros(1, *self.hparams.example_input_size, device=self.device)
            stats["model/GMACs"] = count_macs(self.net, example).total / 1e9
        for logger in self.loggers:
            logger.log_metrics(stats, step=0)

    def _loss(self, batch):
        x, y = batch
        logits = self.net(x)
        return F.cross_entropy(logits, y, label_smoothing=self.hparams.label_smoothing), logits, y

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss, logits, y = self._loss(batch)
        self.train_top1(logits, y)
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/acc_top1", self.train_top1, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        loss, logits, y = self._loss(batch)
        self.val_top1(logits, y)
        self.val_top5(logits, y)
        self.log("val/loss", loss, on_epoch=True, sync_dist=True, prog_bar=True)
        self.log("val/acc_top1", self.val_top1, on_epoch=True, prog_bar=True)
        self.log("val/acc_top5", self.val_top5, on_epoch=True)

    def test_step(self, batch, batch_idx: int) -> None:
        loss, logits, y = self._loss(batch)
        self.test_top1(logits, y)
        self.test_top5(logits, y)
        self.log("test/loss", loss, on_epoch=True, sync_dist=True)
        self.log("test/acc_top1", self.test_top1, on_epoch=True)
        self.log("test/acc_top5", self.test_top5, on_epoch=True)

    def on_train_epoch_end(self) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if dm is not None and hasattr(dm, "skipped"):
            self.log("data/skipped", float(dm.skipped), rank_zero_only=True)

    def configure_optimizers(self):
        opt = self.optimizer_factory(self.trainer.model.parameters())
        if self.scheduler_factory is None:
            return opt
        sched = self.scheduler_factory(opt)
        interval = self.hparams.scheduler_interval
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": interval}}
