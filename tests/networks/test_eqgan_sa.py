"""EqGAN-SA networks: heatmap sampler, heatmap encoder, SEL (genforce/eqgan-sa training/networks.py; budget ~15 s)."""

from __future__ import annotations

import math

import pytest
import torch

from networks.checkpoint import load_networks, save_networks
from networks.eqgan_sa import (
    EqGANGenerator,
    HeatmapSampler,
    SpatialEncodingLayer,
    render_heatmaps,
)
from networks.stylegan2 import Generator

KW = dict(z_dim=16, c_dim=0, w_dim=16, img_resolution=16, img_channels=3, mapping_kwargs={"num_layers": 2})
SYN = {"channel_base": 128, "channel_max": 16}


def tiny_eqgan(use_sel=True, **sel):
    return EqGANGenerator(**KW, synthesis_kwargs=SYN, use_sel=use_sel, sel_kwargs={"sel_hidden": 8, **sel})


def test_heatmap_sampler_statistics_match_spec():
    n = 20000
    p = HeatmapSampler().sample(n, generator=torch.Generator().manual_seed(0))
    c = p.centres["b8"][:, 0]  # [N, 2]
    assert p.centres["b8"].shape == (n, 1, 2) and p.centres["b16"].shape == (n, 2, 2)
    assert p.centres["b32"].shape == (n, 4, 2)
    # L1 centre: N(0, 0.33^2) clamped to [-0.75, 0.75]: 2*(1 - Phi(0.75/0.33)) = 2.3 % sit on the clamp.
    assert c.abs().max() <= 0.75
    assert c.mean().abs() < 0.01
    at_clamp = (c.abs() == 0.75).float().mean()
    expected = math.erfc(0.75 / 0.33 / math.sqrt(2))
    assert abs(float(at_clamp) - expected) < 0.004
    assert 0.31 < float(c.std()) < 0.33
    # sigma1: one scalar per call in U(0.5, 1.0).
    s1 = p.sigmas["b8"]
    assert s1.shape == (n, 1) and torch.all(s1 == s1[0, 0]) and 0.5 <= float(s1[0, 0]) <= 1.0
    # L2 / L3 centres: c + U(-0.4, 0.4)^2 / U(-0.8, 0.8)^2 (variance a^2 / 3).
    for level, a in (("b16", 0.4), ("b32", 0.8)):
        off = p.centres[level] - p.centres["b8"]
        assert off.abs().max() <= a and off.abs().max() > 0.99 * a
        assert abs(float(off.var()) - a * a / 3) < 0.01 * a * a
    # sigma2 = (U + 0.1) / 1.4, sigma3 = (U + 0.1) / 2, per sample and centre.
    for level, div in (("b16", 1.4), ("b32", 2.0)):
        s = p.sigmas[level]
        assert s.min() >= 0.1 / div and s.max() <= 1.1 / div
        assert abs(float(s.mean()) - 0.6 / div) < 0.01
        assert s.std(dim=0).min() > 0.1  # varies per sample


def test_render_heatmaps_matches_formula():
    p = HeatmapSampler().sample(3, generator=torch.Generator().manual_seed(1))
    maps = render_heatmaps(p, 9)
    assert maps["b8"].shape == (3, 1, 9, 9) and maps["b16"].shape == (3, 2, 9, 9) and maps["b32"].shape == (3, 4, 9, 9)
    # pixel (row 2, col 7) sits at x = -1 + 7 * 0.25, y = -1 + 2 * 0.25.
    x, y = -1 + 7 * 0.25, -1 + 2 * 0.25
    cx, cy = p.centres["b32"][1, 3].tolist()
    s = float(p.sigmas["b32"][1, 3])
    expected = math.exp(-((x - cx) ** 2 + (y - cy) ** 2) / s) + 0.01
    assert float(maps["b32"][1, 3, 2, 7]) == pytest.approx(expected, rel=1e-5)
    for m in maps.values():
        assert m.min() >= 0.01 and m.max() <= 1.01


def test_sel_off_is_the_plain_stylegan2_generator():
    torch.manual_seed(0)
    g = tiny_eqgan(use_sel=False)
    base = Generator(**KW, synthesis_kwargs=SYN)
    assert [(k, v.shape) for k, v in g.state_dict().items()] == [(k, v.shape) for k, v in base.state_dict().items()]
    base.load_state_dict(g.state_dict())
    z = torch.randn(2, 16)
    torch.testing.assert_close(g(z, None, noise_mode="const"), base(z, None, noise_mode="const"))


def test_sel_keys_and_zero_output_conv_leave_generator_unchanged():
    torch.manual_seed(0)
    g = tiny_eqgan()
    keys = set(g.state_dict())
    for k in (
        "synthesis.b4.conv1.sel.shared.0.weight",
        "synthesis.b8.conv0.sel.sigma.bias",
        "synthesis.b16.torgb.sel.mu.weight",
        "synthesis.b16.conv1.sel.output.1.weight",
        "synthesis.hm_conv0_b8.weight",
        "synthesis.hm_conv1_b32.bias",
    ):
        assert k in keys, k
    sels = [m for m in g.modules() if isinstance(m, SpatialEncodingLayer)]
    assert len(sels) == 3 * 3 - 1  # b4: conv1 + torgb; b8, b16: conv0 + conv1 + torgb
    base = Generator(**KW, synthesis_kwargs=SYN)
    missing, unexpected = base.load_state_dict(g.state_dict(), strict=False)
    assert not missing and unexpected
    z = torch.randn(2, 16)
    ref = base(z, None, noise_mode="const")
    assert (g(z, None, noise_mode="const") - ref).abs().max() > 1e-3  # random SEL output convs change G
    with torch.no_grad():
        for m in sels:
            m.output[1].weight.zero_()
            m.output[1].bias.zero_()
    torch.testing.assert_close(g(z, None, noise_mode="const"), ref)


