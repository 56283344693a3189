"""Tests of networks/stylegan2.py vs NVlabs stylegan2-ada-pytorch training/networks.py. Budget: < 60 s on 2 cores."""

from __future__ import annotations

import json
import math

import pytest
import torch

from networks import stylegan2 as sg2
from tests.golden import STYLEGAN2_ADA, needs_stylegan2_ada

FIXTURES = STYLEGAN2_ADA
needs_fixtures = needs_stylegan2_ada


def _tiny_g(res=16, c_dim=0, architecture="skip", **synthesis_kwargs):
    synthesis_kwargs = dict(channel_base=128, channel_max=16, architecture=architecture, **synthesis_kwargs)
    return sg2.Generator(
        z_dim=8,
        c_dim=c_dim,
        w_dim=12,
        img_resolution=res,
        img_channels=3,
        mapping_kwargs=dict(num_layers=2),
        synthesis_kwargs=synthesis_kwargs,
    )


def _tiny_d(res=16, c_dim=0, architecture="resnet", **kwargs):
    kwargs.setdefault("epilogue_kwargs", dict(mbstd_group_size=2))
    return sg2.Discriminator(
        c_dim=c_dim,
        img_resolution=res,
        img_channels=3,
        architecture=architecture,
        channel_base=128,
        channel_max=16,
        mapping_kwargs=dict(num_layers=2),
        **kwargs,
    )


