"""Tests of networks/augment.py: the ADA pipe and the adaptive-p rule (as NVlabs stylegan2-ada-pytorch augment.py).

Budget: under 45 s on 2 CPU cores.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import networks.augment as augment
from networks.augment import AUGPIPE_PRESETS, AugmentPipe, filter_bank
from ops import _backend

GEOM_OPS = ["xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac"]
COLOR_OPS = ["brightness", "contrast", "lumaflip", "hue", "saturation"]
OPS = GEOM_OPS + COLOR_OPS + ["imgfilter", "noise", "cutout"]


def _smooth_images(n, c, size, seed=0):
    """Low-frequency random images (sums of sinusoids of period >= size)."""
    g = torch.Generator().manual_seed(seed)
    y, x = torch.meshgrid(torch.arange(size) / size, torch.arange(size) / size, indexing="ij")
    a, ph = torch.randn(n, c, 4, generator=g), torch.rand(n, c, 4, generator=g) * 2 * math.pi
    img = sum(
        a[..., k, None, None] * torch.sin(2 * math.pi * fx + ph[..., k, None, None])
        for k, fx in enumerate((x, y, x + y, x - y))
    )
    return img / 2


def _identity_rate(params, key):
    """Fraction of samples whose parameters of group ``key`` are not the identity."""
    v = params[key]
    if key == "geom":
        d = (v - torch.eye(3)).abs().flatten(1).amax(1)
    elif key == "color":
        d = (v - torch.eye(4)).abs().flatten(1).amax(1)
    elif key == "filter":
        d = (v - 1).abs().amax(1)
    elif key == "noise":
        d = v.abs().flatten(1).amax(1)
    else:  # cutout mask: 1 = kept
        d = 1 - v.flatten(1).amin(1)
    return (d > 1e-6).float().mean().item()


# ------------------------------------------------------------------------------------------------ presets


def test_presets_are_cumulative_unions():
    assert set(AUGPIPE_PRESETS) == {"blit", "geom", "color", "filter", "noise", "cutout"} | {
        "bg",
        "bgc",
        "bgcf",
        "bgcfn",
        "bgcfnc",
    }
    assert set(AUGPIPE_PRESETS["bg"]) == set(AUGPIPE_PRESETS["blit"]) | set(AUGPIPE_PRESETS["geom"])
    assert set(AUGPIPE_PRESETS["bgc"]) == set(AUGPIPE_PRESETS["bg"]) | set(AUGPIPE_PRESETS["color"])
    assert set(AUGPIPE_PRESETS["bgcfnc"]) == set(OPS)
    pipe = AugmentPipe.from_preset("bgc", hue=0.5, p=0.3)
    assert (pipe.xflip, pipe.hue, pipe.imgfilter) == (1.0, 0.5, 0.0)
    assert pipe.p.item() == pytest.approx(0.3)
    assert list(pipe.parameters()) == []
    assert set(pipe.state_dict()) == {"p", "Hz_geom", "Hz_fbank"}
    with pytest.raises(ValueError, match="unknown preset 'bgx'"):
        AugmentPipe.from_preset("bgx")
    with pytest.raises(ValueError, match="xflip"):
        AugmentPipe(xflip=-1)


def test_hydra_instantiate_from_preset():
    from hydra.utils import instantiate

    pipe = instantiate({"_target_": "networks.augment.AugmentPipe.from_preset", "name": "bgcf", "p": 0.25})
    assert isinstance(pipe, AugmentPipe) and pipe.imgfilter == 1 and pipe.p.item() == 0.25


def test_filter_bank_partitions_unity():
    bank = filter_bank()
    assert bank.shape == (4, 43)
    impulse = torch.zeros(43, dtype=torch.float64)
    impulse[21] = 1
    torch.testing.assert_close(torch.as_tensor(bank.sum(0)), impulse, atol=1e-10, rtol=0)
    torch.testing.assert_close(torch.as_tensor(bank), torch.as_tensor(bank[:, ::-1].copy()))  # zero-phase
    assert bank[0].sum() == pytest.approx(1) and abs(bank[1:].sum(1)).max() < 1e-12


# ------------------------------------------------------------------------------------------------ p = 0


@pytest.mark.parametrize(
    "preset,shape",
    [("bgc", (3, 3, 16, 16)), ("bgc", (2, 3, 12, 20)), ("bg", (2, 1, 16, 16)), ("bgcfnc", (2, 3, 32, 32))],
)
def test_p0_is_identity_with_geometry_executed(preset, shape, monkeypatch):
    calls = []
    original = augment.grid_sample

    def counting_grid_sample(input, grid):
        calls.append(grid.shape)
        return original(input, grid)

    monkeypatch.setattr(augment, "grid_sample", counting_grid_sample)
    x = torch.randn(shape)
    y = AugmentPipe.from_preset(preset)(x)
    assert len(calls) == 1  # pad, sym6 up, grid_sample, sym6 down ran
    torch.testing.assert_close(y, x, atol=2e-5, rtol=0)


# ------------------------------------------------------------------------------------------ firing rates


@pytest.mark.parametrize("op", OPS)
def test_each_op_fires_at_multiplier_times_p(op):
    mult, p, n = 0.5, 0.8, 20000
    size = 1024 if op == "xint" else 8  # rounding t * size to 0 pixels is negligible at 1024
    pipe = AugmentPipe(**{op: mult}, p=p)
    params = pipe.sample_params(n, 3, size, size, generator=torch.Generator().manual_seed(1))
    key = {"imgfilter": "filter", "noise": "noise", "cutout": "cutout"}.get(op)
    key = key or ("geom" if op in GEOM_OPS else "color")
    assert set(params) == {key}
    q = mult * p
    # xflip/lumaflip: i in {0, 1}; rotate90: k in {0..3}; imgfilter: 4 bands each firing with q.
    expected = {"xflip": q / 2, "lumaflip": q / 2, "rotate90": 0.75 * q, "imgfilter": 1 - (1 - q) ** 4}.get(op, q)
    assert _identity_rate(params, key) == pytest.approx(expected, abs=0.015)


def test_op_strength_distributions():
    n, g = 20000, torch.Generator().manual_seed(2)
    geom = AugmentPipe(scale=1, p=1).sample_params(n, 3, 8, 8, generator=g)["geom"]
    assert torch.log2(1 / geom[:, 0, 0]).std().item() == pytest.approx(0.2, rel=0.05)
    geom = AugmentPipe(xfrac=1, p=1).sample_params(n, 3, 8, 8, generator=g)["geom"]
    assert (geom[:, :2, 2] / 8).std().item() == pytest.approx(0.125, rel=0.05)
    geom = AugmentPipe(xint=1, p=1).sample_params(n, 3, 16, 16, generator=g)["geom"]
    t = geom[:, :2, 2]
    assert torch.equal(t, t.round()) and t.abs().max() == 2  # 0.125 * 16 px, whole pixels
    color = AugmentPipe(brightness=1, p=1).sample_params(n, 3, 8, 8, generator=g)["color"]
    assert color[:, 0, 3].std().item() == pytest.approx(0.2, rel=0.05)
    color = AugmentPipe(contrast=1, p=1).sample_params(n, 3, 8, 8, generator=g)["color"]
    assert torch.log2(color[:, 0, 0]).std().item() == pytest.approx(0.5, rel=0.05)
    color = AugmentPipe(hue=1, p=1).sample_params(n, 3, 8, 8, generator=g)["color"][:, :3, :3]
    angle = torch.acos(((color.diagonal(dim1=1, dim2=2).sum(1) - 1) / 2).clamp(-1, 1))
    assert angle.mean().item() == pytest.approx(math.pi / 2, rel=0.05)  # |theta| ~ U(0, pi)
    noise = AugmentPipe(noise=1, p=1).sample_params(n, 1, 4, 4, generator=g)["noise"]
    assert noise.std(dim=(1, 2, 3)).mean().item() == pytest.approx(0.1 * math.sqrt(2 / math.pi), rel=0.1)


def test_filter_gains_keep_expected_power():
    pipe = AugmentPipe(imgfilter=1, imgfilter_bands=[0, 1, 0, 0], p=1)
    gains = pipe.sample_params(1000, 3, 8, 8, generator=torch.Generator().manual_seed(3))["filter"]
    power = torch.tensor(augment.FILTER_BAND_POWER)
    torch.testing.assert_close((power * gains.square()).sum(1), torch.ones(1000))
    assert (gains[:, 1] != gains[:, 0]).float().mean() > 0.99


def test_rotation_fires_pre_or_post_with_total_probability_p():
    pipe = AugmentPipe(rotate=1, p=0.5)
    params = pipe.sample_params(20000, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    assert _identity_rate(params, "geom") == pytest.approx(0.5, abs=0.015)  # not 1 - 0.5**2


# ------------------------------------------------------------------------------------- hand computations


def test_xflip_matrices_exact_and_images_flipped():
    g = torch.Generator().manual_seed(5)
    G = AugmentPipe(xflip=1, p=1).sample_params(400, 3, 16, 16, generator=g)["geom"]
    flip = torch.diag(torch.tensor([-1.0, 1.0, 1.0]))
    is_flip = (G == flip).all(dim=(1, 2))
    assert ((G == torch.eye(3)).all(dim=(1, 2)) | is_flip).all()
    assert 0.4 < is_flip.float().mean() < 0.6

    x = _smooth_images(64, 3, 32)
    y = AugmentPipe(xflip=1, p=1)(x, generator=torch.Generator().manual_seed(6))
    d_id = (y - x).abs().flatten(1).amax(1)
    d_flip = (y - x.flip(3)).abs().flatten(1).amax(1)
    # sym6 is not symmetric: a mirror through the resampler is exact up to a sub-pixel offset (as upstream).
    assert (torch.minimum(d_id, d_flip) < 0.1).all()
    assert 16 < (d_flip < d_id).sum() < 48


@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_rotate90_matches_torch_rot90(k):
    x = _smooth_images(2, 3, 32, seed=k)
    G = augment._rotate2d(torch.full([2], math.pi / 2 * k))
    y = AugmentPipe(rotate90=1).apply(x, {"geom": G})
    errors = [(y - torch.rot90(x, j, dims=(2, 3))).abs().max().item() for j in range(4)]
    # exact for k = 0; otherwise up to the sub-pixel offset of the asymmetric sym6 filter (as upstream)
    assert errors[k] < (1e-5 if k == 0 else 0.1) and sorted(errors)[1] > 0.5
    G = AugmentPipe(rotate90=1, p=1).sample_params(400, 3, 16, 16, generator=torch.Generator().manual_seed(7))["geom"]
    allowed = torch.stack([augment._rotate2d(torch.tensor([math.pi / 2 * j]))[0] for j in range(4)])
    match = ((G[:, None] - allowed[None]).abs().amax(dim=(2, 3)) < 1e-6).float()
    assert (match.sum(1) == 1).all() and (match.mean(0) > 0.15).all()


def test_integer_translation_exact_with_reflect_padding():
    x = torch.randn(2, 3, 16, 12)
    G = augment._affine2d(1, 1, torch.tensor([-2.0, 3.0]), torch.tensor([1.0, -2.0]), 2, "cpu")
    y = AugmentPipe(xint=1).apply(x, {"geom": G})
    xp = F.pad(x, [6, 6, 6, 6], mode="reflect")
    # output(x, y) = input(x + tx_inv, y + ty_inv): sample 0 reads (x - 2, y + 1), sample 1 (x + 3, y - 2)
    torch.testing.assert_close(y[0], xp[0, :, 7:23, 4:16], atol=2e-5, rtol=0)
    torch.testing.assert_close(y[1], xp[1, :, 4:20, 9:21], atol=2e-5, rtol=0)


def test_brightness_adds_and_contrast_scales():
    x = torch.randn(500, 3, 4, 4)
    g = torch.Generator().manual_seed(8)
    y = AugmentPipe(brightness=1, p=1)(x, generator=g)
    d = (y - x).flatten(1)
    torch.testing.assert_close(d, d[:, :1].expand_as(d), atol=1e-6, rtol=0)  # one offset per sample
    assert d[:, 0].std().item() == pytest.approx(0.2, rel=0.15)
    pipe = AugmentPipe(contrast=1, p=1)
    params = pipe.sample_params(500, 3, 4, 4, generator=g)
    c = params["color"][:, 0, 0]
    torch.testing.assert_close(pipe.apply(x, params), x * c[:, None, None, None], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(params["color"][:, :3, :3], c[:, None, None] * torch.eye(3), atol=0, rtol=0)
    gray = torch.randn(8, 1, 4, 4)
    y = AugmentPipe(brightness=1, p=1)(gray, generator=g)
    d = (y - gray).flatten(1)
    torch.testing.assert_close(d, d[:, :1].expand_as(d), atol=1e-6, rtol=0)


def test_lumaflip_is_an_involution_flipping_luma():
    pipe = AugmentPipe(lumaflip=1, p=1)
    params = pipe.sample_params(64, 3, 4, 4, generator=torch.Generator().manual_seed(9))
    x = torch.randn(64, 3, 4, 4)
    torch.testing.assert_close(pipe.apply(pipe.apply(x, params), params), x, atol=1e-5, rtol=0)
    flipped = (params["color"] - torch.eye(4)).abs().flatten(1).amax(1) > 0
    assert 16 < flipped.sum() < 48
    y = pipe.apply(x, params)
    luma_in, luma_out = x.mean(1), y.mean(1)
    torch.testing.assert_close(luma_out[flipped], -luma_in[flipped], atol=1e-5, rtol=0)
    torch.testing.assert_close(y - luma_out[:, None], x - luma_in[:, None], atol=1e-5, rtol=0)  # chroma kept


def test_hue_rotates_about_luma_axis():
    pipe = AugmentPipe(hue=1, p=1)
    C = pipe.sample_params(256, 3, 4, 4, generator=torch.Generator().manual_seed(10))["color"]
    R = C[:, :3, :3]
    torch.testing.assert_close(R @ R.transpose(1, 2), torch.eye(3).expand(256, 3, 3), atol=1e-5, rtol=0)
    torch.testing.assert_close(R.sum(2), torch.ones(256, 3), atol=1e-5, rtol=0)  # grey stays grey
    assert (torch.linalg.det(R) > 0).all() and (C[:, :3, 3] == 0).all()
    # 120 degrees about (1, 1, 1) cycles R -> G -> B.
    theta = torch.tensor([2 * math.pi / 3])
    R120 = torch.eye(4)[None].clone()
    R120[:, :3, :3] = augment.axis_angle_to_rotation_matrix(torch.ones(1, 3) / math.sqrt(3) * theta)
    x = torch.randn(1, 3, 4, 4)
    torch.testing.assert_close(pipe.apply(x, {"color": R120}), x.roll(1, dims=1), atol=1e-5, rtol=0)


def test_saturation():
    x = torch.randn(16, 3, 4, 4)
    y = AugmentPipe(saturation=1, saturation_std=0, p=1)(x)  # s = 2^0 = 1: identity
    torch.testing.assert_close(y, x, atol=1e-6, rtol=0)
    v = torch.tensor([1.0, 1.0, 1.0, 0.0]) / math.sqrt(3)
    gray = torch.outer(v, v)
    gray[3, 3] = 1  # s = 0: project onto the luma axis
    y = AugmentPipe(saturation=1).apply(x, {"color": gray.expand(16, 4, 4)})
    torch.testing.assert_close(y, x.mean(1, keepdim=True).expand_as(x), atol=1e-6, rtol=0)
    gray_images = torch.randn(4, 1, 4, 4)  # hue and saturation skip 1-channel images
    assert torch.equal(AugmentPipe(saturation=1, hue=1, p=1)(gray_images), gray_images)


def test_imgfilter_bands():
    pipe = AugmentPipe(imgfilter=1)
    x = torch.randn(2, 3, 24, 24)
    # separable: the 1-D filter runs along x and y, so equal band gains g scale the image by g**2
    torch.testing.assert_close(pipe.apply(x, {"filter": torch.full([2, 4], 2.0)}), 4 * x, atol=1e-5, rtol=0)
    i = torch.arange(24)
    checker = ((-1.0) ** (i[:, None] + i[None, :])).expand(1, 3, 24, 24)
    lowpass = torch.tensor([[1.0, 0, 0, 0]])
    torch.testing.assert_close(pipe.apply(checker, {"filter": lowpass}), torch.zeros_like(checker), atol=1e-5, rtol=0)
    torch.testing.assert_close(pipe.apply(torch.ones(1, 3, 24, 24), {"filter": lowpass}), torch.ones(1, 3, 24, 24))
    with pytest.raises(ValueError, match="larger than 21 pixels"):
        pipe.apply(torch.ones(1, 3, 16, 16), {"filter": lowpass})


def test_noise_and_cutout():
    x = torch.randn(64, 3, 16, 16)
    pipe = AugmentPipe(noise=1, cutout=1, p=1)
    params = pipe.sample_params(64, 3, 16, 16, generator=torch.Generator().manual_seed(11))
    y = pipe.apply(x, params)
    torch.testing.assert_close(y, (x + params["noise"]) * params["cutout"])
    zeros = (params["cutout"] == 0).sum(dim=(1, 2, 3))
    assert (zeros <= 64).all() and (zeros > 0).all() and (zeros == 64).any()  # 8x8 square when fully inside


def test_generator_and_global_rng_reproducible():
    x = torch.randn(4, 3, 16, 16)
    pipe = AugmentPipe.from_preset("bgc", p=0.7)
    a = pipe(x, generator=torch.Generator().manual_seed(12))
    b = pipe(x, generator=torch.Generator().manual_seed(12))
    assert torch.equal(a, b) and not torch.allclose(a, x)
    torch.manual_seed(13)
    c = pipe(x)
    torch.manual_seed(13)
    assert torch.equal(c, pipe(x))


# ------------------------------------------------------------------------------------------------ gradients


BACKENDS = [
    "ref",
    pytest.param("compiled", marks=pytest.mark.skipif(not _backend.extension_available(), reason="ops._C not built")),
]


@pytest.fixture
def ops_backend(request):
    """Run one test under the ops backend ``request.param`` and restore the previous state."""
    saved = dict(_backend._state)
    _backend.set_backend(request.param)
    yield request.param
    _backend._state.update(saved)


@pytest.mark.parametrize("ops_backend", BACKENDS, indirect=True)
def test_r1_through_pipe_backprops_to_discriminator(ops_backend):
    torch.manual_seed(14)
    D = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.LeakyReLU(0.2), nn.Flatten(), nn.Linear(4 * 16 * 16, 1))
    pipe = AugmentPipe.from_preset("bgcfnc", imgfilter=0, p=1.0)  # 16 px is below the filter bank's padding
    x = torch.randn(4, 3, 16, 16, requires_grad=True)
    logits = D(pipe(x))
    (grad,) = torch.autograd.grad(logits.sum(), x, create_graph=True)
    penalty = grad.square().sum()
    penalty.backward()
    # biases do not reach dD/dx through a piecewise-linear D; the weights must
    for name in ("0.weight", "3.weight"):
        grad = D.get_parameter(name).grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name


@pytest.mark.parametrize("ops_backend", BACKENDS, indirect=True)
def test_gradgradcheck_tiny_pipe_and_conv(ops_backend):
    pipe = AugmentPipe.from_preset("bgcfnc", imgfilter=0, p=1.0)
    params = pipe.sample_params(1, 3, 8, 8, generator=torch.Generator().manual_seed(15))
    assert (params["geom"] - torch.eye(3)).abs().max() > 0.1  # a real resampling, not the identity
    x = torch.randn(1, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 3, 3, 3, dtype=torch.float64, requires_grad=True)

    def f(x, w):
        return F.conv2d(pipe.apply(x, params), w)

    # fast mode (random projections): the full Jacobians take minutes on 2 busy cores
    assert torch.autograd.gradcheck(f, (x, w), fast_mode=True)
    assert torch.autograd.gradgradcheck(f, (x, w), fast_mode=True, check_batched_grad=False)
