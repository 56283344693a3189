"""Snapshots written by genforce/insgen and genforce/eqgan-sa: read without running the pickle (budget ~10 s).

The pickles are written here in the originals' layouts (tests/networks/original_pickles.py): persistent records
for the originals' classes, plain ``torch.nn`` modules inside them.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from networks.checkpoint import load_networks
from networks.converters.safe_pickle import UnsafePickleError, load_file
from networks.eqgan_sa import EqGANGenerator, render_heatmaps
from networks.insgen_heads import ContrastiveHead
from networks.stylegan2 import Conv2dLayer
from tests.lightning_modules.gan_helpers import tiny_networks
from tests.networks.original_pickles import (
    Persistent,
    head,
    insgen_snapshot,
    original_layout,
    randomise,
    write_original_pickle,
)

EQ_KW = dict(
    z_dim=16,
    c_dim=0,
    w_dim=16,
    img_resolution=16,
    img_channels=3,
    mapping_kwargs={"num_layers": 2},
    synthesis_kwargs={"channel_base": 128, "channel_max": 16},
)


def _equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sorted(sa) == sorted(sb) and all(torch.equal(sa[k], sb[k].to(sa[k].dtype)) for k in sa)


def test_insgen_snapshot_holds_d_ema_heads_and_queues(tmp_path, monkeypatch):
    G, D = tiny_networks()
    D_ema = randomise(tiny_networks()[1], 1)
    DHead, GHead = head(6, 2), head(10, 3)
    path = tmp_path / "network-snapshot-000100.pkl"
    write_original_pickle(path, insgen_snapshot(G, D, D_ema, DHead, GHead), monkeypatch)
    nets = load_networks(path)
    assert nets["meta"]["networks"] == ["D", "DHead", "D_ema", "G", "GHead", "G_ema"]
    assert nets["meta"]["augment_p"] == pytest.approx(0.25) and "ignored_entries" not in nets["meta"]
    assert _equal(nets["D_ema"], D_ema) and _equal(nets["D"], D) and _equal(nets["G_ema"], G)
    for name, ref in (("DHead", DHead), ("GHead", GHead)):
        got = nets[name]
        assert isinstance(got, ContrastiveHead) and got.queue_size == ref.queue_size and int(got.queue_ptr) == 3
        assert _equal(got, ref), name
        feat = torch.randn(4, 16)
        torch.testing.assert_close(got.query(feat), ref.query(feat))
        torch.testing.assert_close(got.key(feat), ref.key(feat))


def test_plain_torch_modules_are_data_records_and_others_are_refused(tmp_path, monkeypatch):
    """The allow-list names the plain modules one by one; any other torch.nn class is refused before anything
    runs, and a pickle cannot call the record classes (only NEWOBJ + BUILD build them)."""
    seq = nn.Sequential(nn.Linear(2, 3), nn.ReLU())
    write_original_pickle(tmp_path / "ok.pkl", {"m": seq}, monkeypatch)
    record = load_file(tmp_path / "ok.pkl")[1]["m"]
    assert record.class_name == "torch.nn.modules.container.Sequential"
    linear = record.state["_modules"]["0"]
    assert linear.class_name == "torch.nn.modules.linear.Linear"
    assert torch.equal(linear.state["_parameters"]["weight"], seq[0].weight.detach())
    write_original_pickle(tmp_path / "conv.pkl", {"m": nn.Conv2d(1, 1, 1)}, monkeypatch)
    with pytest.raises(UnsafePickleError, match=r"refusing to load global 'torch\.nn\.modules\.conv\.Conv2d'"):
        load_file(tmp_path / "conv.pkl")
    (tmp_path / "call.pkl").write_bytes(b"\x80\x04ctorch.nn.modules.linear\nLinear\nK\x02K\x03\x86R.")
    with pytest.raises(UnsafePickleError, match="rebuilt from its state, never called"):
        load_file(tmp_path / "call.pkl")


def eqgan_original(use_sel: bool, seed: int):
    """(the suite generator, the original-layout G): use_sel=False keeps the original's unused heatmap encoder."""
    torch.manual_seed(seed)
    G = randomise(EqGANGenerator(**EQ_KW, use_sel=use_sel), seed).eval()
    layout = original_layout(G, {**EQ_KW, "use_sel": use_sel})
    if not use_sel:  # genforce/eqgan-sa builds hm_conv* whatever use_sel says (training/networks.py l. 648-655)
        synthesis = layout.state["_modules"]["synthesis"]
        for level, k in (("b8", 1), ("b16", 2), ("b32", 4)):
            synthesis.state["_modules"][f"hm_conv0_{level}"] = original_layout(
                Conv2dLayer(k, 16, 3, activation="lrelu")
            )
            synthesis.state["_modules"][f"hm_conv1_{level}"] = original_layout(
                Conv2dLayer(16, 32, 3, activation="lrelu")
            )
    return G, layout


@pytest.mark.parametrize("use_sel", [True, False])
def test_eqgan_sa_snapshot_generates_with_given_heatmaps(tmp_path, monkeypatch, use_sel):
    G, layout = eqgan_original(use_sel, seed=4)
    _, D = tiny_networks()
    path = tmp_path / "eqgan-sa.pkl"
    write_original_pickle(path, {"G": layout, "D": original_layout(D, D.init_kwargs), "G_ema": layout}, monkeypatch)
    nets = load_networks(path)
    back = nets["G_ema"]
    assert isinstance(back, EqGANGenerator) and back.use_sel is use_sel and _equal(back, G)
    z = torch.randn(3, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        if use_sel:
            params = G.sample_heatmaps(3, generator=torch.Generator().manual_seed(1))
            maps = render_heatmaps(params, 16)  # heatmaps given as maps, as the original's G(z, c, heatmap=...)
            out = back(z, None, noise_mode="const", spatial=maps)
            torch.testing.assert_close(out, G(z, None, noise_mode="const", spatial=maps))
            moved = {**maps, "b8": maps["b8"].flip(-1)}
            assert (back(z, None, noise_mode="const", spatial=moved) - out).abs().max() > 1e-4
        else:
            torch.testing.assert_close(back(z, None, noise_mode="const"), G(z, None, noise_mode="const"))


def test_eqgan_sa_snapshot_with_a_missing_sel_tensor_is_named(tmp_path, monkeypatch):
    G, layout = eqgan_original(True, seed=5)
    sel = layout.state["_modules"]["synthesis"].state["_modules"]["b8"].state["_modules"]["conv1"]
    sel = sel.state["_modules"]["sel"]
    assert isinstance(sel, Persistent) and sel.class_name == "SEL"
    del sel.state["_modules"]["mu"]
    path = tmp_path / "broken.pkl"
    write_original_pickle(path, {"G_ema": layout}, monkeypatch)
    with pytest.raises(ValueError, match=r"lacks tensors \[.*synthesis\.b8\.conv1\.sel\.mu\.weight"):
        load_networks(path)