def _randomise(module: torch.nn.Module, seed: int = 0) -> None:
    """Non-zero biases / noise strengths / w_avg so that a wrong wiring shows (fixtures do the same)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if name.endswith(("bias", "noise_strength", "w_avg")):
                t.add_(0.1 * torch.randn(t.shape, generator=gen))


def _labels(n, c_dim):
    return torch.eye(c_dim)[torch.arange(n) % c_dim] if c_dim > 0 else torch.zeros([n, 0])


# ---------------------------------------------------------------- golden parity with the reference


def _load_fixture(cfg):
    manifest = json.loads((FIXTURES / "manifest.json").read_text())["configs"][cfg]
    G = sg2.Generator(**manifest["G_init_kwargs"]).eval()
    D = sg2.Discriminator(**manifest["D_init_kwargs"]).eval()
    g_sd = torch.load(FIXTURES / f"stylegan2_{cfg}_G.pt")
    d_sd = torch.load(FIXTURES / f"stylegan2_{cfg}_D.pt")
    io = torch.load(FIXTURES / f"stylegan2_{cfg}_io.pt")
    return manifest, G, D, g_sd, d_sd, io


@needs_fixtures
@pytest.mark.parametrize("cfg", ["small", "cond"])
def test_fixture_state_dict_keys_one_to_one(cfg):
    manifest, G, D, g_sd, d_sd, _ = _load_fixture(cfg)
    for net, ref in ((G, g_sd), (D, d_sd)):
        ours = net.state_dict()
        assert list(ours) == list(ref), "key names and order must equal the reference"
        assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in ref.items()}
        net.load_state_dict(ref, strict=True)
    assert G.num_ws == manifest["num_ws"]


@needs_fixtures
@pytest.mark.parametrize("cfg", ["small", "cond"])
def test_fixture_parity(cfg):
    _, G, D, g_sd, d_sd, io = _load_fixture(cfg)
    G.load_state_dict(g_sd, strict=True)
    D.load_state_dict(d_sd, strict=True)
    z, c, z2 = io["z"], io["c"], io["z2"]
    tol_ws = dict(atol=1e-5, rtol=1e-5)
    tol_img = dict(atol=1e-4, rtol=1e-4)
    with torch.no_grad():
        ws = G.mapping(z, c)
        torch.testing.assert_close(ws, io["ws_psi1"], **tol_ws)
        ws_t = G.mapping(z, c, truncation_psi=0.5, truncation_cutoff=4)
        torch.testing.assert_close(ws_t, io["ws_psi0.5_cutoff4"], **tol_ws)
        # Synthesis from the reference ws so each comparison checks one network.
        for fused in (True, False):
            img = G.synthesis(io["ws_psi1"], noise_mode="const", fused_modconv=fused)
            torch.testing.assert_close(img, io["img_const"], **tol_img)
        torch.testing.assert_close(G.synthesis(io["ws_psi1"], noise_mode="none"), io["img_none"], **tol_img)
        torch.testing.assert_close(
            G.synthesis(io["ws_psi0.5_cutoff4"], noise_mode="const"),
            io["img_const_psi0.5_cutoff4"],
            **tol_img,
        )
        mixed = torch.cat([ws[:, :3], G.mapping(z2, c)[:, 3:]], dim=1)
        torch.testing.assert_close(G.synthesis(mixed, noise_mode="const"), io["img_mixed_cut3_const"], **tol_img)
        # End to end through G.forward.
        torch.testing.assert_close(G(z, c, noise_mode="const"), io["img_const"], **tol_img)
        torch.testing.assert_close(D(io["img_const"], c), io["d_logits_img_const"], **tol_img)
        torch.testing.assert_close(D(io["d_reals"], c), io["d_logits_reals"], **tol_img)


# ---------------------------------------------------------------- shapes, channels, num_ws


@pytest.mark.parametrize("architecture", ["orig", "skip", "resnet"])
@pytest.mark.parametrize("res, c_dim", [(8, 0), (16, 3)])
def test_generator_shapes_and_keys(architecture, res, c_dim):
    G = _tiny_g(res=res, c_dim=c_dim, architecture=architecture)
    assert G.num_ws == 2 * int(math.log2(res)) - 2
    z = torch.randn([2, 8])
    c = _labels(2, c_dim)
    ws = G.mapping(z, c)
    assert ws.shape == (2, G.num_ws, 12) and ws.dtype == torch.float32
    img = G.synthesis(ws)
    assert img.shape == (2, 3, res, res) and img.dtype == torch.float32
    keys = set(G.state_dict())
    assert (f"synthesis.b{res}.torgb.weight" in keys) and ("synthesis.b4.const" in keys)
    assert ("synthesis.b4.torgb.weight" in keys) == (architecture == "skip")
    assert (f"synthesis.b{res}.skip.weight" in keys) == (architecture == "resnet")
    assert ("mapping.embed.weight" in keys) == (c_dim > 0)


@pytest.mark.parametrize("architecture", ["orig", "skip", "resnet"])
@pytest.mark.parametrize("res, c_dim", [(8, 0), (16, 3)])
def test_discriminator_shapes_and_keys(architecture, res, c_dim):
    D = _tiny_d(res=res, c_dim=c_dim, architecture=architecture)
    img = torch.randn([4, 3, res, res])
    c = _labels(4, c_dim)
    names = D.tap_names()
    assert names == [f"b{r}" for r in (16, 8) if r <= res] + ["epilogue_conv", "epilogue_fc"]
    logits, feats = D(img, c, taps=names)
    assert logits.shape == (4, 1) and logits.dtype == torch.float32
    assert list(feats) == names
    for r in (8, 16):
        if r <= res:
            assert feats[f"b{r}"].shape[-1] == r // 2 and feats[f"b{r}"].shape[0] == 4
    assert feats["epilogue_conv"].shape[-2:] == (4, 4) and feats["epilogue_fc"].ndim == 2
    torch.testing.assert_close(D(img, c), logits)
    (grad_b8,) = torch.autograd.grad(logits.sum(), feats["b8"])  # GradCAM-style taps stay in the graph
    assert grad_b8.shape == feats["b8"].shape and grad_b8.abs().sum() > 0
    # features() stops after the deepest block tap and gives the same tensors; epilogue taps run the epilogue.
    early = D.features(img, c, ["b8"])
    torch.testing.assert_close(early["b8"], feats["b8"])
    torch.testing.assert_close(D.features(img, c, ["epilogue_fc"])["epilogue_fc"], feats["epilogue_fc"])
    with pytest.raises(ValueError, match=r"\['b2'\]: not taps of this D"):
        D(img, c, taps=["b2"])
    keys = set(D.state_dict())
    assert ("b4.fromrgb.weight" in keys) == (architecture == "skip")
    assert ("b8.fromrgb.weight" in keys) == (architecture == "skip" or res == 8)
    assert (f"b{res}.skip.weight" in keys) == (architecture == "resnet")
    assert ("mapping.fc1.weight" in keys) == (c_dim > 0)


def test_channel_table_and_num_ws_at_full_size():
    """Channel tables: paper256 (fmaps 0.5) and stylegan2 @1024, built on the meta device (no memory)."""
    with torch.device("meta"):
        g256 = sg2.SynthesisNetwork(w_dim=512, img_resolution=256, img_channels=3, channel_base=16384)
        g1024 = sg2.SynthesisNetwork(w_dim=512, img_resolution=1024, img_channels=3, num_fp16_res=4)
        d256 = sg2.Discriminator(c_dim=0, img_resolution=256, img_channels=3, channel_base=16384)
    ch256 = [getattr(g256, f"b{r}").conv1.out_channels for r in g256.block_resolutions]
    assert ch256 == [512, 512, 512, 512, 256, 128, 64]
    ch1024 = [getattr(g1024, f"b{r}").conv1.out_channels for r in g1024.block_resolutions]
    assert ch1024 == [512, 512, 512, 512, 512, 256, 128, 64, 32]
    assert (g256.num_ws, g1024.num_ws) == (14, 18)
    assert [r for r in g1024.block_resolutions if getattr(g1024, f"b{r}").use_fp16] == [128, 256, 512, 1024]
    # D channel walk: 256: 3→64, 64→128; 128: →256; 64: →512; then 512.
    assert d256.b256.fromrgb.out_channels == 64 and d256.b256.conv1.out_channels == 128
    assert [getattr(d256, f"b{r}").conv1.out_channels for r in (128, 64, 32, 16, 8)] == [
        256,
        512,
        512,
        512,
        512,
    ]
    assert d256.b4.conv.in_channels == 513 and d256.b4.fc.in_features == 8192


# ---------------------------------------------------------------- modulated conv (arXiv 1912.04958 Sec. 2.2)


@pytest.mark.parametrize("up", [1, 2])
@pytest.mark.parametrize("demodulate", [True, False])
def test_fused_equals_non_fused(up, demodulate):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn([3, 5, 6, 6], generator=gen)
    weight = torch.randn([4, 5, 3, 3], generator=gen)
    styles = torch.randn([3, 5], generator=gen) + 1
    noise = torch.randn([3, 1, 6 * up, 6 * up], generator=gen)
    f = sg2.upfirdn2d.setup_filter([1, 3, 3, 1])
    kw = dict(up=up, padding=1, resample_filter=f, demodulate=demodulate, flip_weight=(up == 1), noise=noise)
    fused = sg2.modulated_conv2d(x, weight, styles, fused_modconv=True, **kw)
    non_fused = sg2.modulated_conv2d(x, weight, styles, fused_modconv=False, **kw)
    assert fused.shape == (3, 4, 6 * up, 6 * up)
    torch.testing.assert_close(fused, non_fused, atol=1e-5, rtol=1e-5)


def test_demodulation_matches_hand_computation():
    """up=1 fused conv equals per-sample F.conv2d with W'' = W·s·d (arXiv 1912.04958 Eq. 1-3)."""
    gen = torch.Generator().manual_seed(2)
    x = torch.randn([2, 3, 5, 5], generator=gen)
    weight = torch.randn([4, 3, 3, 3], generator=gen)
    styles = torch.rand([2, 3], generator=gen) + 0.5
    y = sg2.modulated_conv2d(x, weight, styles, padding=1)
    for n in range(2):
        w = weight * styles[n].reshape(1, 3, 1, 1)
        w = w / (w.square().sum(dim=[1, 2, 3], keepdim=True) + 1e-8).sqrt()
        ref = torch.nn.functional.conv2d(x[n : n + 1], w, padding=1)
        torch.testing.assert_close(y[n : n + 1], ref, atol=1e-5, rtol=1e-5)


def test_fp16_prenormalisation_is_scale_free():
    """fp16 pre-normalisation only rescales before demodulation: fp16 result ≈ fp32 result."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn([2, 8, 6, 6], generator=gen)
    weight = torch.randn([8, 8, 3, 3], generator=gen) * 50
    styles = torch.randn([2, 8], generator=gen) * 30
    ref = sg2.modulated_conv2d(x, weight, styles, padding=1, fused_modconv=False)
    y16 = sg2.modulated_conv2d(x.half(), weight, styles, padding=1, fused_modconv=False)
    assert y16.dtype == torch.float16 and torch.isfinite(y16).all()
    torch.testing.assert_close(y16.float(), ref, atol=2e-2, rtol=2e-2)


