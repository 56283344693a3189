"""EqGAN-SA training: GradCAM, alignment loss, DI, ablation switches, a short run (genforce/eqgan-sa training/loss.py;
budget ~50 s)."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from lightning_modules.config import ConfigError
from lightning_modules.eqgan_sa import (
    EqGANModule,
    gradcam,
    gradcam_weights,
    heatmap_target,
    minmax_normalise,
    thresholded_l1,
)
from metrics.disequilibrium import DisequilibriumIndicator, evaluate_di
from networks.eqgan_sa import EqGANGenerator
from tests.lightning_modules.gan_helpers import RES, random_batch, tiny_datamodule, tiny_networks, tiny_trainer


def tiny_eqgan_module(use_sel=True, align=True, **kwargs):
    _, D = tiny_networks()
    G = EqGANGenerator(
        z_dim=16,
        c_dim=0,
        w_dim=16,
        img_resolution=RES,
        img_channels=3,
        mapping_kwargs={"num_layers": 2},
        synthesis_kwargs={"channel_base": 128, "channel_max": 16},
        use_sel=use_sel,
        sel_kwargs={"sel_hidden": 8},
    )
    defaults = dict(
        batch_size=4,
        total_kimg=0.012,
        r1_gamma=1.0,
        pl_weight=0.0,
        style_mixing_prob=0.0,
        g_reg_interval=4,
        d_reg_interval=2,
        ema_kimg=0.01,
        sample_grid=(2, 2),
        sample_every_kimg=100,
        eqgan={"align_loss": align},
        cam_grid=2,
    )
    defaults.update(kwargs)
    return EqGANModule(G, D, **defaults)


class ToyD(nn.Module):
    """logit = Σ W8·A8 + Σ W16·A16 with A8 = 1x1 conv of the 4x4 pooled image, A16 of the 8x8 pooled image."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.proj = nn.Conv2d(3, 2, 1)
        self.w8 = nn.Parameter(torch.randn(2, 4, 4))
        self.w16 = nn.Parameter(torch.randn(2, 8, 8))

    def forward(self, img, c, taps=()):
        a8 = self.proj(F.adaptive_avg_pool2d(img, 4))
        a16 = self.proj(F.adaptive_avg_pool2d(img, 8)).tanh()
        logits = (a8 * self.w8).sum((1, 2, 3)) + (a16 * self.w16).sum((1, 2, 3))
        logits = logits[:, None]
        return (logits, {k: v for k, v in {"b8": a8, "b16": a16}.items() if k in taps}) if taps else logits


def test_gradcam_matches_hand_computation():
    D = ToyD()
    img = torch.randn(3, 3, 16, 16)
    alphas = gradcam_weights(D, img, None, ["b8", "b16"])
    logits, feats = D(img, None, taps=["b8", "b16"])
    dsoft = -torch.sigmoid(-logits.detach())[:, :, None, None]  # d softplus(-l) / dl, per sample
    alpha8 = (dsoft * D.w8.detach()[None]).mean((2, 3))
    alpha16 = (dsoft * D.w16.detach()[None]).mean((2, 3))
    torch.testing.assert_close(alphas["b8"], alpha8)
    torch.testing.assert_close(alphas["b16"], alpha16)
    assert all(p.grad is None for p in D.parameters())  # autograd.grad: D accumulates nothing
    a = feats["b8"]
    per_channel = (alpha8[:, :, None, None] * a).clamp(min=0).sum(1, keepdim=True)
    after_sum = (alpha8[:, :, None, None] * a).sum(1, keepdim=True).clamp(min=0)
    torch.testing.assert_close(gradcam(alphas["b8"], a, "per_channel"), per_channel)
    torch.testing.assert_close(gradcam(alphas["b8"], a, "after_sum"), after_sum)
    assert not torch.allclose(per_channel, after_sum)
    with pytest.raises(ValueError, match="cam_relu"):
        gradcam(alphas["b8"], a, "mean")


