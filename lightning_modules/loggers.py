"""CSV logging that survives a resume: Lightning's CSVLogger deletes ``metrics.csv`` of a fixed version when
its writer starts (even if the resume then fails); this one keeps the file and appends to it."""

from __future__ import annotations

import csv

from lightning_fabric.loggers.logger import rank_zero_experiment
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter


class AppendingExperimentWriter(ExperimentWriter):
    """Lightning's writer, but an existing ``metrics.csv`` is continued: its header seeds the column list
    (new columns rewrite the file with the union, keeping every row) and nothing is deleted."""

    def __init__(self, log_dir: str) -> None:
        super().__init__(log_dir)
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                header = next(csv.reader(f), [])
            self.metrics_keys = sorted(header)

    def _check_log_dir_exists(self) -> None:
        """Lightning removes ``metrics.csv`` here; a resumed run keeps it."""


class ResumableCSVLogger(CSVLogger):
    """``pytorch_lightning.loggers.CSVLogger`` whose ``metrics.csv`` keeps the rows of earlier runs of the same
    run directory (a rerun or a requeued job appends)."""

    @property
    @rank_zero_experiment
    def experiment(self) -> AppendingExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = AppendingExperimentWriter(log_dir=self.log_dir)
        return self._experiment