# ---------------------------------------------------------------- noise, mapping, truncation


def test_noise_modes():
    G = _tiny_g().eval()
    _randomise(G)
    ws = G.mapping(torch.randn([2, 8]), None)
    with torch.no_grad():
        const_a = G.synthesis(ws, noise_mode="const")
        const_b = G.synthesis(ws, noise_mode="const")
        none = G.synthesis(ws, noise_mode="none")
        rand_a = G.synthesis(ws, noise_mode="random")
        rand_b = G.synthesis(ws, noise_mode="random")
        torch.testing.assert_close(const_a, const_b, atol=0, rtol=0)
        assert not torch.allclose(const_a, none, atol=1e-4)
        assert not torch.allclose(rand_a, rand_b, atol=1e-4)
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.zero_()
        torch.testing.assert_close(G.synthesis(ws, noise_mode="random"), none)
        torch.testing.assert_close(G.synthesis(ws, noise_mode="const"), none)
    with pytest.raises(ValueError, match="noise_mode"):
        G.synthesis(ws, noise_mode="fixed")


def test_truncation():
    G = _tiny_g()
    _randomise(G)
    z = torch.randn([3, 8])
    ws = G.mapping(z, None)
    w_avg = G.mapping.w_avg
    ws0 = G.mapping(z, None, truncation_psi=0)
    torch.testing.assert_close(ws0, w_avg.expand_as(ws0))
    ws_half = G.mapping(z, None, truncation_psi=0.5, truncation_cutoff=2)
    torch.testing.assert_close(ws_half[:, :2], w_avg + 0.5 * (ws[:, :2] - w_avg))
    torch.testing.assert_close(ws_half[:, 2:], ws[:, 2:])


