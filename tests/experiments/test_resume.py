"""Resume and start-up checks of experiments/train.py, in process (train(cfg) on a composed config).

One tiny demo run is trained once per module; every test works on its own copy of that run directory.
Budget: < 40 s on 2 CPU cores (three 16-image trainings, the rest fails before training).
"""

from __future__ import annotations

import csv
import logging
import shutil
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import open_dict

from experiments.resume import ResumeError
from experiments.train import train
from lightning_modules.config import ConfigError
from tests.experiments.test_train import TINY, seen_img

CONF = Path(__file__).resolve().parents[2] / "conf"


def _cfg(run: Path, *overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=[*TINY, "logger=csv", "model.total_kimg=0.016", *overrides])
    with open_dict(cfg):
        cfg.paths.output_dir = str(run)
    return cfg


def _ckpt(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)


def _rows(run: Path) -> list[dict]:
    with open(run / "csv" / "metrics.csv") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("trained") / "run"
    train(_cfg(run))
    return run


@pytest.fixture
def run(trained, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    return copy


class _Payload:
    """Unpickling this creates ``marker``: the stand-in for code a planted checkpoint would run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("how", ["auto", "explicit"])
def test_planted_checkpoint_is_refused_without_running(run, tmp_path, monkeypatch, how):
    """Weights-only loading is pinned: as on torch < 2.6 (whose default was full unpickling), nothing runs."""
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    marker = tmp_path / "ran"
    evil = run / "checkpoints" / "last.ckpt"
    torch.save({"pytorch-lightning_version": "2.6.6", "state_dict": {}, "x": _Payload(marker)}, evil)
    overrides = [] if how == "auto" else [f"ckpt_path={evil}"]
    with pytest.raises(ResumeError, match=r"refusing to load it[\s\S]*nothing in it was executed"):
        train(_cfg(run, *overrides))
    assert not marker.exists()


def test_resume_keeps_csv_rows_and_skips_a_torn_newer_checkpoint(run, caplog):
    rows = _rows(run)
    assert rows
    torn = run / "hpc_ckpt_1.ckpt"  # newer than last.ckpt, cut short as by a kill during a SLURM save
    torn.write_bytes((run / "checkpoints" / "last.ckpt").read_bytes()[:5000])
    with caplog.at_level(logging.WARNING, logger="train"):
        train(_cfg(run, "model.total_kimg=0.032"))
    assert "skipping" in caplog.text and "hpc_ckpt_1.ckpt" in caplog.text
    assert seen_img(run / "checkpoints" / "last.ckpt") == 32
    after = _rows(run)
    assert all(after[i][k] == v for i, r in enumerate(rows) for k, v in r.items())  # every earlier row kept
    assert len(after) > len(rows)


def test_only_torn_checkpoints_stop_with_the_next_step(run):
    last = run / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:5000])
    with pytest.raises(ResumeError, match=r"none of the checkpoints[\s\S]*ckpt_path=null[\s\S]*run_id=<new id>"):
        train(_cfg(run))
    with pytest.raises(ResumeError, match=r"cannot be read .*truncated.*ckpt_path=null"):
        train(_cfg(run, f"ckpt_path={last}"))


def test_changed_config_is_refused_naming_the_keys(run):
    with pytest.raises(ResumeError, match=r"model\.lr: 0\.0025 -> 0\.001[\s\S]*model\.r1_gamma") as err:
        train(_cfg(run, "model.lr=0.001", "model.r1_gamma=1.0"))
    assert "resume_config_changes=[model.lr,model.r1_gamma]" in str(err.value)
    with pytest.raises(ResumeError, match=r"data\._target_: 'datamodules\.embedded\.EmbeddedImageDataModule'"):
        train(_cfg(run, "data._target_=datamodules.images.ImageDataModule", "+data.path=x"))


def test_allowed_change_is_applied_to_the_restored_optimizer(run):
    before = _ckpt(run)["optimizer_states"][0]["param_groups"][0]["lr"]
    train(_cfg(run, "model.lr=0.001", "model.total_kimg=0.032", "resume_config_changes=[model.lr]"))
    after = _ckpt(run)
    assert seen_img(run / "checkpoints" / "last.ckpt") == 32
    assert after["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(before * 0.001 / 0.0025)
    assert after["run_config"]["model"]["lr"] == 0.001


def test_network_file_as_ckpt_path_says_use_init_from(run, tmp_path):
    from networks.checkpoint import load_networks, save_networks

    nets = load_networks(run / "checkpoints" / "last.ckpt")
    net_file = tmp_path / "nets.pt"
    save_networks(net_file, {k: nets[k] for k in ("G", "D", "G_ema")})
    with pytest.raises(ResumeError, match=rf"network file .*model\.init_from={net_file}"):
        train(_cfg(run, f"ckpt_path={net_file}"))


def test_architecture_mismatch_names_the_differing_arguments(run):
    with pytest.raises(ResumeError, match=r"G\.synthesis_kwargs\.channel_max: checkpoint 16, config 8") as err:
        train(_cfg(run, "model.generator.synthesis_kwargs.channel_max=8", "resume_config_changes=allow"))
    assert len(str(err.value).splitlines()) < 12


@pytest.mark.parametrize(
    "override,error,match",
    [
        ("data.batch_size=abc", ConfigError, r"data\.batch_size='abc': expected int"),
        ("callbacks.checkpoint.every_kimg=0", Exception, r"callbacks\.checkpoint\.every_kimg: expected kimg > 0"),
        ("cpu_threads=two", ValueError, r"cpu_threads must be a positive integer or null, got 'two'"),
    ],
)
def test_bad_values_name_the_key(tmp_path, override, error, match):
    with pytest.raises(error, match=match):
        train(_cfg(tmp_path / "run", override))


def test_read_only_checkpoint_folder_is_named_before_training(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the checkpoint folder should be")
    with pytest.raises(PermissionError, match=rf"checkpoint folder {blocker}/ckpts is not writable"):
        train(_cfg(tmp_path / "run", f"paths.ckpt_dir={blocker}/ckpts"))


def test_csv_logger_appends_and_a_fresh_start_keeps_the_old_file(tmp_path):
    from experiments.resume import keep_previous_metrics
    from lightning_modules.loggers import ResumableCSVLogger

    folder = tmp_path / "csv"
    folder.mkdir()
    (folder / "metrics.csv").write_text("a,step\n1.0,0\n")
    logger = ResumableCSVLogger(tmp_path, name="csv", version="")
    logger.log_metrics({"b": 2.0}, step=1)
    logger.save()
    rows = _rows(tmp_path)
    assert [(r["a"], r["b"], r["step"]) for r in rows] == [("1.0", "", "0"), ("", "2.0", "1")]
    keep_previous_metrics([folder], resuming=True)
    assert (folder / "metrics.csv").is_file()
    keep_previous_metrics([folder], resuming=False)
    kept = list(folder.glob("metrics-*.csv"))
    assert not (folder / "metrics.csv").exists() and len(kept) == 1 and "2.0" in kept[0].read_text()


def test_hyper_parameters_with_optimizer_partials_stay_weights_only_loadable(tmp_path):
    import functools

    from lightning_modules.callbacks.checkpointing import RunConfigRecord

    ckpt = {"hyper_parameters": {"optimizer": functools.partial(torch.optim.SGD, lr=0.1, momentum=0.9), "n": 3}}
    RunConfigRecord({"model": {"lr": 0.1}}).on_save_checkpoint(None, None, ckpt)
    torch.save(ckpt, tmp_path / "c.ckpt")
    back = torch.load(tmp_path / "c.ckpt", weights_only=True)
    assert back["hyper_parameters"]["optimizer"] == {
        "_target_": "torch.optim.sgd.SGD",
        "_partial_": True,
        "lr": 0.1,
        "momentum": 0.9,
    }
    assert back["run_config"] == {"model": {"lr": 0.1}} and back["hyper_parameters"]["n"] == 3
