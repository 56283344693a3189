"""Converters of foreign checkpoints (docs/checkpoints.md). Budget for tests/networks converters +
checkpoint: < 40 s on 2 CPU cores (tiny fixture networks, loaded once per module)."""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from networks.checkpoint import build_network, load_networks, read_networks
from networks.converters import hammer, rosinality, tf_stylegan2
from networks.converters.nvidia import generator_kwargs
from networks.converters.safe_pickle import UnsafePickleError, load_file, plain
from tests.golden import STYLEGAN2_ADA, needs_stylegan2_ada

FIXTURES = STYLEGAN2_ADA
pytestmark = needs_stylegan2_ada


@pytest.fixture(scope="module", params=["small", "cond"])
def snapshot(request):
    """Networks of ``stylegan2_<cfg>_snapshot.pkl`` read through the restricted unpickler, + golden io."""
    cfg = request.param
    nets = load_networks(FIXTURES / f"stylegan2_{cfg}_snapshot.pkl")
    io = torch.load(FIXTURES / f"stylegan2_{cfg}_io.pt")
    return cfg, nets, io


def _c(io):
    return io["c"] if io["c"].numel() else None


def _close(a, b, atol=1e-4, rtol=1e-4):
    torch.testing.assert_close(a, b, atol=atol, rtol=rtol)


@torch.no_grad()
def test_snapshot_outputs_match_reference(snapshot):
    """Every golden output of the fixture README, through the snapshot pickle (G, G_ema and D)."""
    cfg, nets, io = snapshot
    c = _c(io)
    G = nets["G"]
    ws = G.mapping(io["z"], c)
    _close(ws, io["ws_psi1"], atol=1e-5, rtol=1e-5)
    ws_trunc = G.mapping(io["z"], c, truncation_psi=0.5, truncation_cutoff=4)
    _close(ws_trunc, io["ws_psi0.5_cutoff4"], atol=1e-5, rtol=1e-5)
    _close(G.synthesis(ws, noise_mode="const"), io["img_const"])
    _close(G.synthesis(ws, noise_mode="none"), io["img_none"])
    _close(G.synthesis(ws_trunc, noise_mode="const"), io["img_const_psi0.5_cutoff4"])
    mixed = torch.cat([ws[:, :3], G.mapping(io["z2"], c)[:, 3:]], dim=1)
    _close(G.synthesis(mixed, noise_mode="const"), io["img_mixed_cut3_const"])
    _close(nets["G_ema"](io["z"], c, noise_mode="const"), io["img_const"])  # G_ema = G in this file
    _close(nets["D"](io["img_const"], c), io["d_logits_img_const"])
    _close(nets["D"](io["d_reals"], c), io["d_logits_reals"])


def test_snapshot_state_and_kwargs_equal_reference(snapshot):
    cfg, nets, _ = snapshot
    manifest = json.loads((FIXTURES / "manifest.json").read_text())["configs"][cfg]
    for name, ref_file, kwargs in (("G", "G", "G_init_kwargs"), ("D", "D", "D_init_kwargs")):
        ref = torch.load(FIXTURES / f"stylegan2_{cfg}_{ref_file}.pt")
        ours = nets[name].state_dict()
        assert sorted(ours) == sorted(ref)
        assert all(torch.equal(ours[k], ref[k]) for k in ref)
        assert nets[name].init_kwargs == {**nets[name].init_kwargs, **manifest[kwargs]}
    assert nets["meta"]["format"] == "nvlabs-pickle"
    assert nets["meta"]["training_set_kwargs"]["resolution"] == manifest["res"]


class _Exec:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


class _System:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("payload", [_Exec, _System])
def test_code_in_pickle_is_refused_without_running(tmp_path, payload):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"G": payload(marker), "D": None}))
    with pytest.raises(UnsafePickleError, match=r"refusing to load global '(builtins\.exec|posix\.system)'"):
        load_networks(path)
    assert not marker.exists()