def test_w_avg_updates_only_with_update_emas():
    G = _tiny_g()
    _randomise(G)
    z = torch.randn([4, 8])
    before = G.mapping.w_avg.clone()
    G.train()
    G(z, None)
    torch.testing.assert_close(G.mapping.w_avg, before, atol=0, rtol=0)
    w = G.mapping(z, None)[:, 0].detach()
    G.mapping(z, None, update_emas=True)
    expected = w.mean(dim=0) + 0.995 * (before - w.mean(dim=0))
    torch.testing.assert_close(G.mapping.w_avg, expected)


def test_mapping_normalises_z():
    """z is normalised by its second moment: scaling z changes nothing."""
    G = _tiny_g(c_dim=3)
    z = torch.randn([2, 8])
    c = _labels(2, 3)
    torch.testing.assert_close(G.mapping(z, c), G.mapping(7 * z, c))


# ---------------------------------------------------------------- discriminator pieces


def test_minibatch_std_strided_groups_hand_computation():
    x = torch.tensor([1.0, 2.0, 5.0, 10.0]).reshape(4, 1, 1, 1).repeat(1, 2, 2, 2)
    x[:, 1] *= 3  # second channel: triple spread
    y = sg2.MinibatchStdLayer(group_size=2)(x)
    assert y.shape == (4, 3, 2, 2)
    torch.testing.assert_close(y[:, :2], x)
    # Strided groups: {0, 2} = {1, 5} and {1, 3} = {2, 10}; biased std per (c,h,w), averaged over c,h,w.
    s02 = (math.sqrt(4 + 1e-8) + math.sqrt(36 + 1e-8)) / 2
    s13 = (math.sqrt(16 + 1e-8) + math.sqrt(144 + 1e-8)) / 2
    expected = torch.tensor([s02, s13, s02, s13]).reshape(4, 1, 1, 1).expand(4, 1, 2, 2)
    torch.testing.assert_close(y[:, 2:], expected)
    # Group size larger than the batch: one group of all samples.
    y_all = sg2.MinibatchStdLayer(group_size=8)(x)
    std = x.std(dim=0, unbiased=False).mean()
    torch.testing.assert_close(y_all[:, 2:], std.expand(4, 1, 2, 2), atol=1e-6, rtol=1e-6)
    with pytest.raises(ValueError, match="divisible"):
        sg2.MinibatchStdLayer(group_size=4)(torch.randn([6, 2, 2, 2]))


