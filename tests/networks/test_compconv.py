"""Tests of networks/compconv.py, classification_nets.py and metrics/complexity.py (CompConv, arXiv 2106.10486).

Budget: under 20 s on 2 CPU cores.
"""

import math

import pytest
import torch
from torch import nn

from metrics.complexity import count_macs, count_params
from networks.classification_nets import VGG, ResNet, resnet50
from networks.compconv import (
    CompConv2d,
    _interleave_order,
    compconv_depth,
    compconv_prim_channels,
    convert_model,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: intra-op threads only add synchronisation (severe on a shared 2-core machine)."""
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


def spec_cost(c_in, c_out, k, d, tail="depthwise"):
    """Closed form (docs/compconv.md) per output pixel (MACs) = conv weights (params), tail trimmed to C_out."""
    cp = math.ceil(c_out / (2 * (2**d - 1)))
    n_tail = c_out - (2**d - 2) * cp - 2 ** (d - 1) * cp
    tail_cost = k * k * n_tail if tail == "depthwise" else 2 ** (d - 1) * cp * n_tail
    return k * k * (c_in * cp + sum((2**i * cp) ** 2 for i in range(1, d))) + tail_cost


@pytest.mark.parametrize(
    "c_in,c_out,k,d,stride",
    [
        (64, 64, 3, 1, 1),
        (64, 128, 3, 1, 2),
        (128, 128, 3, 2, 1),
        (256, 256, 3, 2, 2),
        (256, 512, 3, 3, 2),
        (512, 512, 3, 3, 1),
        (33, 47, 3, 2, 1),
        (40, 20, 5, 2, 2),
        (96, 96, 1, 3, 1),
        (24, 32, 3, 3, 3),
        (16, 16, 3, 0, 2),
    ],
)
@pytest.mark.parametrize("size", [9, 16])
def test_output_shape_matches_conv2d(c_in, c_out, k, d, stride, size):
    ref = nn.Conv2d(c_in, c_out, k, stride, k // 2)
    x = torch.randn(2, c_in, size, size)
    for s2 in ("avgpool", "sample"):
        m = CompConv2d(c_in, c_out, k, stride, depth=d, stride2_identity=s2)
        assert m(x).shape == ref(x).shape


@pytest.mark.parametrize(
    "c_in,c0,rule,expected",
    [(64, 128, "min", 1), (128, 128, "min", 1), (256, 128, "min", 2), (512, 128, "min", 3),
     (2048, 128, "min", 3), (300, 128, "min", 2), (64, 32, "min", 2), (64, 128, "max", 3),
     (2048, 128, "max", 5)],
)  # fmt: skip
def test_depth_rule(c_in, c0, rule, expected):
    assert compconv_depth(c_in, c0, rule, 3) == expected
    assert CompConv2d(c_in, c_in, 3, c0=c0, depth_rule=rule).depth == expected


def test_prim_channels_budget():
    """C_prim = ceil(C_out / (2(2^d-1))): the units cover C_out with less than one unit set to spare."""
    assert compconv_prim_channels(512, 3) == 37  # ceil(512 / 14)
    for c_out in range(14, 300, 7):
        for d in (1, 2, 3):
            cp = compconv_prim_channels(c_out, d)
            total = sum(2**i * cp for i in range(1, d + 1))
            assert c_out <= total < c_out + 2 * (2**d - 1)


@pytest.mark.parametrize(
    "c_in,c_out,k,d,tail",
    [(512, 512, 3, 3, "depthwise"), (512, 448, 3, 3, "depthwise"), (256, 256, 3, 2, "depthwise"),
     (128, 128, 3, 1, "depthwise"), (200, 150, 5, 3, "depthwise"), (256, 256, 3, 3, "pointwise"),
     (64, 96, 3, 2, "pointwise")],
)  # fmt: skip
@pytest.mark.parametrize("stride", [1, 2])
def test_macs_and_params_equal_closed_form(c_in, c_out, k, d, tail, stride):
    m = CompConv2d(c_in, c_out, k, stride, depth=d, tail_op=tail, inner_norm_act="none")
    x = torch.randn(1, c_in, 12, 12)
    out_hw = m(x).shape[-1] ** 2
    assert count_macs(m, x).total == out_hw * spec_cost(c_in, c_out, k, d, tail)
    assert count_params(m) == spec_cost(c_in, c_out, k, d, tail)
    # BN + ReLU after the inner convs adds 2 affine parameters per channel of v_0 .. v_{d-2}
    bn = CompConv2d(c_in, c_out, k, stride, depth=d, tail_op=tail, inner_norm_act="bn_relu")
    cp = m.prim_channels
    assert count_params(bn) == spec_cost(c_in, c_out, k, d, tail) + 2 * sum(2**j * cp for j in range(d - 1))


def test_spec_worked_example_512():
    """C_in = C_out = 512, d = 3: (512*37 + 74^2 + 148^2 + 148) k^2 untrimmed, ~17.7 % of vanilla."""
    assert spec_cost(448, 448, 1, 3) == 448 * 32 + 64**2 + 128**2 + 128  # divisible case: no trimming
    m = CompConv2d(512, 512, 3, depth=3, inner_norm_act="none")
    x = torch.randn(1, 512, 7, 7)
    ratio = count_macs(m, x).total / count_macs(nn.Conv2d(512, 512, 3, 1, 1, bias=False), x).total
    untrimmed = (512 * 37 + 74**2 + 148**2 + 148) / (512 * 512)
    assert ratio == pytest.approx(untrimmed, abs=1e-4)
    assert 0.17 < ratio < 0.18


def test_depth_zero_is_plain_conv_and_depth_one_halves_cost():
    x = torch.randn(1, 64, 8, 8)
    vanilla = count_macs(nn.Conv2d(64, 64, 3, 1, 1), x).total
    assert count_macs(CompConv2d(64, 64, 3, depth=0), x).total == vanilla
    d1 = count_macs(CompConv2d(64, 64, 3, depth=1), x).total
    assert d1 == 64 * 9 * (64 * 32 + 32)  # u0 (C_prim = 32) + depthwise tail
    assert 0.5 < d1 / vanilla < 0.51


def test_identity_channels_reach_the_output_unchanged():
    """Core unit X = X_A (+) W X_B, X_A copied from input channels (stride 1, no bias)."""
    torch.manual_seed(0)
    c_in, d = 96, 3
    for slices in ("first", "strided"):
        m = CompConv2d(c_in, 128, 3, depth=d, identity_slices=slices).eval()
        x = torch.randn(1, c_in, 6, 6)
        y = m(x)
        idx = m.identity_index
        assert idx.numel() == (2 ** (d - 1) - 1) * m.prim_channels and len(set(idx.tolist())) == idx.numel()
        for c in idx.tolist():
            assert (y[0] - x[0, c]).abs().flatten(1).amax(1).min() == 0, f"input channel {c} not copied"


def test_stride2_identity_options():
    m = CompConv2d(64, 64, 3, 2, depth=2, identity_slices="first")
    x = torch.randn(1, 64, 7, 7)
    ident = m._identity(x)
    assert ident.shape[-2:] == (4, 4)
    assert torch.allclose(ident[:, :, 0, 0], x[:, : ident.shape[1], :2, :2].mean((-1, -2)))
    assert torch.allclose(ident[:, :, 3, 3], x[:, : ident.shape[1], 6, 6])  # ceil_mode: partial last window
    m.stride2_identity = "sample"
    assert torch.equal(m._identity(x), x[:, : ident.shape[1], ::2, ::2])


def test_channel_shuffle_is_a_permutation_of_the_concatenation():
    assert _interleave_order([3, 3]) == [0, 3, 1, 4, 2, 5]  # ShuffleNet: reshape(2, 3).T
    assert _interleave_order([2, 1, 3]) == [0, 2, 3, 1, 4, 5]
    torch.manual_seed(0)
    a = CompConv2d(128, 120, 3, depth=3, shuffle="channel").eval()
    b = CompConv2d(128, 120, 3, depth=3, shuffle="none").eval()
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 128, 5, 5)
    assert sorted(a.order.tolist()) == list(range(120))
    assert torch.equal(a(x), b(x)[:, a.order])


def test_gradient_reaches_every_inner_conv():
    m = CompConv2d(256, 256, 3, 2, depth=3, bias=True)
    m(torch.randn(2, 256, 8, 8)).square().mean().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_invalid_configurations_raise():
    with pytest.raises(ValueError, match="identity parts need"):
        CompConv2d(3, 64, 3, depth=3)  # the RGB stem cannot give 3 * C_prim identity channels
    with pytest.raises(ValueError, match="too small for this depth"):
        CompConv2d(64, 7, 3, depth=2)
    with pytest.raises(ValueError, match="tail_op"):
        CompConv2d(64, 64, 3, tail_op="ghost")
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        CompConv2d(64, 64, 2)


def test_mac_counter_matches_known_resnet50():
    """Anchors: torchvision's ResNet-50 has 25,557,032 parameters and 4.09 GMACs at 224 x 224."""
    net = resnet50()
    assert count_params(net) == 25_557_032
    report = count_macs(net, torch.zeros(1, 3, 224, 224))
    assert report.total == 4_089_184_256
    assert report.per_layer["fc"] == 2048 * 1000
    assert report.per_layer["stem"] == 112 * 112 * 64 * 3 * 49


def _kxk_convs(model):
    return {n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.kernel_size[0] > 1}


@pytest.mark.parametrize(
    "build,size",
    [
        (lambda: ResNet(18, 10, width=16, small_input=True), 32),
        (lambda: ResNet(50, 10, width=16), 64),
        (lambda: VGG(16, 10, width=32, fc_dims=(), pool_size=1), 32),
    ],
)
def test_convert_model_keeps_shapes_stem_and_1x1(build, size):
    torch.manual_seed(0)
    net = build()
    x = torch.randn(2, 3, size, size)
    kxk = _kxk_convs(net) - {"stem"}
    one_by_one = {n: m for n, m in net.named_modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)}
    vanilla_macs = count_macs(net, x).total
    convert_model(net, c0=32)
    assert net(x).shape == (2, 10)
    assert set(net.compconv_replaced) == kxk
    assert isinstance(net.stem, nn.Conv2d)
    assert all(isinstance(net.get_submodule(n), CompConv2d) for n in kxk)
    assert all(net.get_submodule(n) is m for n, m in one_by_one.items())
    # model MACs drop by exactly the per-layer savings of the closed form
    report = count_macs(net, x)
    saved = 0
    for n in kxk:
        cc = net.get_submodule(n)
        hw = report.per_layer[f"{n}.primary"] // (cc.prim_channels * cc.in_channels * 9)
        vanilla_layer = hw * cc.in_channels * cc.out_channels * 9
        assert sum(v for k, v in report.per_layer.items() if k.startswith(n + ".")) == hw * spec_cost(
            cc.in_channels, cc.out_channels, 3, cc.depth
        )
        saved += vanilla_layer - hw * spec_cost(cc.in_channels, cc.out_channels, 3, cc.depth)
    assert report.total == vanilla_macs - saved


