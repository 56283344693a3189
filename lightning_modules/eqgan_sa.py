"""EqGAN-SA training (Wang et al., CVPR 2022, arXiv 2112.00718): StyleGAN2 + spatial heatmaps + GradCAM alignment.

A delta on :class:`lightning_modules.stylegan2_ada.StyleGAN2ADAModule` (genforce/eqgan-sa ``training/loss.py``):

- ``synthesis_inputs`` gives every G call its own heatmaps (``spatial=``) when the generator has SEL; they come
  back in the phase's ``fake`` record;
- ``gmain_loss`` adds ``G/align`` = Σ_l w_l · L_l (Sec. 3.2): GradCAM of D on the fakes at blocks b8/b16/b32,
  read from the taps of the ``gmain.fake`` pass and computed with ``torch.autograd.grad`` (no hooks, no state);
- the disequilibrium indicator (``metrics.disequilibrium``) is monitored during training on the reals of the batch
  D was just updated on and logged as ``di_trainbatch/DI`` (with ``di_trainbatch/D_real`` and ``D_fake``): an
  optimistic running estimate, not the paper-style number, which ``experiments/evaluate.py --di`` measures on
  held-out reals with fixed networks (``metrics.disequilibrium.evaluate_dataset_di``); heatmap and CAM grids are
  written as PNG and sent to the loggers with ``log_image``.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lightning_modules.config import ConfigError, check_choice, check_range, parse_block
from lightning_modules.gan import RealBatch
from lightning_modules.phases import Phase, PhaseOutput
from lightning_modules.stylegan2_ada import StyleGAN2ADAModule
from metrics.disequilibrium import DisequilibriumIndicator
from networks.eqgan_sa import LEVELS, HeatmapParams, render_heatmaps
from networks.image_output import to_uint8

log = logging.getLogger(__name__)

LEVEL_RES = {"b8": 8, "b16": 16, "b32": 32}  # D block whose output (4², 8², 16²) is GradCAM'd
CAM_RELU = ("per_channel", "after_sum")
# Log prefix of the training-time DI: measured on the reals of the batch D was just updated on.
DI_TRAIN = "di_trainbatch"


@dataclasses.dataclass
class EqGANConfig:
    """``model.eqgan``: ``ablation`` (a row label of ``variants``, checked against the built switches),
    ``align_loss`` (needs SEL), ``align_weight`` (1.0 [C]), ``level_weights`` (b8/b16/b32, [1, 1, 1] [C]),
    ``align_threshold`` (0.25 [C]), ``cam_relu`` (``per_channel`` [C] | ``after_sum``)."""

    ablation: str | None = None
    variants: dict[str, Any] | None = None
    align_loss: bool = True
    align_weight: float = 1.0
    level_weights: list[float] = dataclasses.field(default_factory=lambda: [1.0, 1.0, 1.0])
    align_threshold: float = 0.25
    cam_relu: str = "per_channel"

    def __post_init__(self):
        check_choice("model.eqgan.cam_relu", self.cam_relu, CAM_RELU)
        if len(self.level_weights) != len(LEVELS):
            raise ConfigError(f"model.eqgan.level_weights: expected {len(LEVELS)} weights, got {self.level_weights}")


@dataclasses.dataclass
class DIConfig:
    """``model.di``: the training-time DI monitor [X] (reals = the batch D was just updated on): ``enabled``,
    ``every_kimg`` (log window), ``interval`` (measure every k iterations), ``generator`` (``train`` | ``ema``),
    ``augment``."""

    enabled: bool = True
    every_kimg: float = 4.0
    interval: int = 1
    generator: str = "train"
    augment: bool = False

    def __post_init__(self):
        check_choice("model.di.generator", self.generator, ("train", "ema"))
        check_range("model.di.interval", self.interval, low=1)
        check_range("model.di.every_kimg", self.every_kimg, low=0, open_low=True)


# ------------------------------------------------------------------------------------------- GradCAM
def gradcam_weights(D: nn.Module, img: torch.Tensor, c: torch.Tensor, levels: list[str]) -> dict[str, torch.Tensor]:
    """α_{l,c} = spatial mean of ∂Σ softplus(−D(x̃))/∂A_l on a detached copy x̃, D in eval mode (Sec. 3.2).

    Returns ``{level: α [N, C]}`` (detached) for the D taps ``levels``. Uses ``autograd.grad``, so no parameter
    receives a gradient.
    """
    mode = D.training
    D.eval()
    try:
        with torch.enable_grad():
            x = img.detach().requires_grad_(True)
            logits, feats = D(x, c, taps=levels)
            grads = torch.autograd.grad(F.softplus(-logits).sum(), [feats[lvl] for lvl in levels])
    finally:
        D.train(mode)
    return {lvl: g.mean(dim=(2, 3)).detach() for lvl, g in zip(levels, grads)}


def gradcam(alpha: torch.Tensor, feats: torch.Tensor, relu: str = "per_channel") -> torch.Tensor:
    """CAM [N, 1, h, w]: Σ_c ReLU(α_c·A_c) (``per_channel``, the official form) or ReLU(Σ_c α_c·A_c) (Sec. 3.2)."""
    weighted = alpha[:, :, None, None].to(feats.dtype) * feats
    if relu == "per_channel":
        return weighted.relu().sum(dim=1, keepdim=True)
    if relu == "after_sum":
        return weighted.sum(dim=1, keepdim=True).relu()
    raise ValueError(f"eqgan.cam_relu: expected one of {CAM_RELU}, got {relu!r}")


def minmax_normalise(x: torch.Tensor) -> torch.Tensor:
    """Per-sample (x − min)/(max − min) with detached min/max; NaN → 0, +inf → 1 (Sec. 3.2)."""
    flat = x.detach().flatten(1)
    lo = flat.min(dim=1).values.view(-1, 1, 1, 1)
    hi = flat.max(dim=1).values.view(-1, 1, 1, 1)
    return torch.nan_to_num((x - lo) / (hi - lo), nan=0.0, posinf=1.0, neginf=0.0)


def normalise_cam(cam: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear upsampling (align_corners=True) to the image size, then per-sample min–max (Sec. 3.2)."""
    cam = F.interpolate(cam.float(), size=(size, size), mode="bilinear", align_corners=True)
    return minmax_normalise(cam)