def test_code_in_torch_file_is_refused_without_running(tmp_path):
    """A torch zip that fails weights_only falls back to the restricted reader, which refuses it too."""
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pt"
    torch.save({"g_ema": {"style.1.weight": torch.zeros(1)}, "args": _Exec(marker)}, path)
    with pytest.raises(UnsafePickleError, match="builtins.exec"):
        read_networks(path)
    assert not marker.exists()


def _compare(a: dict, b: dict, io):
    """Round trip exact: G_ema and D outputs equal; every network's tensors equal."""
    for name in ("G", "D", "G_ema"):
        sa, sb = a[name].state_dict(), b[name].state_dict()
        assert sorted(sa) == sorted(sb) and all(torch.equal(sa[k], sb[k]) for k in sa), name
    c = _c(io)
    with torch.no_grad():
        assert torch.equal(a["D"](io["d_reals"], c), b["D"](io["d_reals"], c))
        x = a["G_ema"](io["z"], c, truncation_psi=0.5, truncation_cutoff=3, noise_mode="const")
        assert torch.equal(x, b["G_ema"](io["z"], c, truncation_psi=0.5, truncation_cutoff=3, noise_mode="const"))


def test_rosinality_round_trip_legacy_file_with_args(snapshot, tmp_path):
    """rosinality layout in the legacy torch.save format with an ``args`` Namespace (inert placeholder)."""
    cfg, nets, io = snapshot
    if cfg != "small":
        pytest.skip("rosinality generators are unconditional")
    ckpt = rosinality.export_rosinality(nets["G_ema"], nets["D"], nets["G_ema"])
    ckpt["args"] = argparse.Namespace(size=32, channel_multiplier=2)
    path = tmp_path / "rosinality.pt"
    torch.save(ckpt, path, _use_new_zipfile_serialization=False)
    back = load_networks(path)
    assert back["meta"]["format"] == "rosinality" and back["meta"]["w_avg"] == "latent_avg"
    _compare({**nets, "G": nets["G_ema"]}, back, io)


