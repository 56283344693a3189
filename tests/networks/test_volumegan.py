"""VolumeGAN networks (networks/volumegan.py): shapes and the public API, shape/appearance split, progressive
growing blends of G and D, second-order gradients through the volume lookup on both op backends, checkpoint
round trip, conversion of a Hammer-format checkpoint (original tensor names), fp16 quirk layout.
Budget: ~15 s on 2 CPU cores (tiny networks)."""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F

from networks.checkpoint import load_networks, save_networks
from networks.volumegan import VolumeGANDiscriminator, VolumeGANGenerator
from ops import _backend
from ops.upfirdn2d import setup_filter

TINY_G = dict(
    z_dim=16,
    w_dim=16,
    img_resolution=32,
    nerf_resolution=8,
    volume_channels=[8, 8, 4],
    pe_freqs=3,
    mlp_hidden=16,
    feat_dim=16,
    num_coarse=6,
    num_fine=6,
    channel_base=256,
    channel_max=16,
    mapping_kwargs=dict(num_layers=2),
)
TINY_D = dict(img_resolution=32, lod_resolution=8, channel_base=256, channel_max=16)
FRONT = dict(yaw=torch.tensor([1.5, 1.7]), pitch=torch.tensor([1.55, 1.6]))


@pytest.fixture
def use_backend():
    """Set the ops backend for one test and restore the previous state afterwards."""
    saved = dict(_backend._state)
    yield _backend.set_backend
    _backend._state.update(saved)


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(0)
    G = VolumeGANGenerator(**TINY_G).eval()
    D = VolumeGANDiscriminator(**TINY_D).eval()
    with torch.no_grad():  # non-zero noise strengths so that noise settings matter
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.1)
    return G, D


def _render(G, ws, seed=0, **kw):
    torch.manual_seed(seed)  # importance sampling draws from the global generator
    kw = dict(dict(camera=FRONT, perturb=False, noise_mode="const"), **kw)
    return G.synthesis(ws, **kw)


@torch.no_grad()
def test_public_api(nets):
    G, D = nets
    assert (G.num_ws, G.num_nerf_ws, G.max_lod, G.mixing_range) == (10, 4, 2, (4, 10))
    assert (G.z_dim, G.c_dim, G.img_resolution, G.img_channels) == (16, 0, 32, 3)
    ws = G.mapping(torch.randn(2, 16), None)
    assert ws.shape == (2, 10, 16)
    img, extras = _render(G, ws, return_extras=True)
    assert img.shape == (2, 3, 32, 32)
    assert extras["feature"].shape == (2, 16, 8, 8) and extras["depth"].shape == (2, 1, 8, 8)
    for key in ("depths", "density", "weights"):
        assert extras[key].shape == (2, 64, 12)
    assert bool((extras["depths"][..., 1:] >= extras["depths"][..., :-1]).all())
    assert bool((extras["weights"].sum(-1) <= 1 + 1e-5).all())
    cam = G.sample_camera(5)
    assert cam["yaw"].shape == (5,) and cam["pitch"].shape == (5,)
    assert G(torch.randn(2, 16), None, truncation_psi=0.7, truncation_cutoff=8).shape == (2, 3, 32, 32)
    assert D(img).shape == (2, 1)
    with pytest.raises(ValueError, match=r"VolumeGANSynthesis ws: expected shape \[\*, 10, 16\]"):
        G.synthesis(ws[:, :9])
    with pytest.raises(ValueError, match="'yaw' and 'pitch'"):
        G.synthesis(ws, camera={"yaw": 1.0})


@torch.no_grad()
def test_swapping_renderer_ws_keeps_the_rendered_feature_map(nets):
    G, _ = nets
    ws_a, ws_b = G.mapping(torch.randn(2, 16, generator=torch.Generator().manual_seed(1)), None).chunk(2)
    ws_a, ws_b = ws_a.expand(2, -1, -1), ws_b.expand(2, -1, -1)
    appearance_swap = torch.cat([ws_a[:, :4], ws_b[:, 4:]], dim=1)
    shape_swap = torch.cat([ws_b[:, :4], ws_a[:, 4:]], dim=1)
    img_a, ex_a = _render(G, ws_a, return_extras=True)
    img_s, ex_s = _render(G, appearance_swap, return_extras=True)
    torch.testing.assert_close(ex_s["feature"], ex_a["feature"], atol=0, rtol=0)
    torch.testing.assert_close(ex_s["depth"], ex_a["depth"], atol=0, rtol=0)
    assert float((img_s - img_a).abs().max()) > 1e-3  # the renderer w's change the image
    _, ex_shape = _render(G, shape_swap, return_extras=True)
    assert float((ex_shape["feature"] - ex_a["feature"]).abs().max()) > 1e-3


