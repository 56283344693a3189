"""DepthGAN training (Shi et al., "3D-Aware Indoor Scene Synthesis with Depth Priors", ECCV 2022, arXiv 2202.08553,
Sec. 3): the seven steps of VivianSZF/depthgan runners/depthgan_runner.py ``train_step`` as phases of the base engine,
with the losses of runners/losses/depthgan_loss.py.

A delta on :class:`~lightning_modules.stylegan2_ada.StyleGAN2ADAModule`: ``run_G`` returns the dual-path generator's
fakes as 4-channel RGB-D images and ``run_D`` calls the switchable discriminator, so the StyleGAN2 adversarial
losses and the lazy R1 are reused as they are, on the 4-channel input. Per iteration, each phase with fresh samples
and its own optimiser step:

=============  ==================  ============================================================================
phase          trains              loss
=============  ==================  ============================================================================
Gmain          G.depth + G.rgb     softplus(-D([rgb, depth]))
Grot_depth     G.depth             drot * L1(mask * z2(warped), mask * z_rot) on pairs sharing both codes
Grot_rgb       G.rgb               rgbrot * L1(mask * rgb2(warped), mask * rgb1) on such pairs
Gdepth_ce      G.rgb               gdepth * CE(D_head(rgb), bins(depth))
Dmain          D                   softplus(D(fake RGB-D)) + softplus(-D(real RGB-D))
Ddepth_ce      D                   ddepth * CE(D_head(real rgb), bins(real depth))
Dreg           D                   R1 (gamma / 2) ||dD/dx||^2 on the real 4-channel input, every 16 iterations
=============  ==================  ============================================================================

Path-length regularisation is off in every original script (``--pl_weight=0``) and has no phase; its interval
still scales G's Adam (lr * 4/5, beta ** (4/5)) as configs/depthgan_config.py does (``g_reg_interval``). A rotation
pair is ``n / 2`` codes repeated twice with independent yaws; view 1 (first half) is warped into view 2 with
:func:`networks.depth_warp.rotation_warp`. Style mixing applies to the RGB path only (the depth path ignores it in
the original), through the base's draw; the two halves of a pair mix with different second latents, as in the
original. Lazy R1 runs at 0-based iterations 0, 16, 32, ..., i.e. the original's ``iter % 16 == 1`` on its
1-based counter. G_ema is the EMA of the whole dual-path generator (both paths, the original's two smoothed
copies).

:class:`DepthGANMetrics` runs FID-RGB, FID-depth and RotEval (:func:`metrics.depthgan.evaluate_depthgan`) as the
training-time metrics callback.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lightning_modules.callbacks.metrics import MetricsCallback
from lightning_modules.config import ConfigError, check_range, parse_block
from lightning_modules.gan import RealBatch
from lightning_modules.phases import OptimizerSpec, Phase, PhaseOutput
from lightning_modules.stylegan2_ada import DOutput, FakeBatch, StyleGAN2ADAModule
from metrics.depthgan import RotEvalProtocol, evaluate_depthgan
from metrics.protocol import MetricProtocol
from networks.depth_warp import (
    DEFAULT_FOCAL,
    DEFAULT_Z_OFFSET,
    RotationWarp,
    rotation_warp,
    warp_depth_l1,
    warp_rgb_l1,
)
from networks.depthgan import depth_bins
from networks.image_output import to_uint8

DEPTH_LOGITS = "depth_logits"


@dataclasses.dataclass
class LossWeights:
    """``model.depthgan.weights``: ``--drotloss``, ``--rgbrotloss``, ``--gdloss``, ``--ddloss`` of the original
    scripts [C]; 0 disables the phase."""

    drot: float = 50.0
    rgbrot: float = 0.5
    gdepth: float = 0.001
    ddepth: float = 0.8

    def __post_init__(self):
        for f in dataclasses.fields(self):
            check_range(f"model.depthgan.weights.{f.name}", getattr(self, f.name), low=0)


@dataclasses.dataclass
class WarpConfig:
    """``model.depthgan.warp``: intrinsics of :func:`~networks.depth_warp.rotation_warp` (f = 260 px and
    z = (d + 1) / 2 + 0.13 [C]) and the original's optional occlusion-aware variant (off [C]; when on, both
    directions of a pair are compared where the warped point is in front, as ``occlusion_aware=True`` upstream)."""

    focal: float = DEFAULT_FOCAL
    z_offset: float = DEFAULT_Z_OFFSET
    occlusion_aware: bool = False

    def __post_init__(self):
        check_range("model.depthgan.warp.focal", self.focal, low=0, open_low=True)


@dataclasses.dataclass
class DepthGANConfig:
    """``model.depthgan``: loss weights and warp."""

    weights: LossWeights = dataclasses.field(default_factory=LossWeights)
    warp: WarpConfig = dataclasses.field(default_factory=WarpConfig)


def rgbd_rows(rgb: torch.Tensor, depth: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """uint8 [2 * rows * cols, 3, H, W] for a (2 * rows, cols) grid: each row of RGB images above its depth maps
    (grey, near = dark)."""
    rgb8 = to_uint8(rgb).unflatten(0, (rows, cols))
    depth8 = to_uint8(depth).expand(-1, 3, -1, -1).unflatten(0, (rows, cols))
    return torch.stack([rgb8, depth8], dim=1).flatten(0, 2)


class DepthGANModule(StyleGAN2ADAModule):
    """DepthGAN on the base engine.

    Args:
        generator: :class:`networks.depthgan.DepthGANGenerator` (unconditional).
        discriminator: :class:`networks.depthgan.DepthGANDiscriminator` (its ``num_bins`` sets the depth classes).
        depthgan: ``model.depthgan`` (:class:`DepthGANConfig`): loss weights and warp.
        lr / d_lr / betas / eps: Adam of G.depth, G.rgb (one optimiser each) and D (d_lr None: lr).
        r1_gamma, d_reg_interval: lazy R1 on the real RGB-D input (0 disables it).
        g_reg_interval: the lazy ratio of G's Adam (the original keeps it with path length off).
        style_mixing_prob: mixing probability of the RGB path's ws.
        batch_size, total_kimg, ema_kimg, ema_rampup, seed, sample_grid, sample_every_kimg, sample_truncation_psi,
            init_from: as :class:`~lightning_modules.gan.GANModule`.
    """

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        depthgan: dict | None = None,
        batch_size: int = 64,
        total_kimg: float = 25000,
        lr: float = 0.0015,
        d_lr: float | None = None,
        betas: tuple[float, float] = (0.0, 0.99),
        eps: float = 1e-8,
        r1_gamma: float = 0.5,
        style_mixing_prob: float = 0.9,
        g_reg_interval: int | None = 4,
        d_reg_interval: int | None = 16,
        ema_kimg: float = 20.0,
        ema_rampup: float | None = None,
        seed: int = 0,
        sample_grid: tuple[int, int] = (4, 8),
        sample_every_kimg: float = 40.0,
        sample_truncation_psi: float = 1.0,
        init_from: str | None = None,
    ):
        for part in ("depth", "rgb", "sample_yaw"):
            if not hasattr(generator, part):
                raise ConfigError(
                    "model.generator: DepthGAN needs networks.depthgan.DepthGANGenerator, "
                    f"got {type(generator).__name__}"
                )
        if getattr(generator, "c_dim", 0):
            raise ConfigError(f"model.generator.c_dim={generator.c_dim}: DepthGAN is unconditional (c_dim must be 0)")
        if not hasattr(discriminator, "num_bins"):
            raise ConfigError(
                "model.discriminator: DepthGAN needs networks.depthgan.DepthGANDiscriminator, "
                f"got {type(discriminator).__name__}"
            )
        super().__init__(
            generator,
            discriminator,
            batch_size=batch_size,
            total_kimg=total_kimg,
            lr=lr,
            d_lr=d_lr,
            betas=betas,
            eps=eps,
            r1_gamma=r1_gamma,
            pl_weight=0.0,
            style_mixing_prob=style_mixing_prob,
            g_reg_interval=g_reg_interval,
            d_reg_interval=d_reg_interval,
            ema_kimg=ema_kimg,
            ema_rampup=ema_rampup,
            seed=seed,
            sample_grid=sample_grid,
            sample_every_kimg=sample_every_kimg,
            sample_truncation_psi=sample_truncation_psi,
            init_from=init_from,
        )
        check_range("model.r1_gamma", r1_gamma, low=0)
        self.cfg = cfg = parse_block("model.depthgan", DepthGANConfig, depthgan)
        grid = torch.Generator().manual_seed(seed + 987654321)
        self.register_buffer("grid_yaw", generator.sample_yaw(len(self.grid_z), generator=grid), persistent=False)
        w = cfg.weights
        d_every = (d_reg_interval or 0) if r1_gamma > 0 else 0
        self.phases = [
            Phase("Gmain", ("G_depth", "G_rgb"), self.gmain_loss),
            Phase("Grot_depth", ("G_depth",), self.depth_rotation_loss, interval=int(w.drot > 0)),
            Phase("Grot_rgb", ("G_rgb",), self.rgb_rotation_loss, interval=int(w.rgbrot > 0)),
            Phase("Gdepth_ce", ("G_rgb",), self.g_depth_loss, interval=int(w.gdepth > 0)),
            Phase("Dmain", ("D",), self.dmain_loss),
            Phase("Ddepth_ce", ("D",), self.d_depth_loss, interval=int(w.ddepth > 0)),
            Phase("Dreg", ("D",), self.dreg_loss, interval=d_every, gain=d_every or 1),
        ]

    def optimizer_specs(self) -> list[OptimizerSpec]:
        """Adam for G.depth, G.rgb and D; G's with the PL-interval ratio, D's with the R1-interval ratio."""
        hp = self.hparams
        common = dict(betas=tuple(hp.betas), eps=hp.eps)
        return [
            OptimizerSpec("G_depth", self.G.depth.parameters, hp.lr, reg_interval=hp.g_reg_interval, **common),
            OptimizerSpec("G_rgb", self.G.rgb.parameters, hp.lr, reg_interval=hp.g_reg_interval, **common),
            OptimizerSpec("D", self.D.parameters, hp.d_lr or hp.lr, reg_interval=hp.d_reg_interval, **common),
        ]

    def preprocess_batch(self, batch) -> RealBatch:
        real = super().preprocess_batch(batch)
        if real.img.ndim != 4 or real.img.shape[1] != 4:
            raise ValueError(
                f"DepthGAN trains on RGB-D batches [N, 4, H, W] (data=embedded_indoor_rgbd or lsun_*_rgbd), got "
                f"{list(real.img.shape)}"
            )
        return real

    # ------------------------------------------------------------- networks
    def run_G(self, z: torch.Tensor, c: torch.Tensor, update_emas: bool = True) -> FakeBatch:
        """Fakes at yaws ~ U(yaw_range) (drawn on the device): ``img`` = [RGB, depth] [N, 4, H, W], ``ws`` = the
        RGB path's (mixed) ws, ``inputs`` = {"yaw": [N], "ws_depth": the depth path's ws}."""
        G = self.G
        z_depth, z_rgb = G.split_z(z)
        yaw = G.sample_yaw(z.shape[0], z.device)
        ws_depth = G.depth.mapping(z_depth, c, update_emas=update_emas)
        ws_rgb = G.rgb.mapping(z_rgb, c, update_emas=update_emas)
        if self.hparams.style_mixing_prob > 0:
            ws_rgb = self.mix_styles(ws_rgb, z_rgb, c, mapping=G.rgb.mapping)
        rgb, depth = G.synthesize(ws_depth, ws_rgb, yaw)
        return FakeBatch(z, c, ws_rgb, torch.cat([rgb, depth], dim=1), {"yaw": yaw, "ws_depth": ws_depth})

    def run_D(self, img: torch.Tensor, c: torch.Tensor, pass_name: str | None = None, taps=()) -> DOutput:
        """D on RGB-D [N, 4, H, W] or, switched, RGB [N, 3, H, W]; the depth-bin logits [N, bins, H, W] are the
        record's tap ``depth_logits``. No augmentation (no ADA in the original) and no other taps."""
        if taps or self.d_taps.get(pass_name):
            raise ValueError(
                f"DepthGAN's discriminator has no feature taps (asked for {taps or self.d_taps[pass_name]})"
            )
        logits, depth_logits = self.D(img, c)
        return DOutput(logits, img, {DEPTH_LOGITS: depth_logits})

    def run_pairs(self, real: RealBatch) -> FakeBatch:
        """Rotation pairs (``run_G(repeat=True)`` of the original): n // 2 codes twice, independent yaws."""
        m = max(len(real) // 2, 1)
        return self.run_G(self.sample_z(m).repeat(2, 1), self.sample_c(m, real.c).repeat(2, 1))

    def pair_warps(self, fake: FakeBatch, with_rgb: bool) -> list[tuple[slice, RotationWarp]]:
        """(view-1 slice, warp of view 1 into view 2) for each compared direction of the pairs of ``fake``."""
        cfg = self.cfg.warp
        m = fake.img.shape[0] // 2
        rgb, depth, yaw = fake.img[:, :3], fake.img[:, 3:], fake.inputs["yaw"]
        first, second = slice(0, m), slice(m, 2 * m)
        directions = [(first, second), (second, first)] if cfg.occlusion_aware else [(first, second)]
        return [
            (
                a,
                rotation_warp(
                    depth[a],
                    yaw[a],
                    yaw[b],
                    depth[b],
                    rgb[b] if with_rgb else None,
                    focal=cfg.focal,
                    z_offset=cfg.z_offset,
                    occlusion_aware=cfg.occlusion_aware,
                ),
            )
            for a, b in directions
        ]

    # -------------------------------------------------------------- losses
    def depth_rotation_loss(self, real: RealBatch) -> PhaseOutput:
        """drot * L1(mask * z2 at the warped pixels, mask * z_rot) (``d_rot_loss``); only G.depth is trained."""
        fake = self.run_pairs(real)
        loss = sum(warp_depth_l1(w) for _, w in self.pair_warps(fake, with_rgb=False))
        return PhaseOutput({"G/rot_depth": self.cfg.weights.drot * loss}, {"fake": fake})

    def rgb_rotation_loss(self, real: RealBatch) -> PhaseOutput:
        """rgbrot * L1(mask * rgb2 at the warped pixels, mask * rgb1) (``rgb_rot_loss``); only G.rgb is trained."""
        fake = self.run_pairs(real)
        rgb = fake.img[:, :3]
        loss = sum(warp_rgb_l1(w, rgb[a]) for a, w in self.pair_warps(fake, with_rgb=True))
        return PhaseOutput({"G/rot_rgb": self.cfg.weights.rgbrot * loss}, {"fake": fake})

    def g_depth_loss(self, real: RealBatch) -> PhaseOutput:
        """gdepth * CE(D's depth head on the fake RGB, bins of the fake depth) (``g_depth_loss``); G.rgb only."""
        n = len(real)
        fake = self.run_G(self.sample_z(n), self.sample_c(n, real.c))
        d_fake = self.run_D(fake.img[:, :3], fake.c, "gdepth.fake")
        ce = F.cross_entropy(d_fake.taps[DEPTH_LOGITS], depth_bins(fake.img[:, 3], self.D.num_bins))
        return PhaseOutput({"G/depth_ce": self.cfg.weights.gdepth * ce}, {"fake": fake, "d_fake": d_fake})

    def d_depth_loss(self, real: RealBatch) -> PhaseOutput:
        """ddepth * CE(D's depth head on the real RGB, bins of the real depth) (``d_depth_loss``); D only."""
        d_real = self.run_D(real.img[:, :3].detach(), real.c, "ddepth.real")
        ce = F.cross_entropy(d_real.taps[DEPTH_LOGITS], depth_bins(real.img[:, 3], self.D.num_bins))
        return PhaseOutput({"D/depth_ce": self.cfg.weights.ddepth * ce}, {"real": real, "d_real": d_real})

    # ------------------------------------------------------------- figures
    @torch.no_grad()
    def render_rgbd(self, z: torch.Tensor, yaw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """G_ema's (rgb, depth) for latents ``z`` at yaws ``yaw`` (no random draw)."""
        psi = self.hparams.sample_truncation_psi
        z, yaw = z.to(self.device), yaw.to(self.device)
        c = torch.zeros([z.shape[0], 0], device=self.device)
        out = [
            self.G_ema(zi, ci, yaw=yi, truncation_psi=psi, return_depth=True)
            for zi, ci, yi in zip(z.split(16), c.split(16), yaw.split(16), strict=True)
        ]
        return torch.cat([o[0] for o in out]), torch.cat([o[1] for o in out])

    def render_grid(self) -> torch.Tensor:
        """The fixed-latent RGB-D grid (fixed yaws): uint8 [2 * rows * cols, 3, H, W], RGB rows over depth rows."""
        rows, cols = self.hparams.sample_grid
        return rgbd_rows(*self.render_rgbd(self.grid_z, self.grid_yaw), rows, cols)

    def render_yaw_sweep(self) -> torch.Tensor:
        """The first ``rows`` grid latents at ``cols`` yaws spanning yaw_range, laid out as :meth:`render_grid`."""
        rows, cols = self.hparams.sample_grid
        lo, hi = self.G_ema.yaw_range
        yaw = torch.linspace(lo, hi, cols).repeat(rows)
        return rgbd_rows(*self.render_rgbd(self.grid_z[:rows].repeat_interleave(cols, dim=0), yaw), rows, cols)

    def save_samples(self) -> None:
        """``samples/rgbd<kimg>.png`` and ``samples/yaw_sweep<kimg>.png`` (rank 0), also sent to the loggers."""
        if not self.trainer.is_global_zero:
            return
        rows, cols = self.hparams.sample_grid
        kimg = self.progress.kimg
        lo, hi = (math.degrees(v) for v in self.G_ema.yaw_range)
        self.write_figure("rgbd", self.render_grid(), (2 * rows, cols), f"kimg {kimg:.1f}: RGB rows above their depth")
        caption = f"kimg {kimg:.1f}: yaw {lo:.0f} to {hi:.0f} degrees, left to right; RGB rows above their depth"
        self.write_figure("yaw_sweep", self.render_yaw_sweep(), (2 * rows, cols), caption)


class DepthGANMetrics(MetricsCallback):
    """FID-RGB, FID-depth and RotEval of G_ema (:func:`metrics.depthgan.evaluate_depthgan`) every ``every_kimg``
    and at the end of training; schedule, logging (``metrics/<name>``, ``metric-<name>.jsonl``) and checkpoint
    state are :class:`~lightning_modules.callbacks.metrics.MetricsCallback`'s.

    Args:
        fid_rgb / fid_depth: :class:`~metrics.protocol.MetricProtocol` dicts (``metric: fid``) or None.
        roteval: :class:`~metrics.depthgan.RotEvalProtocol` dict or None.
        every_kimg, detectors_dir, cache_dir, detector, batch_size, num_workers, at_train_end, at_train_start: as
            :class:`MetricsCallback` (``detector`` overrides the FIDs' detector).
    """

    def __init__(
        self,
        fid_rgb: dict | None = None,
        fid_depth: dict | None = None,
        roteval: dict | None = None,
        every_kimg: float = 50,
        detectors_dir: str | None = None,
        cache_dir: str | None = None,
        detector: str | None = None,
        batch_size: int = 32,
        num_workers: int = 0,
        at_train_end: bool = True,
        at_train_start: bool = False,
    ) -> None:
        super().__init__(
            [], every_kimg, detectors_dir, cache_dir, None, batch_size, num_workers, at_train_end, at_train_start
        )
        self.fid_rgb = self._fid("fid_rgb", fid_rgb, detector)
        self.fid_depth = self._fid("fid_depth", fid_depth, detector)
        try:
            self.roteval = RotEvalProtocol(**dict(roteval)) if roteval else None
        except TypeError as e:
            fields = sorted(f.name for f in dataclasses.fields(RotEvalProtocol))
            raise ConfigError(f"metrics.roteval: {e} (keys of metrics.roteval: {fields})") from None
        if not (self.fid_rgb or self.fid_depth or self.roteval):
            raise ConfigError("metrics: DepthGANMetrics needs at least one of fid_rgb, fid_depth, roteval")
        if self.fid_rgb and self.fid_depth and self.fid_rgb.reference != self.fid_depth.reference:
            raise ConfigError("metrics.fid_rgb.reference and metrics.fid_depth.reference must be the same set")
        if not all(p.use_ema for p in (self.fid_rgb, self.fid_depth, self.roteval) if p):
            raise ConfigError("metrics: DepthGANMetrics evaluates G_ema; set use_ema: true in every protocol")

    @staticmethod
    def _fid(key: str, given: dict | None, detector: str | None) -> MetricProtocol | None:
        if not given:
            return None
        proto = MetricProtocol.from_dict(dict(given))
        if proto.metric != "fid" or proto.reference == "custom":
            raise ConfigError(f"metrics.{key}: expected metric: fid against reference full or train_subset")
        return dataclasses.replace(proto, detector=detector) if detector else proto

    def evaluate(self, trainer, pl_module, log_callback_metrics: bool = False) -> list[dict[str, Any]]:
        """Run the protocols now (all ranks) and log the numbers with their protocol records."""
        self._last_seen = pl_module.progress.seen_img
        fid = self.fid_rgb or self.fid_depth
        reference = self._reference(trainer, pl_module, fid) if fid else None
        results = evaluate_depthgan(
            pl_module.G_ema,
            reference,
            self._detector,
            self.fid_rgb,
            self.fid_depth,
            self.roteval,
            cache_dir=self.cache_dir,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            extra_record={"generator": "G_ema"},
        )
        self.publish(trainer, pl_module, results, log_callback_metrics)
        return results
