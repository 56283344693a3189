"""networks/checkpoint.py: the suite's network file, Lightning checkpoints, allow-list, errors.
Budget: < 15 s on 2 CPU cores (tiny networks built in the test)."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from networks import stylegan2 as sg2
from networks.checkpoint import NETWORK_FORMAT, load_networks, save_networks


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(0)
    G = sg2.Generator(
        z_dim=8,
        c_dim=3,
        w_dim=8,
        img_resolution=8,
        img_channels=3,
        mapping_kwargs={"num_layers": 2},
        synthesis_kwargs={"channel_base": 64, "channel_max": 8},
    )
    D = sg2.Discriminator(
        c_dim=3,
        img_resolution=8,
        img_channels=3,
        channel_base=64,
        channel_max=8,
        mapping_kwargs={"num_layers": 1},
        epilogue_kwargs={"mbstd_group_size": 2},
    )
    with torch.no_grad():
        for p in list(G.parameters()) + list(D.parameters()):
            p.add_(torch.randn_like(p) * 0.1)
        G.mapping.w_avg.normal_()
    G_ema = sg2.Generator(**G.init_kwargs)
    G_ema.load_state_dict(G.state_dict())
    return {"G": G.eval(), "D": D.eval(), "G_ema": G_ema.eval()}


def _inputs():
    g = torch.Generator().manual_seed(1)
    z = torch.randn([2, 8], generator=g)
    c = torch.eye(3)[[0, 2]]
    return z, c, torch.randn([2, 3, 8, 8], generator=g)


def _assert_same(a, b, names=("G", "D", "G_ema")):
    z, c, img = _inputs()
    with torch.no_grad():
        for name in names:
            if name == "D":
                assert torch.equal(a["D"](img, c), b["D"](img, c))
            else:
                x = a[name](z, c, truncation_psi=0.7, noise_mode="const")
                assert torch.equal(x, b[name](z, c, truncation_psi=0.7, noise_mode="const"))


def test_network_file_round_trip_is_plain_data(nets, tmp_path):
    path = tmp_path / "nets.pt"
    save_networks(path, nets, {"note": "unit", "kimg": 12.5})
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == NETWORK_FORMAT
    assert raw["networks"]["G"]["class"] == "networks.stylegan2.Generator"
    assert raw["networks"]["G"]["init_kwargs"] == nets["G"].init_kwargs
    back = load_networks(path)
    assert back["meta"]["note"] == "unit" and back["meta"]["format"] == NETWORK_FORMAT
    _assert_same(nets, back)
    assert not back["G"].training


def test_non_plain_meta_is_refused(nets, tmp_path):
    with pytest.raises(TypeError, match=r"meta\.bad: Tensor is not plain data"):
        save_networks(tmp_path / "x.pt", {"G": nets["G"]}, {"bad": torch.zeros(1)})


def test_class_outside_allow_list_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save(
        {
            "format": NETWORK_FORMAT,
            "meta": {},
            "networks": {"G": {"class": "os.system", "init_kwargs": {}, "state_dict": {}}},
        },
        path,
    )
    with pytest.raises(ValueError, match="network class 'os.system' is not on the allow-list"):
        load_networks(path)


def test_shape_mismatch_names_tensor_and_both_shapes(nets, tmp_path):
    path = tmp_path / "nets.pt"
    save_networks(path, {"G": nets["G"]})
    raw = torch.load(path, weights_only=True)
    raw["networks"]["G"]["state_dict"]["mapping.fc0.weight"] = torch.zeros(8, 7)
    torch.save(raw, path)
    with pytest.raises(ValueError, match=r"'mapping\.fc0\.weight' has shape \(8, 7\).*expects \(8, 16\)"):
        load_networks(path)


def _ckpt(nets, names, hyper_parameters=None):
    state = {f"{n}.{k}": v for n in names for k, v in nets[n].state_dict().items()}
    state["augment_pipe.p"] = torch.zeros([])
    ckpt = {
        "epoch": 3,
        "global_step": 40,
        "state_dict": state,
        "networks": {
            n: {"class": "networks.stylegan2." + type(nets[n]).__name__, "init_kwargs": nets[n].init_kwargs}
            for n in names
        },
    }
    if hyper_parameters is not None:
        ckpt["hyper_parameters"] = hyper_parameters
    return ckpt


def test_lightning_checkpoint_with_hydra_hparams(nets, tmp_path):
    """Prefixes G./D./G_ema. + ``networks``; DictConfig hparams are kept inert, never constructed."""
    path = tmp_path / "last.ckpt"
    cfg = OmegaConf.create({"model": {"lr": 0.002}, "data": {"batch_size": 32}})
    torch.save(_ckpt(nets, ["G", "D", "G_ema"], cfg), path)
    back = load_networks(path)
    assert back["meta"]["format"] == "lightning-ckpt" and back["meta"]["global_step"] == 40
    _assert_same(nets, back)


def test_lightning_checkpoint_without_d(nets, tmp_path):
    path = tmp_path / "g_only.ckpt"
    torch.save(_ckpt(nets, ["G_ema"]), path)
    back = load_networks(path)
    assert back["D"] is None and back["G"] is None
    _assert_same(nets, back, names=("G_ema",))


def test_lightning_checkpoint_without_networks_entry(nets, tmp_path):
    path = tmp_path / "old.ckpt"
    ckpt = _ckpt(nets, ["G"])
    del ckpt["networks"]
    torch.save(ckpt, path)
    with pytest.raises(ValueError, match="without a 'networks' entry"):
        load_networks(path)


def test_unknown_torch_dict_lists_its_keys(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"encoder": {"w": torch.zeros(1)}}, path)
    with pytest.raises(ValueError, match=r"unknown checkpoint format; top-level keys \['encoder'\]"):
        load_networks(path)