@pytest.mark.parametrize("lod", [0.25, 0.5, 1.5, 1.9])
@torch.no_grad()
def test_generator_blend_at_fractional_lod(nets, lod):
    """img(lod) = a img(floor lod) + (1 - a) img(floor lod + 1), a = ceil(lod) - lod (both nearest-upsampled)."""
    G, _ = nets
    ws = G.mapping(torch.randn(2, 16, generator=torch.Generator().manual_seed(2)), None)
    a = math.ceil(lod) - lod
    fine, coarse = _render(G, ws, lod=math.floor(lod)), _render(G, ws, lod=math.floor(lod) + 1)
    torch.testing.assert_close(_render(G, ws, lod=lod), a * fine + (1 - a) * coarse, atol=1e-6, rtol=1e-6)


@torch.no_grad()
def test_generator_coarsest_level_is_the_rendered_feature_map(nets):
    G, _ = nets
    ws = G.mapping(torch.randn(2, 16), None)
    img, extras = _render(G, ws, lod=G.max_lod, return_extras=True)
    expected = F.interpolate(extras["feature"][:, :3], scale_factor=4, mode="nearest")
    torch.testing.assert_close(img, expected, atol=0, rtol=0)
    G.set_lod(1.25)
    try:
        torch.testing.assert_close(_render(G, ws), _render(G, ws, lod=1.25), atol=0, rtol=0)
    finally:
        G.set_lod(0)
    with pytest.raises(ValueError, match=r"lod: expected a value in \[0, 2\]"):
        _render(G, ws, lod=2.5)


def _d_manual(D, img, lod):
    """The specified D blend, step by step from D's modules."""
    e = math.floor(lod)
    a = math.ceil(lod) - lod
    res = [32, 16, 8]
    pooled = [img, F.avg_pool2d(img, 2), F.avg_pool2d(img, 4)]
    x, _ = getattr(D, f"b{res[e]}")(None if e == 0 else getattr(D, f"fromrgb{res[e]}")(pooled[e]), pooled[0])
    if a > 0 and e + 1 < len(res):
        x = a * x + (1 - a) * getattr(D, f"fromrgb{res[e + 1]}")(pooled[e + 1])
    for r in res[e + 1 :]:
        x, _ = getattr(D, f"b{r}")(x, None)
    return D.b4(x, None, None)


@pytest.mark.parametrize("lod", [0.0, 0.3, 1.0, 1.6, 2.0])
@torch.no_grad()
def test_discriminator_blend_matches_the_specification(nets, lod):
    _, D = nets
    img = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(D(img, lod=lod), _d_manual(D, img, lod), atol=1e-6, rtol=1e-5)


@torch.no_grad()
def test_blends_are_continuous_at_level_boundaries(nets):
    G, D = nets
    ws = G.mapping(torch.randn(2, 16), None)
    img = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    for k in (0, 1):
        for near, at in ((k + 1e-6, k), (k + 1 - 1e-6, k + 1)):
            torch.testing.assert_close(D(img, lod=near), D(img, lod=at), atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(_render(G, ws, lod=near), _render(G, ws, lod=at), atol=1e-4, rtol=1e-4)


def _pl_and_r1(G, D):
    """PL through G (second order through the volume lookup) and R1 through D at a fractional lod: the
    parameter gradients of G's PL term."""
    G.zero_grad(set_to_none=True)
    ws = G.mapping(torch.randn(2, 16, generator=torch.Generator().manual_seed(5)), None).detach().requires_grad_()
    img = _render(G, ws, lod=0.5)
    noise = torch.randn(img.shape, generator=torch.Generator().manual_seed(6)) / 32
    (grad_ws,) = torch.autograd.grad((img * noise).sum(), ws, create_graph=True)
    grad_ws.square().sum(2).mean(1).sqrt().sum().backward()
    grads = {n: p.grad.clone() for n, p in G.named_parameters() if p.grad is not None}
    real = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(7)).requires_grad_()
    (g_real,) = torch.autograd.grad(D(real, lod=0.5).sum(), real, create_graph=True)
    D.zero_grad(set_to_none=True)
    g_real.square().sum().backward()
    assert float(D.b32.conv0.weight.grad.abs().sum()) > 0
    return grads