def test_convert_model_resnet50_compconv128_depths():
    """With C0 = 128 the 3x3 convs of ResNet-50 stages 1..4 (64/128/256/512) get d = 1/1/2/3."""
    net = convert_model(resnet50(), c0=128)
    depths = {n.split(".")[0]: net.get_submodule(n).depth for n in net.compconv_replaced}
    assert depths == {"layer1": 1, "layer2": 1, "layer3": 2, "layer4": 3}
    assert len(net.compconv_replaced) == 16
    with pytest.raises(ValueError, match="no k x k convolution"):
        convert_model(nn.Sequential(nn.Conv2d(3, 8, 1)))


def test_convert_model_replace_1x1_swaps_every_conv_but_the_stem():
    """``replace_1x1``: the paper's plug-in replaces "the vanilla convolution layers"; with it every conv except the
    RGB stem (1 x 1 bottleneck and shortcut convs included) is a CompConv2d, shapes and gradients unchanged."""
    torch.manual_seed(0)
    net = ResNet(50, 10, width=16)
    x = torch.randn(2, 3, 64, 64)
    convs = {n for n, m in net.named_modules() if isinstance(m, nn.Conv2d)} - {"stem"}
    kxk_only = count_macs(convert_model(ResNet(50, 10, width=16), c0=32), x[:1]).total
    convert_model(net, c0=32, replace_1x1=True)
    assert set(net.compconv_replaced) == convs and isinstance(net.stem, nn.Conv2d)
    assert any(net.get_submodule(n).kernel_size == 1 and net.get_submodule(n).stride == 2 for n in convs)
    out = net(x)
    assert out.shape == (2, 10)
    assert count_macs(net, x[:1]).total < 0.75 * kxk_only
    out.square().mean().backward()
    assert all(p.grad is not None for p in net.parameters())


@pytest.mark.parametrize(
    "rule,replace_1x1,macs,params",
    [("min", False, 2_905_782_806, 16_847_276), ("min", True, 1_487_008_386, 8_626_004)],
)
def test_resnet50_compconv128_whole_network_anchors(rule, replace_1x1, macs, params):
    """The whole-network numbers of docs/compconv.md: ResNet-50 @224, C0 = 128 (vanilla 4.089 G MACs, 25.56 M)."""
    net = convert_model(resnet50(), c0=128, depth_rule=rule, replace_1x1=replace_1x1)
    assert count_macs(net, torch.zeros(1, 3, 224, 224)).total == macs
    assert count_params(net) == params
