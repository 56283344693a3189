"""Hostile NVlabs snapshots: declared sizes are checked against the tensors before any network is built.
Budget: < 5 s on 2 CPU cores (8x8 networks built in the test, no fixtures needed)."""

from __future__ import annotations

import pytest
import torch

from networks import stylegan2 as sg2
from networks.checkpoint import build_network
from networks.converters.nvidia import convert_nvidia_pickle
from networks.converters.safe_pickle import PersistentObject


def _persistent(module: torch.nn.Module, init_kwargs: dict | None = None) -> PersistentObject:
    """The record ``torch_utils.persistence`` pickles for ``module`` (NVlabs and our key names agree)."""
    state = {
        "_parameters": dict(module._parameters),
        "_buffers": dict(module._buffers),
        "_non_persistent_buffers_set": set(module._non_persistent_buffers_set),
        "_modules": {n: _persistent(m) for n, m in module._modules.items()},
    }
    if init_kwargs is not None:
        state["_init_args"], state["_init_kwargs"] = (), init_kwargs
    return PersistentObject(type(module).__name__, state, "")


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(0)
    g_kwargs = dict(
        z_dim=8,
        c_dim=2,
        w_dim=8,
        img_resolution=8,
        img_channels=3,
        mapping_kwargs={"num_layers": 2},
        synthesis_kwargs={"channel_base": 64, "channel_max": 8},
    )
    d_kwargs = dict(
        c_dim=2, img_resolution=8, img_channels=3, channel_base=64, channel_max=8, mapping_kwargs={"num_layers": 1}
    )
    return sg2.Generator(**g_kwargs), g_kwargs, sg2.Discriminator(**d_kwargs), d_kwargs


def _snapshot(nets, g_over=None, d_over=None, syn_over=None):
    G, g_kwargs, D, d_kwargs = nets
    g_kwargs = {**g_kwargs, **(g_over or {})}
    g_kwargs["synthesis_kwargs"] = {**g_kwargs["synthesis_kwargs"], **(syn_over or {})}
    return {"G": _persistent(G, g_kwargs), "D": _persistent(D, {**d_kwargs, **(d_over or {})})}


def test_honest_snapshot_converts_and_builds(nets):
    out = convert_nvidia_pickle(_snapshot(nets), "ok.pkl")
    G = build_network(out["networks"]["G"], "ok.pkl", "G")
    assert all(torch.equal(a, b) for a, b in zip(G.state_dict().values(), nets[0].state_dict().values()))
    build_network(out["networks"]["D"], "ok.pkl", "D")


@pytest.mark.parametrize(
    "over,match",
    [
        ({"g_over": {"img_resolution": 2**20}}, r"'G' declares img_resolution=1048576 .*synthesis\.b8\.torgb"),
        ({"syn_over": {"channel_base": 2**40, "channel_max": 2**20}}, r"'G' declares channels at 4"),
        ({"g_over": {"z_dim": 10**9}}, r"'G' declares z_dim=1000000000"),
        ({"g_over": {"w_dim": 10**9}}, r"'G' declares w_dim"),
        ({"g_over": {"mapping_kwargs": {"num_layers": 10**9}}}, r"mapping_kwargs\.num_layers=1000000000"),
        ({"g_over": {"img_channels": 10**6}}, r"img_channels=1000000"),
        ({"d_over": {"img_resolution": 2**30}}, r"'D' declares img_resolution=1073741824"),
        ({"d_over": {"channel_max": 2**20, "channel_base": 2**40}}, r"'D' declares channels at"),
        ({"d_over": {"cmap_dim": 10**7}}, r"'D' declares cmap_dim=10000000"),
        ({"d_over": {"img_resolution": "8"}}, r"img_resolution='8'; expected a non-negative integer"),
    ],
)
def test_hostile_declared_sizes_are_refused_before_building(nets, over, match, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("a network was built from unchecked kwargs")

    monkeypatch.setattr(sg2.Generator, "__init__", never)
    monkeypatch.setattr(sg2.Discriminator, "__init__", never)
    with pytest.raises(ValueError, match=match):
        convert_nvidia_pickle(_snapshot(nets, **over), "evil.pkl")
