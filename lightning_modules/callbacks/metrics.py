"""Training-time metrics every N kimg with explicit protocols (docs/metrics.md).

Reads ``pl_module.progress.seen_img`` and evaluates ``pl_module.G_ema`` (``z_dim``/``c_dim``) on all ranks (``compute``
syncs; never rank-zero-only). Numbers go to every logger as ``metrics/<name>`` with ``kimg``, to
``callback_metrics`` (for sweeps), and with their full protocol record to ``<run dir>/metric-<name>.jsonl``, whose
curve is redrawn to ``metric-<name>.png`` after every evaluation (metrics/plots.py).
The detectors live in this callback, never in the LightningModule, so checkpoints stay free of them; the
callback's own checkpoint state is only the last evaluated tick.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback

from metrics.detectors import load_detector
from metrics.evaluation import append_jsonl, evaluate_generator
from metrics.plots import plot_metric_file
from metrics.protocol import MetricProtocol

log = logging.getLogger(__name__)


class MetricsCallback(Callback):
    """Evaluate ``protocols`` every ``every_kimg`` kimg (and at the end of training).

    Args:
        protocols: list of protocol dicts (``conf/metrics/<preset>.yaml``).
        every_kimg: evaluation interval in thousands of real images shown to D.
        detectors_dir: folder of the local detector files (``paths.detectors_dir``).
        cache_dir: folder of the hashed real-statistics cache (null: no cache).
        detector: optional override of every protocol's detector (e.g. ``random-cnn`` for smoke runs).
        batch_size: per-rank generation / feature batch.
        num_workers: DataLoader workers for the reference images.
        at_train_end: also evaluate when training stops (unless it just did).
        at_train_start: also evaluate when a fresh run starts (kimg 0: the first point of the curve).
    """

    def __init__(
        self,
        protocols: list[dict[str, Any]],
        every_kimg: float = 50,
        detectors_dir: str | None = None,
        cache_dir: str | None = None,
        detector: str | None = None,
        batch_size: int = 32,
        num_workers: int = 0,
        at_train_end: bool = True,
        at_train_start: bool = False,
    ) -> None:
        if every_kimg <= 0:
            raise ValueError(f"metrics.every_kimg must be > 0, got {every_kimg}")
        self.protocols = [MetricProtocol.from_dict(dict(p)) for p in protocols]
        if detector is not None:
            self.protocols = [_with_detector(p, detector) for p in self.protocols]
        self.every_kimg = float(every_kimg)
        self.detectors_dir, self.cache_dir = detectors_dir, cache_dir
        self.batch_size, self.num_workers = batch_size, num_workers
        self.at_train_end, self.at_train_start = at_train_end, at_train_start
        self.last_tick = 0
        self._metrics: dict = {}
        self._detectors: dict = {}
        self._logged_protocols: set[str] = set()

    def _tick(self, pl_module: pl.LightningModule) -> int:
        return int(pl_module.progress.seen_img // (self.every_kimg * 1000))

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.at_train_start and pl_module.progress.seen_img == 0:
            self.evaluate(trainer, pl_module)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        tick = self._tick(pl_module)
        if tick > self.last_tick:
            self.last_tick = tick
            self.evaluate(trainer, pl_module, log_callback_metrics=True)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        seen = pl_module.progress.seen_img
        if self.at_train_end and seen > 0 and seen != getattr(self, "_last_seen", None):
            self.evaluate(trainer, pl_module)

    def _detector(self, name: str):
        if name not in self._detectors:
            self._detectors[name] = load_detector(name, self.detectors_dir)
        return self._detectors[name]

    def _reference(self, trainer: pl.Trainer, pl_module: pl.LightningModule, proto: MetricProtocol):
        if proto.reference == "custom":
            from datamodules.images import ImageFolderDataset

            return ImageFolderDataset(proto.reference_path, resolution=pl_module.G_ema.img_resolution)
        dm = trainer.datamodule
        if dm is None or not hasattr(dm, "reference_dataset"):
            raise ValueError(
                f"metric {proto.name}: reference={proto.reference} needs a datamodule with reference_dataset"
            )
        return dm.reference_dataset(proto.reference)

    def evaluate(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, log_callback_metrics: bool = False
    ) -> list[dict[str, Any]]:
        """Run every protocol now (all ranks), log the numbers with their protocol."""
        self._last_seen = pl_module.progress.seen_img
        results = evaluate_generator(
            pl_module.G_ema,
            self.protocols,
            reference=lambda p: self._reference(trainer, pl_module, p),
            detector=self._detector,
            cache_dir=self.cache_dir,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            metrics=self._metrics,
            extra_record={"generator": "G_ema"},
        )
        self.publish(trainer, pl_module, results, log_callback_metrics)
        return results

    def publish(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, results: list[dict[str, Any]], callback_metrics: bool
    ) -> None:
        """Log each result with its protocol (loggers, ``metric-<name>.jsonl``; rank 0) and, during training,
        as ``metrics/<key>`` callback metrics (Lightning forbids ``self.log`` in ``on_train_end``)."""
        for res in results:
            if callback_metrics:
                for key, value in res["results"].items():
                    pl_module.log(f"metrics/{key}", value, logger=False, rank_zero_only=True)
            if trainer.is_global_zero:
                self._log(trainer, res, pl_module.progress.kimg)

    def _log(self, trainer: pl.Trainer, res: dict[str, Any], kimg: float) -> None:
        metrics = {f"metrics/{k}": v for k, v in res["results"].items()}
        for logger in trainer.loggers:
            if res["name"] not in self._logged_protocols:
                logger.log_hyperparams({f"metric_protocol/{res['name']}": res["protocol"]})
            logger.log_metrics({**metrics, "kimg": kimg}, step=trainer.global_step)
        self._logged_protocols.add(res["name"])
        jsonl = Path(trainer.default_root_dir) / f"metric-{res['name']}.jsonl"
        append_jsonl(jsonl, res, kimg=kimg)
        plot_metric_file(jsonl)
        log.info("kimg %.1f %s", kimg, " ".join(f"{k}={v:.4f}" for k, v in res["results"].items()))

    def state_dict(self) -> dict[str, Any]:
        return {"last_tick": self.last_tick}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.last_tick = int(state_dict["last_tick"])


def _with_detector(p: MetricProtocol, detector: str) -> MetricProtocol:
    import dataclasses

    return dataclasses.replace(p, detector=detector)
