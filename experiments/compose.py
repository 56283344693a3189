"""Build runs from the config tree: the one path from ``conf/experiment/*.yaml`` to objects.

``experiments/train.py`` and every benchmark and study compose the same experiment files with overrides, so a
benchmark measures exactly what ``train.py experiment=<name>`` trains::

    cfg = compose_experiment("demo", ["model.total_kimg=1", "data.batch_size=8"])
    module = instantiate_module(cfg)
    datamodule = instantiate_datamodule(cfg)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import hydra
import pytorch_lightning as pl
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from lightning_modules.config import check_keys
from lightning_modules.presets import register_resolvers

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def compose_experiment(experiment: str, overrides: Sequence[str] = (), config_name: str = "train") -> DictConfig:
    """``conf/<config_name>.yaml`` with ``experiment=<experiment>`` and ``overrides`` (Hydra's compose API)."""
    register_resolvers()
    if not (CONF_DIR / "experiment" / f"{experiment}.yaml").is_file():
        known = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
        raise ValueError(f"experiment={experiment}: no conf/experiment/{experiment}.yaml; known: {known}")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name, overrides=[f"experiment={experiment}", *overrides])


def instantiate_module(cfg: DictConfig) -> pl.LightningModule:
    """The LightningModule of ``cfg.model`` (its keys checked against the class's arguments first)."""
    check_keys(cfg.model, "model")
    return hydra.utils.instantiate(cfg.model, _convert_="partial")


def instantiate_datamodule(cfg: DictConfig) -> pl.LightningDataModule:
    return hydra.utils.instantiate(cfg.data)
