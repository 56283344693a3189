"""Editing presets match the originals and `method=` carries each method's defaults (conf/method/*.yaml).

Values of zhujiapeng/resefa@973889c (manipulate.py L36 seed 4, L54/L56 psi 0.7 on 8 layers, L91/L97/L99 seven
steps in [-10, 10], compute_jacobian.py RGB sum) and zhujiapeng/LowRankGAN@90bf639 (manipulate.py L49/L51/L53
seven steps in [-4, 4], L57 seed 4, no truncation; compute_jacobian.py RGB mean)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[2]
RESEFA = {"reduce": "sum", "psi": 0.7, "cutoff": 8, "alphas": (-10.0, 10.0, 7), "seed": 4, "samples": 10}
LOWRANK = {"reduce": "mean", "psi": 1.0, "cutoff": None, "alphas": (-4.0, 4.0, 7), "seed": 4, "samples": 10}
COLAB = {"reduce": "sum", "psi": 0.7, "cutoff": 8, "alphas": (-12.0, 12.0, 13), "seed": 7464, "samples": 6}
# keys a method owns: a preset that set one would pin it across `method=` switches
METHOD_KEYS = {
    "jacobian": {"reduce"},
    "edit": {"alpha_min", "alpha_max", "num_alphas", "truncation_psi", "truncation_layers", "seed"},
}


def _compose(*overrides: str, network: str | None = "g.pt"):
    extra = [f"network={network}"] if network else []
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("edit", overrides=[*overrides, *extra, "output_dir=/tmp/x"])


def _defaults(cfg) -> dict:
    e = cfg.edit
    return {
        "reduce": cfg.jacobian.reduce,
        "psi": e.truncation_psi,
        "cutoff": e.truncation_layers,
        "alphas": (e.alpha_min, e.alpha_max, e.num_alphas),
        "seed": e.seed,
        "samples": e.num_samples,
    }


@pytest.mark.parametrize(
    "overrides,method,expected",
    [
        (["edit=resefa_ffhq_eyes"], "resefa", RESEFA),
        (["edit=resefa_ffhq_nose"], "resefa", RESEFA),
        (["edit=resefa_ffhq_eyebrow"], "resefa", COLAB),
        (["edit=lowrankgan_ffhq_mouth"], "lowrankgan", LOWRANK),
        (["edit=resefa_ffhq_eyes", "method=lowrankgan"], "lowrankgan", LOWRANK),
        (["edit=resefa_ffhq_lipstick", "method=lowrankgan"], "lowrankgan", LOWRANK),
        (["edit=lowrankgan_ffhq_eyes", "method=resefa"], "resefa", RESEFA),
        (["edit=demo", "method=lowrankgan"], "lowrankgan", {**LOWRANK, "samples": 3}),  # demo: 3 samples
    ],
)
def test_presets_render_with_the_originals_defaults_and_method_switches_carry_them(overrides, method, expected):
    cfg = _compose(*overrides)
    assert cfg.method == method
    assert _defaults(cfg) == expected
    assert cfg.jacobian.num_samples in (5, 2) and cfg.jacobian.seed == 4


def test_region_and_layers_stay_with_the_preset_across_a_method_switch():
    cfg = _compose("edit=resefa_ffhq_eyebrow", "method=lowrankgan")
    assert list(cfg.region.names) == ["eyebrow"] and list(cfg.edit.layers) == [8, 9, 10, 11]
    assert cfg.lowrank.lambda_inv == 60 and cfg.lowrank.mu_norm == "induced"


def test_no_preset_pins_a_method_default():
    for path in sorted((ROOT / "conf" / "edit").glob("*.yaml")):
        data = OmegaConf.to_container(OmegaConf.load(path))
        for group, keys in METHOD_KEYS.items():
            pinned = keys & set((data.get(group) or {}).keys())
            assert not pinned, f"{path.name} sets {group}.{sorted(pinned)}: leave them to conf/method/"


def test_presets_default_to_the_gpu_when_there_is_one(monkeypatch):
    import experiments.edit as edit

    for name in ("resefa_ffhq_eyes", "lowrankgan_ffhq_eyes", "logan_bedroom"):
        assert _compose(f"edit={name}").device == "auto"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert edit.resolve_device("auto") == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert edit.resolve_device("auto") == "cpu" and edit.resolve_device("cpu") == "cpu"


def test_missing_network_names_where_it_comes_from(tmp_path):
    import experiments.edit as edit

    cfg = _compose("edit=logan_indoor_demo", f"paths.log_dir={tmp_path}", network=None)
    assert cfg.network == f"{tmp_path}/stylegan2_indoor_demo/seed0/checkpoints/last.ckpt"
    with pytest.raises(FileNotFoundError, match="experiment=stylegan2_indoor_demo"):
        edit.load_generator(cfg.network, cfg.network_key, "cpu", cfg.network_hint)