def _conv3x3(layer, x):
    """A StyleGAN ``Conv2dLayer`` without activation, written out: equalised-lr weight, bias, padding 1."""
    return torch.nn.functional.conv2d(x, layer.weight * layer.weight_gain, layer.bias, padding=1)


def test_sel_layer_formula():
    """The first conv has built-in lrelu, gain sqrt(2) (genforce/eqgan-sa training/networks.py, SEL.shared)."""
    torch.manual_seed(0)
    sel = SpatialEncodingLayer(channels=4, map_dim=32, resolution=8, hidden=8, residual_scale=0.1)
    with torch.no_grad():
        for p in sel.parameters():
            if p.ndim == 1:
                p.normal_()  # non-zero biases, so the bias and gain placement is checked too
    x = torch.randn(2, 4, 8, 8)
    enc = torch.randn(2, 32, 16, 16)
    h = torch.nn.functional.interpolate(enc, size=(8, 8), mode="bilinear", align_corners=True)
    f = torch.nn.functional.leaky_relu(_conv3x3(sel.shared[0], h), 0.2) * math.sqrt(2)
    mu, sd = x.mean((2, 3), keepdim=True), x.var((2, 3), unbiased=False, keepdim=True).add(1e-5).sqrt()
    y = (x - mu) / sd * (1 + _conv3x3(sel.sigma, f)) + _conv3x3(sel.mu, f)
    expected = x + 0.1 * _conv3x3(sel.output[1], torch.nn.functional.leaky_relu(y, 0.2))
    torch.testing.assert_close(sel(x, {8: enc}), expected, rtol=1e-4, atol=1e-5)
    assert len(sel.shared) == 1 and sel.shared[0].activation == "lrelu"  # state-dict key shared.0.* as the original
    with pytest.raises(ValueError, match="encoded heatmaps"):
        sel(x, None)


def test_sel_computes_in_fp32_for_fp16_blocks():
    """An fp16 block input gives the fp32 computation on the same values, rounded once at the end (the original's
    SynthesisLayer: ``self.sel(x, heatmap).to(x.dtype)`` with an fp32 heatmap)."""
    torch.manual_seed(0)
    sel = SpatialEncodingLayer(channels=4, map_dim=32, resolution=8, hidden=8, residual_scale=0.1)
    x16 = torch.randn(2, 4, 8, 8).to(torch.float16)
    enc = {8: torch.randn(2, 32, 8, 8)}
    out = sel(x16, enc)
    assert out.dtype == torch.float16
    assert torch.equal(out, sel(x16.float(), enc).to(torch.float16))


def test_heatmaps_drive_the_image_and_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    g = tiny_eqgan(encoder_resolution=8).eval()
    z = torch.randn(2, 16)
    params = g.sample_heatmaps(2, generator=torch.Generator().manual_seed(3))
    a = g(z, None, noise_mode="const", spatial=params)
    torch.testing.assert_close(g(z, None, noise_mode="const", spatial=params), a)
    moved = params.clone()
    moved.centres["b8"] += 0.5
    assert (g(z, None, noise_mode="const", spatial=moved) - a).abs().max() > 1e-4
    save_networks(tmp_path / "g.pt", {"G": g, "D": None, "G_ema": g})
    back = load_networks(tmp_path / "g.pt")["G_ema"].eval()
    assert isinstance(back, EqGANGenerator) and back.synthesis.encoder_resolution == 8
    torch.testing.assert_close(back(z, None, noise_mode="const", spatial=params), a)
    with pytest.raises(ValueError, match="encoder_resolution"):
        tiny_eqgan(encoder_resolution=32)


def test_move_centres_script_renders_grid_from_checkpoint(tmp_path):
    import numpy as np
    from PIL import Image

    from experiments.eqgan_move_centres import main, move_centres

    torch.manual_seed(0)
    g = tiny_eqgan().eval()
    save_networks(tmp_path / "net.pt", {"G": g, "D": None, "G_ema": g})
    out = main(
        ["--network", str(tmp_path / "net.pt"), "--seeds", "0,1", "--steps", "3", "--out", str(tmp_path / "m.png")]
    )
    arr = np.asarray(Image.open(out)).astype(np.int16)
    assert arr.shape == (2 * 16, 3 * 16, 3)
    # column 0 = the unmoved heatmaps: equals a direct G call with the same z and heatmaps
    z = torch.randn([16], generator=torch.Generator().manual_seed(1))[None]
    params = g.sample_heatmaps(2, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = g(z, None, noise_mode="const", spatial=params.narrow(1, 1))
    ref = ((ref[0] * 127.5 + 127.5).round().clamp(0, 255)).permute(1, 2, 0).to(torch.int16).numpy()
    assert np.abs(arr[16:, :16] - ref).max() <= 1
    assert np.abs(arr[:, 32:] - arr[:, :16]).mean() > 0.5  # the move changes the image
    moved = move_centres(params, "b16", 1, (0.1, -0.2))
    torch.testing.assert_close(moved.centres["b16"][:, 1], params.centres["b16"][:, 1] + torch.tensor([0.1, -0.2]))
    torch.testing.assert_close(moved.centres["b8"], params.centres["b8"])
    with pytest.raises(ValueError, match="index"):
        move_centres(params, "b16", 2, (0.1, 0.0))