def test_rosinality_without_latent_avg_estimates_w_avg(snapshot):
    cfg, nets, _ = snapshot
    if cfg != "small":
        pytest.skip("rosinality generators are unconditional")
    sd = rosinality.export_generator(nets["G_ema"])
    spec = rosinality.convert_rosinality({"g_ema": sd}, "mem")
    assert spec["meta"]["w_avg"] == "estimated"
    z = torch.randn([4096, 64], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = nets["G_ema"].mapping(z, None)[:, 0].mean(0)
    torch.testing.assert_close(spec["networks"]["G_ema"]["state_dict"]["mapping.w_avg"], expected)


def test_rosinality_unknown_tensor_is_named(snapshot):
    cfg, nets, _ = snapshot
    if cfg != "small":
        pytest.skip("rosinality generators are unconditional")
    sd = rosinality.export_generator(nets["G_ema"])
    sd["extra.weight"] = torch.zeros(3)
    with pytest.raises(ValueError, match="extra.weight"):
        rosinality.convert_rosinality({"g_ema": sd, "latent_avg": torch.zeros(64)}, "mem")


def test_hammer_round_trip(snapshot, tmp_path):
    cfg, nets, io = snapshot
    path = tmp_path / "hammer.pth"
    torch.save(hammer.export_hammer(nets["G"], nets["D"], nets["G_ema"]), path)
    back = load_networks(path)
    assert back["meta"]["format"] == "hammer"
    _compare(nets, back, io)


def test_hammer_shape_mismatch_names_tensor_and_shapes(snapshot):
    cfg, nets, _ = snapshot
    ckpt = hammer.export_hammer(nets["G"], nets["D"], nets["G_ema"])
    bias = ckpt["models"]["generator"]["synthesis.layer1.bias"]
    ckpt["models"]["generator"]["synthesis.layer1.bias"] = torch.zeros(bias.numel() + 1)
    spec = hammer.convert_hammer(ckpt, "hammer.pth")["networks"]["G"]
    n = bias.numel()
    with pytest.raises(ValueError, match=rf"'synthesis\.b8\.conv0\.bias' has shape \({n + 1},\).*expects \({n},\)"):
        build_network(spec, "hammer.pth", "G")


def test_hammer_unsupported_option_is_named(snapshot):
    cfg, nets, _ = snapshot
    ckpt = hammer.export_hammer(nets["G"], nets["D"], nets["G_ema"])
    ckpt["model_kwargs_init"]["generator"]["final_tanh"] = True
    with pytest.raises(ValueError, match="final_tanh=True"):
        hammer.convert_hammer(ckpt, "hammer.pth")


def _write_tf_pickle(path: Path, states: tuple, monkeypatch) -> None:
    """Pickle TF network states as ``dnnlib.tflib.network.Network`` objects (the official layout)."""
    module = types.ModuleType("dnnlib.tflib.network")

    class Network:
        def __getstate__(self):
            return self.state

    Network.__module__, Network.__qualname__ = "dnnlib.tflib.network", "Network"
    module.Network = Network
    for name in ("dnnlib", "dnnlib.tflib"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "dnnlib.tflib.network", module)

    def wrap(state):
        net = Network()
        net.state = {**state, "components": {k: wrap(v) for k, v in state["components"].items()}}
        return net

    path.write_bytes(pickle.dumps(tuple(wrap(s) for s in states), protocol=3))


def test_tf_pickle_round_trip(snapshot, tmp_path, monkeypatch):
    cfg, nets, io = snapshot
    states = tf_stylegan2.export_tf(nets["G"], nets["D"], nets["G_ema"])
    g_vars = dict(states[0]["components"]["synthesis"]["variables"])
    ours = nets["G"].state_dict()
    # The documented TF conventions, checked on the written file itself.
    assert np.array_equal(
        g_vars["8x8/Conv0_up/weight"],
        ours["synthesis.b8.conv0.weight"].numpy().transpose(2, 3, 1, 0)[::-1, ::-1],
    )
    assert np.allclose(g_vars["8x8/Conv1/mod_bias"] + 1, ours["synthesis.b8.conv1.affine.bias"].numpy())
    assert np.array_equal(g_vars["noise1"][0, 0], ours["synthesis.b8.conv0.noise_const"].numpy())
    path = tmp_path / "stylegan2-tf.pkl"
    _write_tf_pickle(path, states, monkeypatch)
    monkeypatch.undo()
    back = load_networks(path)
    assert back["meta"]["format"] == "tf-pickle"
    _compare(nets, back, io)


def test_nvidia_stylegan3_code_kwargs_are_nested():
    flat = {
        "z_dim": 8,
        "c_dim": 0,
        "w_dim": 8,
        "img_resolution": 8,
        "img_channels": 3,
        "mapping_kwargs": {"num_layers": 2},
        "channel_base": 64,
        "channel_max": 8,
        "num_fp16_res": 4,
        "conv_clamp": 256,
        "fused_modconv_default": "inference_only",
    }
    out = generator_kwargs(flat, "sg3.pkl")
    assert out["synthesis_kwargs"] == {
        "channel_base": 64,
        "channel_max": 8,
        "num_fp16_res": 4,
        "conv_clamp": 256,
    }
    assert out["mapping_kwargs"] == {"num_layers": 2, "w_avg_beta": 0.998}
    assert "fused_modconv_default" not in out


def test_unknown_and_missing_files(tmp_path):
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00not a checkpoint at all")
    with pytest.raises(ValueError, match="unknown checkpoint format"):
        load_networks(junk)
    with pytest.raises(FileNotFoundError, match="nope.pkl"):
        load_networks(tmp_path / "nope.pkl")
    other = tmp_path / "other.pkl"
    other.write_bytes(pickle.dumps({"weights": [1, 2]}))
    with pytest.raises(ValueError, match="unknown pickle content"):
        load_networks(other)


def test_plain_pickle_kind_and_numpy(tmp_path):
    path = tmp_path / "np.pkl"
    path.write_bytes(pickle.dumps({"a": np.arange(6, dtype=np.float32).reshape(2, 3), "s": np.float64(2.5)}))
    kind, obj = load_file(path)
    obj = plain(obj)
    assert kind == "pickle"
    assert obj["s"] == 2.5 and isinstance(obj["s"], float)
    assert np.array_equal(obj["a"], np.arange(6, dtype=np.float32).reshape(2, 3))