compiled_only = pytest.mark.skipif(not _backend.extension_available(), reason="ops._C not built")


@pytest.mark.parametrize("backend", ["ref", pytest.param("compiled", marks=compiled_only)])
def test_path_length_and_r1_double_backward(nets, backend, use_backend):
    use_backend(backend)
    grads = _pl_and_r1(*nets)
    for name in ("synthesis.volume.const", "synthesis.volume.layer1.weight", "synthesis.mlp.layer0.weight"):
        assert float(grads[name].abs().sum()) > 0, name


@compiled_only
def test_backends_agree_on_path_length_gradients(nets, use_backend):
    results = {}
    for backend in ("ref", "compiled"):
        use_backend(backend)
        results[backend] = _pl_and_r1(*nets)
    for name, g in results["ref"].items():
        torch.testing.assert_close(results["compiled"][name], g, atol=1e-5, rtol=1e-4, msg=name)


@torch.no_grad()
def test_checkpoint_round_trip(nets, tmp_path):
    G, D = nets
    path = tmp_path / "volumegan.pt"
    save_networks(path, {"G": G, "D": D, "G_ema": G})
    back = load_networks(path)
    ws = G.mapping(torch.randn(2, 16), None)
    torch.testing.assert_close(_render(back["G_ema"], ws), _render(G, ws), atol=0, rtol=0)
    img = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(back["D"](img, lod=1.5), D(img, lod=1.5), atol=0, rtol=0)


# ---------------------------------------------------------------------------------------------- Hammer file