def test_conditional_projection():
    """logit = Σ(out·cmap)/√cmap_dim: changing only the label changes the logit."""
    D = _tiny_d(res=8, c_dim=3).eval()
    img = torch.randn([2, 3, 8, 8])
    a = D(img, torch.eye(3)[[0, 0]])
    b = D(img, torch.eye(3)[[1, 1]])
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match="Discriminator c"):
        D(img, torch.eye(4)[[0, 0]])
    with pytest.raises(ValueError, match="Discriminator c: expected a tensor"):
        D(img, None)


def test_freeze_d_layers_become_buffers():
    D = _tiny_d(res=16, block_kwargs=dict(freeze_layers=3))
    params = dict(D.named_parameters())
    for key in ("b16.fromrgb.weight", "b16.conv0.weight", "b16.conv1.weight"):
        assert key not in params and key in D.state_dict()
    assert "b16.skip.weight" in params and "b8.conv0.weight" in params
    ref = _tiny_d(res=16)
    assert set(D.state_dict()) == set(ref.state_dict())
    D.load_state_dict(ref.state_dict(), strict=True)
    img = torch.randn([2, 3, 16, 16])
    torch.testing.assert_close(D(img, None), ref(img, None))


# ---------------------------------------------------------------- fp16 policy, channels-last


def test_fp16_blocks_run_fp32_on_cpu_and_match():
    """Suite policy: fp16 blocks run fp32 off CUDA, so the output equals force_fp32 and the all-fp32 net."""
    G16 = _tiny_g(num_fp16_res=2, conv_clamp=256).eval()
    G32 = _tiny_g(num_fp16_res=0, conv_clamp=256).eval()
    _randomise(G16)
    G32.load_state_dict(G16.state_dict(), strict=True)
    assert G16.synthesis.b16.use_fp16 and G16.synthesis.b8.use_fp16 and not G16.synthesis.b4.use_fp16
    D16 = _tiny_d(num_fp16_res=2, conv_clamp=256)
    D32 = _tiny_d(num_fp16_res=0, conv_clamp=256)
    D32.load_state_dict(D16.state_dict(), strict=True)
    ws = G16.mapping(torch.randn([2, 8]), None)
    with torch.no_grad():
        img = G16.synthesis(ws, noise_mode="const")
        assert img.dtype == torch.float32
        torch.testing.assert_close(img, G32.synthesis(ws, noise_mode="const"), atol=0, rtol=0)
        torch.testing.assert_close(img, G16.synthesis(ws, noise_mode="const", force_fp32=True), atol=0, rtol=0)
        x, _ = G16.synthesis.b4(None, None, ws[:, :2])
        assert G16.synthesis.b8(x, None, ws[:, 1:4])[0].dtype == torch.float32
        torch.testing.assert_close(D16(img, None), D32(img, None), atol=0, rtol=0)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fp16_blocks_on_cuda():
    """On CUDA the top num_fp16_res blocks run fp16; output fp32 and close to the force_fp32 run."""
    G = _tiny_g(num_fp16_res=2, conv_clamp=256).eval().cuda()
    D = _tiny_d(num_fp16_res=2, conv_clamp=256).cuda()
    ws = G.mapping(torch.randn([2, 8], device="cuda"), None)
    with torch.no_grad():
        x, img = G.synthesis.b4(None, None, ws[:, :2])
        x, img = G.synthesis.b8(x, img, ws[:, 1:4])
        assert x.dtype == torch.float16 and img.dtype == torch.float32
        img = G.synthesis(ws, noise_mode="const")
        ref = G.synthesis(ws, noise_mode="const", force_fp32=True)
        assert img.dtype == torch.float32
        torch.testing.assert_close(img, ref, atol=2e-2, rtol=2e-2)
        x16, _ = D.b16(None, img)
        assert x16.dtype == torch.float16
        torch.testing.assert_close(D(img, None), D(img, None, force_fp32=True), atol=2e-2, rtol=2e-2)


