"""Every experiment file composes with the root config and its data, model and trainer instantiate."""

from __future__ import annotations

from pathlib import Path

import hydra
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf, open_dict

CONF = Path(__file__).resolve().parents[1] / "conf"
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


def compose_experiment(name: str, overrides: list[str] | None = None):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={name}", *(overrides or [])], return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.output_dir = "/tmp/suite-config-test"
    return cfg


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes_and_instantiates(name):
    cfg = compose_experiment(name)
    OmegaConf.resolve(cfg)
    assert cfg.task_name, f"experiment {name} has no task_name"
    datamodule = hydra.utils.instantiate(cfg.data)
    assert datamodule is not None
    if name.startswith(("stylegan2_ada", "insgen", "eqgan", "genda", "depthgan", "volumegan")) and "1024" not in name:
        model = hydra.utils.instantiate(cfg.model, _convert_="partial")
        assert sum(p.numel() for p in model.parameters()) > 0
    for cb in (cfg.get("callbacks") or {}).values():
        if cb:
            hydra.utils.instantiate(cb)


def test_unknown_config_key_is_rejected_with_its_name():
    with pytest.raises(Exception, match="no_such_key"):
        compose_experiment("demo", ["model.no_such_key=1"])


def test_auto_preset_follows_the_formulas():
    cfg = compose_experiment("stylegan2_ada_auto", ["data=embedded_faces", "trainer.devices=1"])
    OmegaConf.resolve(cfg)
    # res 32, 1 GPU: batch = max(min(1 * min(4096 // 32, 32), 64), 1) = 32; gamma = 0.0002 * 32^2 / 32.
    assert cfg.data.batch_size == 32
    assert cfg.model.r1_gamma == pytest.approx(0.0064)
    assert cfg.model.discriminator.epilogue_kwargs.mbstd_group_size == 4
    assert cfg.model.generator.synthesis_kwargs.channel_base == 16384


def test_slurm_launcher_and_trainer_compose(monkeypatch):
    monkeypatch.setenv("SLURM_NNODES", "2")
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "4")
    cfg = compose_experiment("demo", ["hydra/launcher=slurm", "trainer=slurm"])
    assert cfg.hydra.launcher.tasks_per_node == 8
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher")
    OmegaConf.resolve(cfg)
    assert cfg.trainer.num_nodes == 2 and cfg.trainer.devices == 4
    assert cfg.trainer.plugins[0].auto_requeue is True


def test_debug_fast_shrinks_the_run():
    cfg = compose_experiment("demo", ["debug=fast"])
    assert cfg.model.total_kimg == pytest.approx(0.1)
    assert set(cfg.logger) == {"csv"}