def _hammer_generator(G) -> dict:
    """Our generator's tensors under genforce/volumegan's names (models/volumegan_generator.py)."""
    nerf = G.synthesis.nerf_resolution
    out = {}
    for key, value in G.state_dict().items():
        if key.endswith("resample_filter"):
            continue
        name = {"mapping.w_avg": "w_avg"}.get(key, key)
        name = re.sub(r"^mapping\.fc(\d+)\.", r"mapping.dense\1.", name)
        name = name.replace("synthesis.volume.affine.", "nerfmlp.fv.mapping_network.")
        name = name.replace("synthesis.volume.", "nerfmlp.fv.")
        name = re.sub(r"^synthesis\.mlp\.layer(\d+)\.affine\.", r"nerfmlp.fg_mlps.\1.style.", name)
        name = re.sub(r"^synthesis\.mlp\.layer(\d+)\.", r"nerfmlp.fg_mlps.\1.", name)
        name = name.replace("synthesis.mlp.density.", "nerfmlp.fg_density.")
        name = name.replace("synthesis.mlp.feature.", "nerfmlp.fg_color.")
        m = re.fullmatch(r"synthesis\.renderer\.b(\d+)\.(conv0|conv1|torgb)\.(.*)", name)
        if m:
            b = int(math.log2(int(m.group(1)) // nerf))
            layer = {"conv0": f"layer{2 * b - 1}", "conv1": f"layer{2 * b}", "torgb": f"output{b}"}[m.group(2)]
            param = {"affine.weight": "style.weight", "affine.bias": "style.bias", "noise_const": "noise"}.get(
                m.group(3), m.group(3)
            )
            name = f"synthesis.{layer}.{param}"
            value = value[None, None] if param == "noise" else value
            if layer.startswith("layer") and int(layer[5:]) % 2 == 1:
                out[f"synthesis.{layer}.filter"] = setup_filter([1, 3, 3, 1])
        out[name] = value.clone()
    out["synthesis.filter"] = setup_filter([1, 3, 3, 1])
    return out


def _hammer_discriminator(D) -> dict:
    """Our discriminator's tensors under models/volumegan_discriminator.py names (+ its unused 4x4..16x16 inputs)."""
    R = D.img_resolution
    n_blocks = int(math.log2(R)) - 2
    out = {"lod": D.lod.clone()}
    for key, value in D.state_dict().items():
        m = re.fullmatch(r"b(\d+)\.(fromrgb|conv0|conv1|skip|conv|fc|out)\.(weight|bias)", key)
        f = re.fullmatch(r"fromrgb(\d+)\.(weight|bias)", key)
        if m:
            b = int(math.log2(R // int(m.group(1))))
            name = {
                "fromrgb": f"input{b}",
                "conv0": f"layer{2 * b}",
                "conv1": f"layer{2 * b + 1}",
                "skip": f"residual{b}",
                "conv": f"layer{2 * n_blocks}",
                "fc": f"layer{2 * n_blocks + 1}",
                "out": "output",
            }[m.group(2)]
            out[f"{name}.{m.group(3)}"] = value.clone()
        elif f:
            out[f"input{int(math.log2(R // int(f.group(1))))}.{f.group(2)}"] = value.clone()
    for b in range(D.max_lod + 1, n_blocks + 1):  # built by the original, never used by a residual D
        ch = out[f"layer{2 * min(b, n_blocks)}.weight"].shape[1]
        out[f"input{b}.weight"], out[f"input{b}.bias"] = torch.randn(ch, 3, 1, 1), torch.zeros(ch)
    return out


def _hammer_checkpoint(G, D, **g_overrides) -> dict:
    ps_cfg = dict(
        num_steps=6,
        ray_start=0.8,
        ray_end=1.2,
        radius=1,
        horizontal_mean=math.pi / 2,
        horizontal_stddev=0.3,
        vertical_mean=math.pi / 2,
        vertical_stddev=0.155,
        camera_dist="gaussian",
        fov=12,
        perturb_mode=None,
    )
    g_kwargs = dict(
        model_type="VolumeGANGenerator",
        resolution=32,
        nerf_res=8,
        z_dim=16,
        mapping_layers=2,
        fmaps_base=256,
        conv_clamp=None,
        rgb_init_res_out=False,
        embed_cfg=dict(input_dim=3, max_freq_log2=2, N_freqs=3),
        fg_cfg=dict(num_layers=4, hidden_dim=16, activation_type="lrelu"),
        bg_cfg=None,
        out_dim=16,
        ps_cfg=ps_cfg,
        hs_cfg=dict(clamp_mode="relu"),
        vr_cfg=dict(clamp_mode="relu"),
    )
    g_kwargs.update(g_overrides)
    d_kwargs = dict(
        model_type="VolumeGANDiscriminator",
        resolution=32,
        image_channels=3,
        init_res=4,
        label_dim=0,
        architecture="resnet",
        fmaps_base=256,
        conv_clamp=None,
        mbstd_groups=4,
    )
    g = _hammer_generator(G)
    return {
        "models": {"generator": g, "generator_smooth": g, "discriminator": _hammer_discriminator(D)},
        "model_kwargs_init": {"generator": g_kwargs, "generator_smooth": g_kwargs, "discriminator": d_kwargs},
        "running_metadata": {"iter": 10, "seen_img": 80},
    }


@torch.no_grad()
def test_hammer_checkpoint_converts_to_the_same_networks(nets, tmp_path):
    G, D = nets
    path = tmp_path / "volumegan-ffhq256.pth"
    torch.save(_hammer_checkpoint(G, D), path)
    back = load_networks(path)
    assert back["meta"]["format"] == "hammer" and back["meta"]["seen_img"] == 80
    assert type(back["G_ema"]) is VolumeGANGenerator and type(back["D"]) is VolumeGANDiscriminator
    Gc = back["G_ema"]
    assert Gc.synthesis.camera == G.synthesis.camera and Gc.synthesis.depth_range == (0.8, 1.2)
    z = torch.randn(2, 16)
    ws = G.mapping(z, None)
    torch.testing.assert_close(Gc.mapping(z, None), ws, atol=0, rtol=0)
    for lod in (0.0, 1.5):
        torch.testing.assert_close(_render(Gc, ws, lod=lod), _render(G, ws, lod=lod), atol=0, rtol=0)
    img = torch.randn(4, 3, 32, 32)
    for lod in (0.0, 0.7, 2.0):
        torch.testing.assert_close(back["D"](img, lod=lod), D(img, lod=lod), atol=0, rtol=0)


@torch.no_grad()
def test_hammer_settings_and_unsupported_options(nets, tmp_path):
    G, D = nets
    ckpt = _hammer_checkpoint(G, D)
    ckpt["model_kwargs_init"]["generator"]["ps_cfg"].update(fov=10, horizontal_stddev=0.5, num_steps=9)
    path = tmp_path / "settings.pth"
    torch.save(ckpt, path)
    syn = load_networks(path)["G"].synthesis
    assert syn.camera["fov_deg"] == 10 and syn.camera["yaw_std"] == 0.5 and syn.num_coarse == syn.num_fine == 9
    for overrides, option in (
        (dict(rgb_init_res_out=True), "rgb_init_res_out"),
        (dict(hs_cfg=dict(clamp_mode="softplus")), "clamp_mode"),
        (dict(final_tanh=True), "final_tanh"),
    ):
        torch.save(_hammer_checkpoint(G, D, **overrides), path)
        with pytest.raises(ValueError, match=option):
            load_networks(path)


@torch.no_grad()
def test_fp16_quirk_layout_and_cpu_fallback():
    G = VolumeGANGenerator(**TINY_G, fp16_quirk=True)
    D = VolumeGANDiscriminator(**TINY_D, fp16_quirk=True)
    renderer = G.synthesis.renderer
    assert [getattr(renderer, f"b{r}").use_fp16 for r in (16, 32)] == [True, True]
    assert renderer.b16.conv0.conv_clamp == 256 and renderer.b32.torgb.conv_clamp == 256
    assert all(getattr(D, f"b{r}").use_fp16 for r in (32, 16, 8)) and D.b32.conv0.conv_clamp == 256
    assert G.init_kwargs["fp16_quirk"] is True and VolumeGANGenerator(**TINY_G).synthesis.renderer.b16.use_fp16 is False
    img = _render(G, G.mapping(torch.randn(2, 16), None))
    assert img.dtype == torch.float32 and bool(torch.isfinite(img).all())  # fp16 only on CUDA


@torch.no_grad()
def test_hammer_checkpoint_with_easydict_settings_loads_without_running_code(nets, tmp_path, monkeypatch):
    """Hammer's runner saves ``model_kwargs_init`` as ``easydict.EasyDict`` (items plus a ``__dict__`` copy of
    them, pickled with NEWOBJ + SETITEMS + BUILD). The file is written with a class of that shape under that name;
    the restricted reader maps the name to its data-only stand-in and never imports ``easydict``."""
    import pickle
    import sys
    import types

    class EasyDict(dict):
        """The shape of easydict.EasyDict: every item is also an attribute, nested dicts become EasyDicts."""

        def __init__(self, d=None):
            super().__init__()
            for k, v in (d or {}).items():
                setattr(self, k, v)

        def __setattr__(self, name, value):
            if isinstance(value, dict) and not isinstance(value, EasyDict):
                value = EasyDict(value)
            super().__setattr__(name, value)
            super().__setitem__(name, value)

    EasyDict.__module__, EasyDict.__qualname__ = "easydict", "EasyDict"
    module = types.ModuleType("easydict")
    module.EasyDict = EasyDict
    monkeypatch.setitem(sys.modules, "easydict", module)
    G, D = nets
    ckpt = _hammer_checkpoint(G, D)
    ckpt["model_kwargs_init"] = EasyDict(ckpt["model_kwargs_init"])
    assert isinstance(ckpt["model_kwargs_init"].generator.ps_cfg, EasyDict)
    path = tmp_path / "volumegan-easydict.pth"
    torch.save(ckpt, path)
    monkeypatch.delitem(sys.modules, "easydict")
    with pytest.raises(pickle.UnpicklingError, match="easydict"):
        torch.load(path, weights_only=True)  # the class name is in the file
    back = load_networks(path)
    assert "easydict" not in sys.modules
    assert back["G_ema"].synthesis.camera == G.synthesis.camera
    ws = G.mapping(torch.randn(2, 16), None)
    torch.testing.assert_close(_render(back["G_ema"], ws, lod=0.5), _render(G, ws, lod=0.5), atol=0, rtol=0)