def test_conv_clamp_bounds_activations():
    G = _tiny_g(conv_clamp=0.05).eval()
    ws = G.mapping(torch.randn([2, 8]), None)
    x, img = G.synthesis.b4(None, None, ws[:, :2])
    assert x.abs().max() <= 0.05 + 1e-7 and img.abs().max() <= 0.05 + 1e-7


def test_channels_last_matches_contiguous():
    G = _tiny_g(num_fp16_res=2, fp16_channels_last=True).eval()
    assert G.synthesis.b16.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    ws = G.mapping(torch.randn([2, 8]), None)
    D = _tiny_d(num_fp16_res=2, block_kwargs=dict(fp16_channels_last=True))
    with torch.no_grad():
        img = G.synthesis(ws, noise_mode="const")
        torch.testing.assert_close(img, G.synthesis(ws, noise_mode="const", force_fp32=True))
        torch.testing.assert_close(D(img, None), D(img, None, force_fp32=True))


# ---------------------------------------------------------------- extension points, checkpoints, errors


def test_sel_extension_point_receives_spatial_input():
    G = _tiny_g().eval()
    calls = []

    class Halve(torch.nn.Module):
        def forward(self, x, spatial):
            calls.append((tuple(x.shape), spatial))
            return 0.5 * x

    ws = G.mapping(torch.randn([2, 8]), None)
    base = G.synthesis(ws, noise_mode="const")
    keys = list(G.state_dict())
    G.synthesis.b8.conv0.sel = Halve()
    G.synthesis.b8.torgb.sel = Halve()
    out = G.synthesis(ws, noise_mode="const", spatial="heatmaps")
    assert calls == [((2, 16, 4, 4), "heatmaps"), ((2, 16, 8, 8), "heatmaps")]
    assert not torch.allclose(out, base)
    G.synthesis.b8.conv0.sel = None
    G.synthesis.b8.torgb.sel = None
    assert list(G.state_dict()) == keys
    torch.testing.assert_close(G.synthesis(ws, noise_mode="const"), base)


def test_init_kwargs_rebuild_networks():
    G = _tiny_g(c_dim=3, architecture="resnet", num_fp16_res=1)
    D = _tiny_d(c_dim=3, architecture="skip")
    for net, cls in ((G, sg2.Generator), (D, sg2.Discriminator), (G.mapping, sg2.MappingNetwork)):
        rebuilt = cls(**net.init_kwargs)
        rebuilt.load_state_dict(net.state_dict(), strict=True)
    assert G.synthesis.init_kwargs["architecture"] == "resnet"
    rebuilt = sg2.SynthesisNetwork(**G.synthesis.init_kwargs)
    rebuilt.load_state_dict(G.synthesis.state_dict(), strict=True)
    assert G.init_kwargs["synthesis_kwargs"]["num_fp16_res"] == 1


def test_bad_inputs_name_the_key():
    with pytest.raises(ValueError, match="architecture"):
        _tiny_g(architecture="cascade")
    with pytest.raises(ValueError, match="img_resolution"):
        _tiny_d(res=12)
    G = _tiny_g()
    with pytest.raises(ValueError, match="MappingNetwork z"):
        G(torch.randn([2, 9]), None)
    with pytest.raises(ValueError, match="SynthesisNetwork ws"):
        G.synthesis(torch.randn([2, 3, 12]))
    with pytest.raises(ValueError, match="Discriminator img"):
        _tiny_d()(torch.randn([2, 3, 8, 8]), None)


def test_r1_and_path_length_double_backward():
    """R1 (∂D/∂x) and PL (∂G/∂ws) gradients are themselves differentiable."""
    G = _tiny_g(res=8).train()
    D = _tiny_d(res=8).train()
    img = torch.randn([2, 3, 8, 8], requires_grad=True)
    (grad_x,) = torch.autograd.grad(D(img, None).sum(), img, create_graph=True)
    grad_x.square().sum().backward()
    assert D.b8.conv0.weight.grad is not None and D.b8.conv0.weight.grad.abs().sum() > 0
    ws = G.mapping(torch.randn([2, 8]), None).detach().requires_grad_(True)
    out = G.synthesis(ws)
    (grad_ws,) = torch.autograd.grad((out * torch.randn_like(out)).sum(), ws, create_graph=True)
    grad_ws.square().sum().backward()
    assert G.synthesis.b8.conv1.weight.grad.abs().sum() > 0
