"""DepthGAN training: the seven phases and what each trains, rotation pairs, RGB-only style mixing, 4-channel R1,
config blocks, the demo end to end (RotEval falls), exact resume (budget ~40 s: about 25 s of CPU on one core)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict
from PIL import Image

from datamodules.embedded_indoor import EmbeddedIndoorDataModule
from lightning_modules.callbacks.checkpointing import KimgCheckpoint
from lightning_modules.config import ConfigError, check_keys
from lightning_modules.depthgan import DepthGANMetrics, DepthGANModule
from lightning_modules.gan import RealBatch
from networks.depthgan import DepthGANDiscriminator, DepthGANGenerator
from tests.lightning_modules.gan_helpers import tiny_trainer
from tests.test_configs import compose_experiment

RES = 32  # the smallest resolution of the switchable D


def tiny_depthgan(cls=DepthGANModule, **kwargs) -> DepthGANModule:
    G = DepthGANGenerator(
        z_dim_depth=8,
        z_dim_rgb=8,
        w_dim=16,
        img_resolution=RES,
        mapping_kwargs={"num_layers": 2},
        synthesis_kwargs={"channel_base": 256, "channel_max": 16},
    )
    D = DepthGANDiscriminator(
        img_resolution=RES, channel_base=256, channel_max=16, epilogue_kwargs={"mbstd_group_size": 2}
    )
    defaults = dict(
        batch_size=4,
        total_kimg=0.004,
        d_reg_interval=2,
        ema_kimg=0.01,
        sample_grid=(2, 2),
        sample_every_kimg=100,
        depthgan={"warp": {"focal": 260 * RES / 256}},
    )
    defaults.update(kwargs)
    return cls(G, D, **defaults)


def rgbd_datamodule(batch_size: int = 4, num_images: int = 8) -> EmbeddedIndoorDataModule:
    return EmbeddedIndoorDataModule(
        modality="rgbd", resolution=RES, num_images=num_images, batch_size=batch_size, num_workers=0, seed=0
    )


def rgbd_batch(n: int = 4) -> RealBatch:
    g = torch.Generator().manual_seed(0)
    return RealBatch(torch.rand(n, 4, RES, RES, generator=g) * 2 - 1, torch.zeros(n, 0))


class PhaseRecorder(DepthGANModule):
    """Records which of G.depth, G.rgb and D changed in each phase (through the public after_phase hook)."""

    def on_train_start(self):
        self.changes = []
        self._snap = self._nets()

    def _nets(self):
        nets = {"depth": self.G.depth, "rgb": self.G.rgb, "D": self.D}
        return {k: torch.cat([p.detach().flatten() for p in n.parameters()]).clone() for k, n in nets.items()}

    def after_phase(self, phase, out):
        now = self._nets()
        self.changes.append((phase.name, {k for k in now if not torch.equal(now[k], self._snap[k])}, sorted(out.terms)))
        self._snap = now


def test_each_phase_trains_only_its_networks_in_the_original_order(tmp_path):
    torch.manual_seed(0)
    module = tiny_depthgan(PhaseRecorder, total_kimg=0.008)
    ema_before = [p.clone() for p in module.G_ema.parameters()]
    tiny_trainer(tmp_path).fit(module, datamodule=rgbd_datamodule())
    expected = [
        ("Gmain", {"depth", "rgb"}, ["G/adv"]),
        ("Grot_depth", {"depth"}, ["G/rot_depth"]),
        ("Grot_rgb", {"rgb"}, ["G/rot_rgb"]),
        ("Gdepth_ce", {"rgb"}, ["G/depth_ce"]),
        ("Dmain", {"D"}, ["D/fake", "D/real"]),
        ("Ddepth_ce", {"D"}, ["D/depth_ce"]),
        ("Dreg", {"D"}, ["D/r1"]),
    ]
    assert module.changes[:7] == expected
    assert [c[0] for c in module.changes[7:]] == [name for name, _, _ in expected if name != "Dreg"]  # lazy R1
    assert module.progress.iteration == 2 and module.progress.seen_img == 8
    assert any(not torch.equal(a, b) for a, b in zip(ema_before, module.G_ema.parameters())), "G_ema not updated"
    # One Adam per network; G's with the path-length ratio 4/5 and D's with the R1 ratio (here 2/3).
    opts = {name: module.optimizer(name).param_groups[0] for name in ("G_depth", "G_rgb", "D")}
    assert opts["G_depth"]["lr"] == pytest.approx(0.0015 * 4 / 5) and opts["D"]["lr"] == pytest.approx(0.001)
    assert opts["G_rgb"]["betas"][1] == pytest.approx(0.99 ** (4 / 5))
    n_params = sum(len(g["params"]) for o in ("G_depth", "G_rgb") for g in module.optimizer(o).param_groups)
    assert n_params == len(list(module.G.parameters()))


def test_rotation_pairs_share_codes_so_equal_yaws_give_zero_rotation_losses(monkeypatch):
    torch.manual_seed(0)
    module = tiny_depthgan(style_mixing_prob=0.0)
    real = rgbd_batch(6)
    fake = module.run_pairs(real)
    assert fake.img.shape == (6, 4, RES, RES)
    assert torch.equal(fake.z[:3], fake.z[3:]) and not torch.equal(fake.inputs["yaw"][:3], fake.inputs["yaw"][3:])
    torch.manual_seed(1)
    apart = [
        float(module.depth_rotation_loss(real).terms["G/rot_depth"]),
        float(module.rgb_rotation_loss(real).terms["G/rot_rgb"]),
    ]
    monkeypatch.setattr(module.G, "sample_yaw", lambda n, device=None: torch.full([n], 0.1, device=device))
    torch.manual_seed(1)
    equal = [
        float(module.depth_rotation_loss(real).terms["G/rot_depth"]),
        float(module.rgb_rotation_loss(real).terms["G/rot_rgb"]),
    ]
    assert all(a > 0 for a in apart)
    assert equal[0] < 1e-3 * apart[0] and equal[1] < 1e-3 * apart[1], f"equal yaws {equal} vs independent {apart}"
    # The occlusion-aware variant compares both directions, only where the warped point is in front.
    occl = tiny_depthgan(style_mixing_prob=0.0, depthgan={"warp": {"focal": 32.5, "occlusion_aware": True}})
    assert len(occl.pair_warps(fake, with_rgb=False)) == 2 and len(module.pair_warps(fake, with_rgb=False)) == 1


def test_style_mixing_mixes_only_the_rgb_path_from_a_cutoff():
    module = tiny_depthgan(style_mixing_prob=1.0)
    z = torch.randn(4, module.G.z_dim, generator=torch.Generator().manual_seed(1))
    c = torch.zeros(4, 0)
    z_depth, z_rgb = module.G.split_z(z)
    plain = module.G.rgb.mapping(z_rgb, c)
    cutoffs = set()
    for seed in range(8):
        torch.manual_seed(seed)
        fake = module.run_G(z, c, update_emas=False)
        assert torch.equal(fake.inputs["ws_depth"], module.G.depth.mapping(z_depth, c))
        same = (fake.ws == plain).all(dim=2).all(dim=0)
        cutoff = int(same.long().argmin())
        assert same[:cutoff].all() and not same[cutoff:].any()
        cutoffs.add(cutoff)
    assert cutoffs <= set(range(1, plain.shape[1])) and len(cutoffs) > 1


def test_r1_and_depth_ce_see_the_right_inputs():
    torch.manual_seed(0)
    module = tiny_depthgan()
    real = rgbd_batch()
    r1 = module.dreg_loss(real)
    assert r1.records["d_real"].input.shape[1] == 4, "R1 on the 4-channel RGB-D input"
    (g_depth,) = torch.autograd.grad(r1.terms["D/r1"], module.D.fromdepth.weight, allow_unused=True)
    assert g_depth is not None and g_depth.abs().sum() > 0, "the depth channel enters the R1 penalty"
    ce = module.d_depth_loss(real)
    assert ce.records["d_real"].input.shape[1] == 3 and ce.records["d_real"].taps["depth_logits"].shape == (
        4,
        10,
        RES,
        RES,
    )
    (g_stem,) = torch.autograd.grad(ce.terms["D/depth_ce"], module.D.fromdepth.weight)
    assert torch.count_nonzero(g_stem) == 0, "RGB-only switch: the depth stem gets no gradient"
    # A perfect depth head gives CE ~ 0: the targets are the 10 bins of the real depth.
    bins = torch.floor((real.img[:, 3] + 1) / 2 * 10).clamp(0, 9).long()
    logits = torch.nn.functional.one_hot(bins, 10).permute(0, 3, 1, 2).float() * 50
    assert float(torch.nn.functional.cross_entropy(logits, bins)) < 1e-6


def test_config_blocks_are_validated_naming_the_key():
    with pytest.raises(ConfigError, match=r"model\.depthgan\.weights\.drot"):
        tiny_depthgan(depthgan={"weights": {"drot": -1.0}})
    with pytest.raises(ConfigError, match=r"model\.depthgan\.warp\.focul"):
        tiny_depthgan(depthgan={"warp": {"focul": 1.0}})
    with pytest.raises(ConfigError, match=r"model\.r1_gama"):
        check_keys({"_target_": "lightning_modules.depthgan.DepthGANModule", "r1_gama": 1.0})
    with pytest.raises(ConfigError, match=r"model\.pl_weight.*not used by DepthGANModule"):
        check_keys({"_target_": "lightning_modules.depthgan.DepthGANModule", "pl_weight": 2.0})
    with pytest.raises(ValueError, match=r"RGB-D batches \[N, 4, H, W\]"):
        tiny_depthgan().preprocess_batch((torch.zeros(2, 3, RES, RES, dtype=torch.uint8), torch.zeros(2, 0)))
    with pytest.raises(ConfigError, match=r"metrics\.roteval.*n_fakes"):
        DepthGANMetrics(roteval={"n_fakes": 8})
    # A weight of 0 disables its phase.
    off = tiny_depthgan(depthgan={"weights": {"rgbrot": 0.0}}, r1_gamma=0.0)
    assert {p.name for p in off.phases if p.runs_at(0)} == {"Gmain", "Grot_depth", "Gdepth_ce", "Dmain", "Ddepth_ce"}


ROWS = {
    "bedroom256": (0.5, 0.5, 256),
    "bedroom128": (0.3, 0.3, 128),
    "kitchen256": (0.4, 0.5, 256),
    "kitchen128": (0.3, 0.3, 128),
}


@pytest.mark.parametrize("row", sorted(ROWS))
def test_lsun_experiments_compose_with_the_scripts_weights(row):
    cfg = compose_experiment(f"depthgan_lsun_{row}")
    rgbrot, gamma, res = ROWS[row]
    model = cfg.model
    check_keys(model)
    assert (model.r1_gamma, model.depthgan.weights.rgbrot) == (gamma, rgbrot)
    assert dict(model.depthgan.weights) == {"drot": 50.0, "rgbrot": rgbrot, "gdepth": 0.001, "ddepth": 0.8}
    assert (model.lr, model.d_reg_interval, model.g_reg_interval, model.ema_kimg, cfg.data.batch_size) == (
        0.0015,
        16,
        4,
        20,
        64,
    )
    assert cfg.data.resolution == res and model.generator.img_resolution == res
    metrics = instantiate(cfg.metrics)
    assert metrics.roteval.focal == 260.0 and metrics.fid_depth.n_fake == metrics.roteval.n_fake == 50000
    assert (metrics.fid_rgb.reference, metrics.fid_rgb.noise_mode) == ("full", "none")


def test_demo_trains_end_to_end_and_its_rotation_error_falls(tmp_path):
    """The demo's config (shortened), its metrics callback: RotEval of G_ema at kimg 0 and at the end."""
    cfg = compose_experiment("depthgan_demo")
    with open_dict(cfg):
        cfg.data.num_images = 32
        cfg.data.batch_size = 8
        cfg.model.total_kimg = 0.128
        cfg.model.sample_every_kimg = 100
        cfg.model.sample_grid = [2, 3]
        cfg.metrics.roteval.n_fake = 32
    OmegaConf.resolve(cfg)
    check_keys(cfg.model)
    torch.manual_seed(0)
    module = instantiate(cfg.model, _convert_="partial")
    metrics = instantiate(cfg.metrics)
    assert isinstance(metrics, DepthGANMetrics) and metrics.roteval.focal == 32.5
    datamodule = instantiate(cfg.data)
    skips = instantiate(cfg.callbacks.data_skips)  # data/skipped, the datamodule's count of skipped files
    tiny_trainer(tmp_path, callbacks=[metrics, skips]).fit(module, datamodule=datamodule)
    assert datamodule.skipped == 0
    assert module.progress.iteration == 16
    records = [json.loads(line) for line in (tmp_path / "metric-roteval256.jsonl").read_text().splitlines()]
    assert [r["kimg"] for r in records] == [0.0, 0.128]
    before, after = (r["results"]["roteval256_depth"] for r in records)
    assert math.isfinite(before) and after < 0.9 * before, f"RotEval depth {before:.4f} -> {after:.4f}"
    assert records[0]["protocol"]["n_fake"] == 32 and records[0]["protocol"]["focal"] == 32.5
    for name in ("rgbd", "yaw_sweep"):
        grid = np.asarray(Image.open(tmp_path / "samples" / f"{name}000000.png"))
        assert grid.shape == (4 * RES, 3 * RES, 3)
        depth_row = grid[RES : 2 * RES]
        assert (depth_row[..., 0] == depth_row[..., 2]).all(), "depth rows are grey"


def test_resume_is_exact(tmp_path):
    """Uninterrupted 4 iterations == 2 iterations, checkpoint, resume to 4 (every tensor of the state dict)."""

    def fit(name, kimg, callbacks=(), ckpt_path=None):
        module = tiny_depthgan(total_kimg=kimg, d_reg_interval=3)
        tiny_trainer(tmp_path / name, callbacks=callbacks).fit(
            module, datamodule=rgbd_datamodule(), ckpt_path=ckpt_path
        )
        return module

    torch.manual_seed(0)
    full = fit("full", 0.016)
    torch.manual_seed(0)
    fit("part", 0.008, callbacks=[KimgCheckpoint(str(tmp_path / "ckpt"), every_kimg=100)])
    torch.manual_seed(123)  # another global state: the checkpoint restores its own streams
    resumed = fit("resumed", 0.016, ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    assert full.progress.iteration == resumed.progress.iteration == 4
    ref, got = full.state_dict(), resumed.state_dict()
    assert ref.keys() == got.keys()
    for k in ref:
        assert torch.equal(ref[k], got[k]), f"resume diverged at {k}"