def test_minmax_normalise_detached_and_nan_safe():
    x = torch.tensor([[[[1.0, 3.0], [2.0, 5.0]]], [[[2.0, 2.0], [2.0, 2.0]]]], requires_grad=True)
    y = minmax_normalise(x)
    torch.testing.assert_close(y[0, 0], torch.tensor([[0.0, 0.5], [0.25, 1.0]]))
    assert torch.equal(y[1], torch.zeros(1, 2, 2))  # 0/0 -> NaN -> 0
    y[0].sum().backward()
    torch.testing.assert_close(x.grad[0], torch.full((1, 2, 2), 0.25))  # min/max detached: d/dx = 1/(max-min)
    maps = torch.rand(2, 4, 6, 6) + 0.01
    t = heatmap_target("b32", maps)
    assert t.shape == (2, 1, 6, 6) and float(t.amin()) == 0.0 and float(t.amax()) == 1.0
    assert torch.equal(heatmap_target("b8", maps[:, :1]), maps[:, :1])


def test_alignment_loss_threshold_and_fallback():
    target = torch.rand(2, 1, 8, 8)
    assert float(thresholded_l1(target.clone(), target)) == 0.0
    cam = target.clone()
    cam[0, 0, 0, 0] += 0.5
    cam[1, 0, 3, 3] += 0.7
    cam[1, 0, 4, 4] += 0.1  # below the threshold: excluded
    assert float(thresholded_l1(cam, target)) == pytest.approx(0.6, abs=1e-6)
    one = target.clone()
    one[0, 0, 0, 0] += 0.5  # a single element above 0.25 -> plain mean over all elements
    assert float(thresholded_l1(one, target)) == pytest.approx(0.5 / 128, abs=1e-6)
    bad = cam.clone()
    bad[0, 0, 7, 7] = float("nan")
    bad[0, 0, 7, 6] = float("inf")
    assert float(thresholded_l1(bad, target)) == pytest.approx(0.6, abs=1e-6)  # non-finite dropped


def test_alignment_trains_g_and_sel_not_d_and_every_g_parameter_is_used():
    torch.manual_seed(0)
    real = random_batch(2)
    for use_sel, align in ((True, True), (True, False), (False, False)):
        module = tiny_eqgan_module(use_sel=use_sel, align=align)
        module.D.requires_grad_(False)  # as in the Gmain phase
        out = module.gmain_loss(real)
        terms = out.terms
        assert ("G/align" in terms) == align
        assert (sorted(out.records["d_fake"].taps) == ["b16", "b8"]) == align, "taps only when the loss uses them"
        assert ("spatial" in out.records["fake"].inputs) == use_sel, "the heatmaps G was given are in the record"
        sum(terms.values()).backward()
        unused = [n for n, p in module.G.named_parameters() if p.grad is None]
        assert not unused, (use_sel, align, unused[:5])  # nothing unused under DDP
        if align:
            assert float(terms["G/align"]) > 0
            # the alignment term alone reaches the heatmap encoder and the SELs
            module.G.zero_grad(set_to_none=True)
            terms = module.gmain_loss(real).terms
            terms["G/align"].backward()
            assert module.G.synthesis.hm_conv0_b8.weight.grad.abs().sum() > 0
            assert module.G.synthesis.b16.conv1.sel.output[1].weight.grad.abs().sum() > 0
            assert module.G.mapping.fc0.weight.grad.abs().sum() > 0
    with pytest.raises(ConfigError, match="use_sel"):
        tiny_eqgan_module(use_sel=False, align=True)
    with pytest.raises(ConfigError, match="ablation"):
        tiny_eqgan_module(eqgan={"ablation": "full", "variants": {"full": {"use_sel": True, "align_loss": False}}})
    with pytest.raises(ConfigError, match=r"model\.eqgan\.cam_relu"):
        tiny_eqgan_module(eqgan={"cam_relu": "mean"})


