"""Progress of a GAN run in images seen: kimg against ``total_kimg`` with the rate and an ETA.

GAN runs draw from an infinite sampler, so Lightning's batch-counting bar shows ``0/?``. This bar counts kimg
from the module's host-side ``progress`` (no device read) and shows the latest logged losses beside it.
"""

from __future__ import annotations

import sys

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ProgressBar
from tqdm.auto import tqdm


class KimgProgressBar(ProgressBar):
    """``kimg 12.3/25000 [..] 2.1 s/kimg, ETA`` on rank 0, refreshed every ``refresh_rate`` iterations."""

    def __init__(self, refresh_rate: int = 10):
        super().__init__()
        if int(refresh_rate) < 1:
            raise ValueError(f"callbacks.progress.refresh_rate: expected a positive integer, got {refresh_rate!r}")
        self.refresh_rate = int(refresh_rate)
        self._enabled = True
        self.bar: tqdm | None = None

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        progress = pl_module.progress
        self.bar = tqdm(
            total=progress.total_kimg,
            initial=round(progress.kimg, 3),
            desc="kimg",
            unit="kimg",
            bar_format=f"{{desc}} {{n:.{progress.kimg_decimals}f}}/{{total:g}} |{{bar}}| "
            "[{elapsed}<{remaining}, {rate_fmt}]{postfix}",
            disable=not (self._enabled and trainer.is_global_zero),
            dynamic_ncols=True,
            file=sys.stdout,
            smoothing=0.1,
        )

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.bar is None or self.bar.disable or pl_module.progress.iteration % self.refresh_rate != 0:
            return
        self.bar.n = round(pl_module.progress.kimg, 3)
        metrics = {k.split("/")[-1]: v for k, v in self.get_metrics(trainer, pl_module).items() if k.startswith("loss")}
        self.bar.set_postfix({k: f"{v:.3f}" if isinstance(v, float) else v for k, v in metrics.items()}, refresh=False)
        self.bar.refresh()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.bar is not None:
            self.bar.n = round(pl_module.progress.kimg, 3)
            self.bar.close()
            self.bar = None

    def print(self, *args, **kwargs) -> None:
        if self.bar is not None and not self.bar.disable:
            self.bar.write(" ".join(map(str, args)))
        else:
            print(*args, **kwargs)