def heatmap_target(level: str, maps: torch.Tensor) -> torch.Tensor:
    """Target H_l [N, 1, R, R]: L1 map as is; L2/L3 channel mean, per-sample min–max (Sec. 3.2)."""
    if level == "b8":
        return maps[:, :1]
    return minmax_normalise(maps.mean(dim=1, keepdim=True))


def thresholded_l1(cam: torch.Tensor, target: torch.Tensor, threshold: float = 0.25) -> torch.Tensor:
    """Mean of e = |CAM − H| over finite elements with e > threshold; plain mean if ≤ 1 such element (Sec. 3.2).

    Written without host syncs (masks and ``torch.where``).
    """
    e = (cam - target).abs()
    finite = torch.isfinite(e)
    e = torch.where(finite, e, torch.zeros_like(e))
    above = finite & (e > threshold)
    n_above = above.sum()
    mean_above = (e * above).sum() / n_above.clamp(min=1)
    mean_all = e.sum() / finite.sum().clamp(min=1)
    return torch.where(n_above > 1, mean_above, mean_all)


# ----------------------------------------------------------------------------------------- module
class EqGANModule(StyleGAN2ADAModule):
    """EqGAN-SA on the StyleGAN2-ADA base.

    Args (besides :class:`StyleGAN2ADAModule`'s):
        generator: ``networks.eqgan_sa.EqGANGenerator`` (``use_sel`` on/off) or a plain StyleGAN2 generator.
        eqgan: :class:`EqGANConfig`. di: :class:`DIConfig`.
        cam_grid: number of samples in the heatmap/CAM figure written with each sample grid.
    """

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        augment_pipe: nn.Module | None = None,
        eqgan: dict | None = None,
        di: dict | None = None,
        cam_grid: int = 8,
        **kwargs,
    ):
        self.eqgan_cfg = cfg = parse_block("model.eqgan", EqGANConfig, eqgan)
        self.di_cfg = parse_block("model.di", DIConfig, di)
        self.use_sel = bool(getattr(generator, "use_sel", False))
        if cfg.align_loss and not self.use_sel:
            raise ConfigError(
                "model.eqgan.align_loss=true needs a generator with SEL (model.generator.use_sel=true): the "
                "alignment target is the heatmap G was given"
            )
        if cfg.ablation is not None:
            self._check_ablation(cfg)
        super().__init__(generator, discriminator, augment_pipe=augment_pipe, **kwargs)
        self.di_metric = DisequilibriumIndicator()
        self._di_measured = 0
        self._next_di_kimg = self.di_cfg.every_kimg
        d_res = set(getattr(discriminator, "block_resolutions", []))
        self.align_levels = [lvl for lvl in LEVELS if LEVEL_RES[lvl] in d_res]
        skipped = [lvl for lvl in LEVELS if lvl not in self.align_levels]
        if cfg.align_loss and skipped:
            log.warning("EqGAN-SA: D has no block %s at this resolution: alignment levels %s skipped", skipped, skipped)
        if cfg.align_loss and self.align_levels:
            self.d_taps = {"gmain.fake": tuple(self.align_levels)}

    def _check_ablation(self, cfg: EqGANConfig) -> None:
        """``ablation`` names a row of ``variants`` ({use_sel, align_loss}); the built switches must match it."""
        variants = dict(cfg.variants or {})
        if cfg.ablation not in variants:
            raise ConfigError(
                f"model.eqgan.ablation: expected one of {sorted(variants)} (model.eqgan.variants), got {cfg.ablation!r}"
            )
        want = dict(variants[cfg.ablation])
        got = {"use_sel": self.use_sel, "align_loss": bool(cfg.align_loss)}
        if {k: bool(want.get(k)) for k in got} != got:
            raise ConfigError(
                f"model.eqgan.ablation={cfg.ablation} means {want}, but the model was built with {got} "
                "(set model.eqgan.ablation instead of model.generator.use_sel / model.eqgan.align_loss)"
            )

    # -------------------------------------------------------------------------------- generation
    def synthesis_inputs(self, z: torch.Tensor) -> dict:
        """Every G call gets fresh heatmaps (Sec. 3.1), returned in the pass's ``fake`` record."""
        if not self.use_sel:
            return {}
        return {"spatial": self.G.sample_heatmaps(z.shape[0], device=z.device)}

    # ------------------------------------------------------------------------------------ losses
    def gmain_loss(self, real: RealBatch) -> PhaseOutput:
        """Non-saturating G loss (base) + ``G/align`` (Sec. 3.2) from the ``gmain.fake`` pass's taps."""
        out = super().gmain_loss(real)
        if not self.eqgan_cfg.align_loss or not self.align_levels:
            return out
        fake, d_fake = out.records["fake"], out.records["d_fake"]
        per_level = self.alignment_loss(d_fake.input, fake.c, d_fake.taps, fake.inputs["spatial"])
        weights = dict(zip(LEVELS, self.eqgan_cfg.level_weights))
        total = sum(weights[lvl] * loss for lvl, loss in per_level.items())
        for lvl, loss in per_level.items():
            self.stats.report(f"align/{lvl}", loss)
        return PhaseOutput({**out.terms, "G/align": self.eqgan_cfg.align_weight * total}, out.records)

    def cams(self, img: torch.Tensor, c: torch.Tensor, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Normalised CAMs ``{level: [N, 1, R, R]}``: α from a detached pass, A = ``features`` (Sec. 3.2)."""
        alphas = gradcam_weights(self.D, img, c, self.align_levels)
        size = img.shape[-1]
        return {
            lvl: normalise_cam(gradcam(alphas[lvl], features[lvl], self.eqgan_cfg.cam_relu), size)
            for lvl in self.align_levels
        }

    def alignment_loss(
        self, img: torch.Tensor, c: torch.Tensor, features: dict[str, torch.Tensor], heatmaps
    ) -> dict[str, torch.Tensor]:
        """L_l = thresholded L1 between the normalised CAM and the heatmap target of level l (Sec. 3.2)."""
        size = img.shape[-1]
        if isinstance(heatmaps, HeatmapParams):
            heatmaps = render_heatmaps(heatmaps, size, self.G.synthesis.sampler.floor)
        cams = self.cams(img, c, features)
        out = {}
        for lvl, cam in cams.items():
            target = heatmaps[lvl]
            if target.shape[-1] != size:
                target = F.interpolate(target, size=(size, size), mode="bilinear", align_corners=True)
            out[lvl] = thresholded_l1(cam, heatmap_target(lvl, target), self.eqgan_cfg.align_threshold)
        return out

    # ------------------------------------------------------------------------------------------ DI
    def after_phase(self, phase: Phase, out: PhaseOutput) -> None:
        """After the D step, score the reals D was just updated on and fresh fakes (pure batches, D in eval mode)
        for the training-time DI monitor."""
        cfg = self.di_cfg
        if phase.name != "Dmain" or not cfg.enabled or self.progress.iteration % cfg.interval != 0:
            return
        real: RealBatch = out.records["real"]
        G = self.G_ema if cfg.generator == "ema" else self.G
        mode = self.D.training
        self.D.eval()
        try:
            with torch.no_grad():
                n = len(real)
                c = self.sample_c(n, real.c)
                z = self.sample_z(n)
                fake = G(z, c, **self.synthesis_inputs(z))
                img = real.img
                if cfg.augment:
                    img, fake = self.augment(img), self.augment(fake)
                self.di_metric.update(self.D(img, real.c), real=True)
                self.di_metric.update(self.D(fake, c), real=False)
                self._di_measured += 1
        finally:
            self.D.train(mode)

    def after_iteration(self) -> None:
        """Every ``di.every_kimg``: log ``di_trainbatch/DI`` (and the two means) over the window, then reset."""
        super().after_iteration()
        if not self.di_cfg.enabled or self.progress.kimg < self._next_di_kimg or self._di_measured == 0:
            return
        di = self.di_metric.compute()
        real, fake = self.di_metric.means()
        self.di_metric.reset()
        self._di_measured = 0
        self._next_di_kimg = self.progress.kimg + self.di_cfg.every_kimg
        self.log_dict(
            {f"{DI_TRAIN}/DI": di.float(), f"{DI_TRAIN}/D_real": real.float(), f"{DI_TRAIN}/D_fake": fake.float()},
            batch_size=self.global_batch,
        )

    # ----------------------------------------------------------------------------------- images
    @torch.no_grad()
    def render_grid(self) -> torch.Tensor:
        """The base grid with fixed heatmaps: sampled from a seeded stream that leaves training's RNG untouched."""
        if not self.use_sel:
            return super().render_grid()
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.hparams.seed + 987654321)
            return super().render_grid()

    def cam_figure(self, n: int) -> torch.Tensor:
        """uint8 grid rows: G_ema fakes, heatmap targets b8/b16/b32, D's normalised CAMs (same samples)."""
        gen = torch.Generator().manual_seed(self.hparams.seed + 555)
        z = self.grid_z[:n].to(self.device)
        c = torch.zeros([n, self.G.c_dim], device=self.device)
        if self.grid_c is not None:
            c = self.grid_c[:n].to(self.device)
        params = self.G_ema.sample_heatmaps(n, device=self.device, generator=gen)
        with torch.no_grad():
            img = self.G_ema(z, c, noise_mode="const", spatial=params)
        size = img.shape[-1]
        maps = render_heatmaps(params, size, self.G_ema.synthesis.sampler.floor)
        rows = [to_uint8(img)]
        for lvl in LEVELS:
            rows.append(to_uint8(heatmap_target(lvl, maps[lvl]).clamp(0, 1).expand(-1, 3, -1, -1), (0, 1)))
        if self.align_levels:
            with torch.no_grad():
                _, feats = self.D(img, c, taps=self.align_levels)
            for cam in self.cams(img, c, feats).values():
                rows.append(to_uint8(cam.expand(-1, 3, -1, -1), (0, 1)))
        channels = img.shape[1]
        return torch.cat([r[:, :channels] if channels < 3 else r for r in rows])

    def save_samples(self) -> None:
        """Base sample grid + ``cams<kimg>.png`` (fakes, heatmaps, CAMs) on rank 0, also sent with log_image."""
        super().save_samples()
        if not self.trainer.is_global_zero or not self.use_sel or self.hparams.cam_grid <= 0:
            return
        n = min(self.hparams.cam_grid, self.grid_z.shape[0])
        figure = self.cam_figure(n)
        caption = f"kimg {self.progress.kimg:.1f}: fakes / heatmaps b8 b16 b32 / CAMs {' '.join(self.align_levels)}"
        self.write_figure("cams", figure, (figure.shape[0] // n, n), caption)
