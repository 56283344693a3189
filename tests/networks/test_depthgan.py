"""Tests of networks/depthgan.py (dual-path generator, switchable discriminator). Budget: under 20 s."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from networks.checkpoint import load_networks, save_networks
from networks.depthgan import DepthGANDiscriminator, DepthGANGenerator, depth_bins, yaw_features

TINY_G = dict(
    z_dim_depth=8,
    z_dim_rgb=8,
    w_dim=16,
    img_resolution=32,
    mapping_kwargs=dict(num_layers=2),
    synthesis_kwargs=dict(channel_base=256, channel_max=16),
)
TINY_D = dict(img_resolution=32, channel_base=256, channel_max=16, epilogue_kwargs=dict(mbstd_group_size=2))


def _nets(seed: int = 0):
    torch.manual_seed(seed)
    return DepthGANGenerator(**TINY_G), DepthGANDiscriminator(**TINY_D)


def test_depth_bins_as_specified():
    d = torch.tensor([-1.0, -0.85, -0.75, 0.0, 0.05, 0.95, 1.0, 1.18])
    assert depth_bins(d).tolist() == [0, 0, 1, 5, 5, 9, 9, 9]
    assert depth_bins(d, num_bins=4).tolist() == [0, 0, 0, 2, 2, 3, 3, 3]
    assert depth_bins(d).dtype == torch.int64


def test_yaw_features_order():
    expected = [f(k * 0.3) for k in range(1, 5) for f in (math.sin, math.cos)]
    torch.testing.assert_close(yaw_features(torch.tensor([0.3]))[0], torch.tensor(expected))


def test_generator_shapes_and_yaw_enters_only_the_first_three_conv_ws():
    G, _ = _nets()
    z = torch.randn(3, G.z_dim, generator=torch.Generator().manual_seed(0))
    yaw = torch.tensor([0.1, -0.2, 0.0])
    seen = {}
    hooks = [
        getattr(G.depth.synthesis, path.split(".")[0])
        .get_submodule(path.split(".", 1)[1] + ".affine")
        .register_forward_hook(lambda m, inp, out, p=path: seen.__setitem__(p, inp[0].detach()))
        for path in ("b4.conv1", "b4.torgb", "b8.conv0", "b8.conv1", "b8.torgb", "b16.conv0")
    ]
    rgb, depth = G(z, yaw=yaw, return_depth=True)
    for h in hooks:
        h.remove()
    assert rgb.shape == (3, 3, 32, 32) and depth.shape == (3, 1, 32, 32)
    ws = G.depth.mapping(z[:, :8], None)
    cam = G.depth.yaw_embed(yaw)
    for path, w_idx in (("b4.conv1", 0), ("b8.conv0", 1), ("b8.conv1", 2)):
        torch.testing.assert_close(seen[path], ws[:, w_idx] * cam)
    for path, w_idx in (("b4.torgb", 1), ("b8.torgb", 3), ("b16.conv0", 3)):
        torch.testing.assert_close(seen[path], ws[:, w_idx])
    rgb2, depth2 = G(z, yaw=yaw + 0.3, return_depth=True)
    assert not torch.allclose(depth, depth2) and not torch.allclose(rgb, rgb2)


def test_rgb_depends_on_the_depth_path_and_fusion_init():
    G, _ = _nets()
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(2, G.z_dim, generator=gen)
    z2 = z.clone()
    z2[:, :8] = torch.randn(2, 8, generator=gen)  # new depth code, same RGB code
    yaw = torch.zeros(2)
    assert not torch.allclose(G(z, yaw=yaw), G(z2, yaw=yaw))
    torch.manual_seed(3)
    faithful = DepthGANGenerator(**TINY_G)
    torch.manual_seed(3)
    standard = DepthGANGenerator(**TINY_G, fuse_init="standard")
    fuse_f, fuse_s = faithful.rgb.synthesis.b8.conv1.sel, standard.rgb.synthesis.b8.conv1.sel
    torch.testing.assert_close(fuse_f.gamma.weight * 10, fuse_s.gamma.weight)
    torch.testing.assert_close(fuse_f.beta.weight * 10, fuse_s.beta.weight)


def test_adversarial_step_reaches_both_generators():
    G, D = _nets()
    z = torch.randn(4, G.z_dim, generator=torch.Generator().manual_seed(2))
    rgb, depth = G(z, return_depth=True)
    logits, depth_logits = D(torch.cat([rgb, depth], dim=1))
    (F.softplus(-logits).mean() + 0 * depth_logits[:, 0, 0, 0].mean()).backward()
    for name, part in (("depth", G.depth), ("rgb", G.rgb)):
        grads = [p.grad for p in part.parameters()]
        assert all(g is not None for g in grads), name
        assert sum(float(g.abs().sum()) for g in grads) > 0, name
    assert float(G.depth.yaw_embed.fc0.weight.grad.abs().sum()) > 0
    # an RGB-only loss still trains the depth path through the (not detached) fused features
    G.zero_grad(set_to_none=True)
    G(z).square().mean().backward()
    assert float(G.depth.mapping.fc0.weight.grad.abs().sum()) > 0


@pytest.mark.parametrize("resolution", [32, 128])
def test_switchable_d_shapes(resolution):
    D = DepthGANDiscriminator(**{**TINY_D, "img_resolution": resolution})
    rgbd = torch.randn(2, 4, resolution, resolution, generator=torch.Generator().manual_seed(0))
    logits, depth_logits = D(rgbd)
    assert logits.shape == (2, 1) and depth_logits.shape == (2, 10, resolution, resolution)
    logits3, depth_logits3 = D(rgbd[:, :3])
    assert logits3.shape == (2, 1) and depth_logits3.shape == (2, 10, resolution, resolution)
    assert D.tap == min(64, resolution // 2)
    with pytest.raises(ValueError, match="4 \\(RGB-D\\) or 3"):
        D(rgbd[:, :2])


def test_rgb_only_mode_keeps_the_depth_stem_in_the_graph_with_zero_gradient():
    _, D = _nets()
    rgbd = torch.randn(2, 4, 32, 32, generator=torch.Generator().manual_seed(0))
    logits, depth_logits = D(rgbd[:, :3])
    (logits.sum() + F.cross_entropy(depth_logits, depth_bins(rgbd[:, 3]))).backward()
    assert D.fromdepth.weight.grad is not None and D.fromdepth.bias.grad is not None
    assert float(D.fromdepth.weight.grad.abs().sum()) == 0 and float(D.fromdepth.bias.grad.abs().sum()) == 0
    assert float(D.b32.fromrgb.weight.grad.abs().sum()) > 0
    # the RGB-only output does not depend on the depth stem; the RGB-D output does
    with torch.no_grad():
        before_rgb, before_rgbd = D(rgbd[:, :3])[0], D(rgbd)[0]
        D.fromdepth.weight.add_(1.0)
        D.fromdepth.bias.add_(0.5)
        assert torch.equal(D(rgbd[:, :3])[0], before_rgb)
        assert not torch.allclose(D(rgbd)[0], before_rgbd)


def test_r1_on_the_four_channel_input_double_backward():
    _, D = _nets()
    rgbd = torch.randn(2, 4, 32, 32, generator=torch.Generator().manual_seed(4)).requires_grad_(True)
    logits, _ = D(rgbd)
    (grad,) = torch.autograd.grad(logits.sum(), rgbd, create_graph=True)
    assert float(grad[:, 3].detach().abs().sum()) > 0  # the depth channel is part of the penalty
    grad.square().sum(dim=[1, 2, 3]).mean().backward()
    assert float(D.fromdepth.weight.grad.abs().sum()) > 0 and float(D.b32.fromrgb.weight.grad.abs().sum()) > 0


def test_save_and_load_networks_round_trip(tmp_path):
    G, D = _nets(5)
    G.eval()
    path = tmp_path / "depthgan.pt"
    save_networks(path, {"G": G, "D": D, "G_ema": G})
    nets = load_networks(path)
    z = torch.randn(2, G.z_dim, generator=torch.Generator().manual_seed(0))
    yaw = torch.tensor([0.05, -0.1])
    with torch.no_grad():
        torch.testing.assert_close(nets["G_ema"](z, yaw=yaw), G(z, yaw=yaw))
        x = torch.randn(2, 4, 32, 32)
        torch.testing.assert_close(nets["D"](x)[1], D(x)[1])
    assert nets["G"].init_kwargs == G.init_kwargs