def test_di_metric_and_protocol():
    m = DisequilibriumIndicator()
    m.update(torch.tensor([1.0, 3.0]), real=True)
    m.update(torch.tensor([[-1.0], [0.0], [1.0], [-4.0]]), real=False)
    assert float(m.compute()) == pytest.approx(2.0 - (-1.0))

    class MeanD(nn.Module):
        def forward(self, img, c):
            return img.mean((1, 2, 3))[:, None] * 10

    class ZeroG(nn.Module):
        z_dim = 4

        def forward(self, z, c):
            return torch.zeros(z.shape[0], 3, 4, 4) - 0.5

    reals = [torch.full((3, 3, 4, 4), 255, dtype=torch.uint8)]  # +1 after scaling; cycled to 7 samples
    out = evaluate_di(ZeroG(), MeanD(), reals, n_samples=7, batch_size=3)
    assert out["n"] == 7 and out["D_real"] == pytest.approx(10.0) and out["D_fake"] == pytest.approx(-5.0)
    assert out["DI"] == pytest.approx(15.0)


def test_short_training_run_logs_di_align_and_cam_images(tmp_path):
    from pytorch_lightning.loggers import CSVLogger

    module = tiny_eqgan_module(batch_size=2, sample_every_kimg=0.1, di={"every_kimg": 0.002}, total_kimg=0.006)
    trainer = tiny_trainer(tmp_path, logger=CSVLogger(tmp_path, name="csv", version=""), log_every_n_steps=1)
    trainer.fit(module, datamodule=tiny_datamodule(2))
    assert module.progress.seen_img == 6
    with open(tmp_path / "csv" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert not any(k.startswith("metrics/DI") for k in rows[0]), "the training-time DI is not the paper's metric"
    di = [float(r["di_trainbatch/DI"]) for r in rows if r.get("di_trainbatch/DI")]
    align = [float(r["loss/G/align"]) for r in rows if r.get("loss/G/align")]
    assert len(di) == 3 and all(math.isfinite(v) for v in di)
    assert len(align) == 3 and all(v > 0 for v in align)
    cams = sorted((tmp_path / "samples").glob("cams*.png"))
    assert cams
    arr = np.asarray(Image.open(cams[-1]))
    # rows: fakes, 3 heatmap levels, 2 CAM levels (b32 does not exist in a 16x16 D); 2 samples per row
    assert arr.shape == (6 * RES, 2 * RES, 3)
    heat = arr[RES : 2 * RES, :RES].astype(np.float32)
    assert heat.max() == 255 or heat.max() > 200  # the b8 heatmap peaks near 1.01 -> white
    assert (tmp_path / "samples" / "fakes000000.png").is_file()
    assert module.G.synthesis.hm_conv0_b8.weight.grad is not None


def test_paper_style_di_through_the_evaluation_entry_point(tmp_path):
    """``evaluate.py --di``: fixed G and D of a checkpoint, seeded distinct reals of the given (held-out) set, every
    draw seeded (z, heatmaps, noise): the record equals evaluate_dataset_di and a second run repeats it."""
    from datamodules.embedded import EmbeddedImageDataset
    from experiments.evaluate import main
    from metrics.disequilibrium import evaluate_dataset_di
    from networks.checkpoint import save_networks

    torch.manual_seed(0)
    module = tiny_eqgan_module()
    net = tmp_path / "eqgan.pt"
    save_networks(net, {"G": module.G, "D": module.D, "G_ema": module.G_ema})
    out = tmp_path / "metrics.jsonl"
    argv = ["--network", str(net), "--metrics", "", "--data", "embedded:faces", "--di", "6", "--batch", "4"]
    first = main([*argv, "--out", str(out)])
    again = main([*argv, "--out", str(tmp_path / "again.jsonl")])
    assert [r["name"] for r in first] == ["di"] and first[0]["results"] == again[0]["results"]
    record = first[0]["protocol"]
    assert record["reals"] == "embedded:faces" and record["n_real"] == 6 and record["generator"] == "G"
    reals = EmbeddedImageDataset("faces", resolution=RES)
    direct = evaluate_dataset_di(module.G, module.D, reals, n_samples=6, batch_size=4)
    for key in ("DI", "D_real", "D_fake"):
        assert first[0]["results"][key] == pytest.approx(direct["results"][key], rel=1e-5, abs=1e-6)
    assert first[0]["results"]["DI"] == pytest.approx(direct["results"]["D_real"] - direct["results"]["D_fake"])
    assert out.read_text().count('"name": "di"') == 1
