"""EqGAN-SA training (Wang et al., CVPR 2022): StyleGAN2 + spatial heatmaps + GradCAM alignment loss.

Spec ``eqgan_sa.md`` §3 (losses), §6 (DI), §10 (config), §11 (suite improvements). A delta on
:class:`lightning_modules.gan.AdversarialModule`:

- ``run_G`` feeds every G call its own heatmaps (``spatial=``) when the generator has SEL;
- ``gmain_loss`` adds ``G/align`` = Σ_l w_l · L_l (§3): GradCAM of D on the fakes at blocks b8/b16/b32, computed
  with ``torch.autograd.grad`` on the block outputs (no backward hooks, no global state, §11);
- the disequilibrium indicator (``metrics.disequilibrium``) is measured during training and logged as
  ``metrics/DI``; heatmap and CAM grids are written as PNG and sent to the loggers with ``log_image``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from datamodules.imageio import save_image_grid, to_uint8
from lightning_modules.gan import AdversarialModule
from metrics.disequilibrium import DisequilibriumIndicator
from networks.eqgan_sa import LEVELS, HeatmapParams, render_heatmaps

log = logging.getLogger(__name__)

LEVEL_RES = {"b8": 8, "b16": 16, "b32": 32}  # D block whose output (4², 8², 16²) is GradCAM'd, spec §2.4
CAM_RELU = ("per_channel", "after_sum")
EQGAN_DEFAULTS = dict(
    ablation=None,
    variants=None,
    align_loss=True,
    align_weight=1.0,
    level_weights=[1.0, 1.0, 1.0],
    align_threshold=0.25,
    cam_relu="per_channel",
)
DI_DEFAULTS = dict(enabled=True, every_kimg=4.0, interval=1, generator="train", augment=False)


# ------------------------------------------------------------------------------------------- GradCAM
def gradcam_weights(
    D: nn.Module, img: torch.Tensor, c: torch.Tensor, resolutions: list[int]
) -> dict[int, torch.Tensor]:
    """α_{l,c} = spatial mean of ∂Σ softplus(−D(x̃))/∂A_l on a detached copy x̃, D in eval mode (§3 step 1).

    Returns ``{block res: α [N, C]}`` (detached). Uses ``autograd.grad``, so no parameter receives a gradient.
    """
    mode = D.training
    D.eval()
    try:
        with torch.enable_grad():
            x = img.detach().requires_grad_(True)
            logits, feats = D(x, c, return_features=True)
            grads = torch.autograd.grad(F.softplus(-logits).sum(), [feats[r] for r in resolutions])
    finally:
        D.train(mode)
    return {r: g.mean(dim=(2, 3)).detach() for r, g in zip(resolutions, grads)}


def gradcam(alpha: torch.Tensor, feats: torch.Tensor, relu: str = "per_channel") -> torch.Tensor:
    """CAM [N, 1, h, w]: Σ_c ReLU(α_c·A_c) (``per_channel``, the official form) or ReLU(Σ_c α_c·A_c) (§3 step 2)."""
    weighted = alpha[:, :, None, None].to(feats.dtype) * feats
    if relu == "per_channel":
        return weighted.relu().sum(dim=1, keepdim=True)
    if relu == "after_sum":
        return weighted.sum(dim=1, keepdim=True).relu()
    raise ValueError(f"eqgan.cam_relu: expected one of {CAM_RELU}, got {relu!r}")


def minmax_normalise(x: torch.Tensor) -> torch.Tensor:
    """Per-sample (x − min)/(max − min) with detached min/max; NaN → 0, +inf → 1 (§3 step 3)."""
    flat = x.detach().flatten(1)
    lo = flat.min(dim=1).values.view(-1, 1, 1, 1)
    hi = flat.max(dim=1).values.view(-1, 1, 1, 1)
    return torch.nan_to_num((x - lo) / (hi - lo), nan=0.0, posinf=1.0, neginf=0.0)


def normalise_cam(cam: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear upsampling (align_corners=True) to the image size, then per-sample min–max (§3 step 3)."""
    cam = F.interpolate(cam.float(), size=(size, size), mode="bilinear", align_corners=True)
    return minmax_normalise(cam)


def heatmap_target(level: str, maps: torch.Tensor) -> torch.Tensor:
    """Target H_l [N, 1, R, R]: L1 map as is; L2/L3 channel mean, per-sample min–max (§3 step 4)."""
    if level == "b8":
        return maps[:, :1]
    return minmax_normalise(maps.mean(dim=1, keepdim=True))


def thresholded_l1(cam: torch.Tensor, target: torch.Tensor, threshold: float = 0.25) -> torch.Tensor:
    """Mean of e = |CAM − H| over finite elements with e > threshold; plain mean if ≤ 1 such element (§3 step 5).

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
class EqGANModule(AdversarialModule):
    """EqGAN-SA on the StyleGAN2-ADA base (spec §3–§4, §10).

    Args (besides :class:`AdversarialModule`'s):
        generator: ``networks.eqgan_sa.EqGANGenerator`` (``use_sel`` on/off) or a plain StyleGAN2 generator.
        eqgan: ``ablation`` (optional row label of ``variants``, checked against the built switches),
            ``align_loss`` (on/off; needs SEL), ``align_weight`` (1.0 [C]), ``level_weights`` ([1, 1, 1] [C]
            for b8/b16/b32), ``align_threshold`` (0.25 [C]), ``cam_relu`` (``per_channel`` [C] | ``after_sum``).
        di: training-time disequilibrium indicator (metrics.md §7 [X]): ``enabled``, ``every_kimg`` (log window),
            ``interval`` (measure every k iterations), ``generator`` (``train`` | ``ema``), ``augment``.
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
        self.eqgan_cfg = _merge("eqgan", EQGAN_DEFAULTS, eqgan)
        self.di_cfg = _merge("di", DI_DEFAULTS, di)
        self.use_sel = bool(getattr(generator, "use_sel", False))
        cfg = self.eqgan_cfg
        if cfg["align_loss"] and not self.use_sel:
            raise ValueError(
                "model.eqgan.align_loss=true needs a generator with SEL (model.generator.use_sel=true): the "
                "alignment target is the heatmap G was given (eqgan_sa.md §10)"
            )
        if cfg["ablation"] is not None:
            self._check_ablation(cfg)
        if cfg["cam_relu"] not in CAM_RELU:
            raise ValueError(f"model.eqgan.cam_relu: expected one of {CAM_RELU}, got {cfg['cam_relu']!r}")
        if len(cfg["level_weights"]) != len(LEVELS):
            raise ValueError(f"model.eqgan.level_weights: expected {len(LEVELS)} weights, got {cfg['level_weights']}")
        if self.di_cfg["generator"] not in ("train", "ema"):
            raise ValueError(f"model.di.generator: expected 'train' or 'ema', got {self.di_cfg['generator']!r}")
        super().__init__(generator, discriminator, augment_pipe=augment_pipe, **kwargs)
        self.di_metric = DisequilibriumIndicator()
        self._capture: dict | None = None
        self._next_di_kimg = self.di_cfg["every_kimg"]
        d_res = set(getattr(discriminator, "block_resolutions", []))
        self.align_levels = [lvl for lvl in LEVELS if LEVEL_RES[lvl] in d_res]
        skipped = [lvl for lvl in LEVELS if lvl not in self.align_levels]
        if cfg["align_loss"] and skipped:
            log.warning("EqGAN-SA: D has no block %s at this resolution: alignment levels %s skipped", skipped, skipped)

    def _check_ablation(self, cfg: dict) -> None:
        """``ablation`` names a row of ``variants`` ({use_sel, align_loss}); the built switches must match it."""
        variants = dict(cfg["variants"] or {})
        if cfg["ablation"] not in variants:
            raise ValueError(
                f"model.eqgan.ablation: expected one of {sorted(variants)} (model.eqgan.variants), "
                f"got {cfg['ablation']!r}"
            )
        want = dict(variants[cfg["ablation"]])
        got = {"use_sel": self.use_sel, "align_loss": bool(cfg["align_loss"])}
        if {k: bool(want.get(k)) for k in got} != got:
            raise ValueError(
                f"model.eqgan.ablation={cfg['ablation']} means {want}, but the model was built with {got} "
                "(set model.eqgan.ablation instead of model.generator.use_sel / model.eqgan.align_loss)"
            )

    # -------------------------------------------------------------------------------- generation
    def run_G(self, z: torch.Tensor, c: torch.Tensor, update_emas: bool = True, **synthesis_kwargs):
        """Every G call gets fresh heatmaps (spec §2.1); during Gmain they are kept for the alignment loss."""
        if self.use_sel and synthesis_kwargs.get("spatial") is None:
            synthesis_kwargs["spatial"] = self.G.sample_heatmaps(z.shape[0], device=z.device)
        if self._capture is not None and self.use_sel:
            self._capture["heatmaps"] = synthesis_kwargs["spatial"]
        return super().run_G(z, c, update_emas=update_emas, **synthesis_kwargs)

    def run_D(self, img: torch.Tensor, c: torch.Tensor, **kwargs):
        """During Gmain also keep the (augmented) fakes and D's block outputs, attached to G's graph (§3 step 2)."""
        if self._capture is None or kwargs:
            return super().run_D(img, c, **kwargs)
        aug = self.augment(img)
        logits, feats = self.D(aug, c, return_features=True)
        self._capture.update(aug=aug, c=c, features=feats)
        return logits

    # ------------------------------------------------------------------------------------ losses
    def gmain_loss(self, real_img: torch.Tensor, real_c: torch.Tensor) -> dict[str, torch.Tensor]:
        """Non-saturating G loss (base) + ``G/align`` (spec §3)."""
        if not self.eqgan_cfg["align_loss"] or not self.align_levels:
            return super().gmain_loss(real_img, real_c)
        self._capture = {}
        try:
            terms = super().gmain_loss(real_img, real_c)
            cap = self._capture
        finally:
            self._capture = None
        per_level = self.alignment_loss(cap["aug"], cap["c"], cap["features"], cap["heatmaps"])
        weights = dict(zip(LEVELS, self.eqgan_cfg["level_weights"]))
        total = sum(weights[lvl] * loss for lvl, loss in per_level.items())
        for lvl, loss in per_level.items():
            self.log_stat(f"align/{lvl}", loss)
        terms["G/align"] = self.eqgan_cfg["align_weight"] * total
        return terms

    def cams(self, img: torch.Tensor, c: torch.Tensor, features: dict[int, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Normalised CAMs ``{level: [N, 1, R, R]}``: α from a detached pass, A = ``features`` (§3 steps 1–3)."""
        res = [LEVEL_RES[lvl] for lvl in self.align_levels]
        alphas = gradcam_weights(self.D, img, c, res)
        size = img.shape[-1]
        return {
            lvl: normalise_cam(gradcam(alphas[r], features[r], self.eqgan_cfg["cam_relu"]), size)
            for lvl, r in zip(self.align_levels, res)
        }

    def alignment_loss(
        self, img: torch.Tensor, c: torch.Tensor, features: dict[int, torch.Tensor], heatmaps
    ) -> dict[str, torch.Tensor]:
        """L_l = thresholded L1 between the normalised CAM and the heatmap target of level l (§3 steps 1–5)."""
        size = img.shape[-1]
        if isinstance(heatmaps, HeatmapParams):
            heatmaps = render_heatmaps(heatmaps, size, self.G.synthesis.sampler.floor)
        cams = self.cams(img, c, features)
        thr = self.eqgan_cfg["align_threshold"]
        out = {}
        for lvl, cam in cams.items():
            target = heatmaps[lvl]
            if target.shape[-1] != size:
                target = F.interpolate(target, size=(size, size), mode="bilinear", align_corners=True)
            out[lvl] = thresholded_l1(cam, heatmap_target(lvl, target), thr)
        return out

    # ------------------------------------------------------------------------------------------ DI
    def after_phase(self, phase: str, real_img: torch.Tensor, real_c: torch.Tensor) -> None:
        """After the D step, measure D on pure-real and pure-fake batches for the DI (metrics.md §7)."""
        super().after_phase(phase, real_img, real_c)
        cfg = self.di_cfg
        if phase != "Dmain" or not cfg["enabled"] or int(self.iteration) % int(cfg["interval"]) != 0:
            return
        G = self.G_ema if cfg["generator"] == "ema" else self.G
        mode = self.D.training
        self.D.eval()
        try:
            with torch.no_grad():
                n = real_img.shape[0]
                c = self.sample_c(n, real_c)
                spatial = G.sample_heatmaps(n, device=self.device) if self.use_sel else None
                fake = G(self.sample_z(n), c, **({"spatial": spatial} if spatial is not None else {}))
                real = real_img
                if cfg["augment"]:
                    real, fake = self.augment(real), self.augment(fake)
                self.di_metric.update(self.D(real, real_c), real=True)
                self.di_metric.update(self.D(fake, c), real=False)
        finally:
            self.D.train(mode)

    def after_iteration(self) -> None:
        """Every ``di.every_kimg``: log ``metrics/DI`` (and the two means) over the window, then reset."""
        super().after_iteration()
        kimg = int(self.seen_img) / 1000
        if not self.di_cfg["enabled"] or kimg < self._next_di_kimg or int(self.di_metric.real_n) == 0:
            return
        di = self.di_metric.compute()
        real, fake = self.di_metric.means()
        self.di_metric.reset()
        self._next_di_kimg = kimg + self.di_cfg["every_kimg"]
        batch = self.global_batch
        self.log("metrics/DI", di.float(), batch_size=batch)
        self.log("metrics/DI_real", real.float(), batch_size=batch)
        self.log("metrics/DI_fake", fake.float(), batch_size=batch)

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
        if self._grid_c is not None:
            c = self._grid_c[:n].to(self.device)
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
                _, feats = self.D(img, c, return_features=True)
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
        kimg = int(self.seen_img) / 1000
        out = Path(self.trainer.default_root_dir) / "samples" / f"cams{int(self.seen_img) // 1000:06d}.png"
        path = save_image_grid(figure, out, (figure.shape[0] // n, n))
        caption = f"kimg {kimg:.1f}: fakes / heatmaps b8 b16 b32 / CAMs {' '.join(self.align_levels)}"
        for logger in self.loggers:
            if hasattr(logger, "log_image"):
                logger.log_image(key="samples/cams", images=[str(path)], caption=[caption])


def _merge(name: str, defaults: dict, given: dict | None) -> dict:
    """Defaults updated with ``given``; unknown keys raise an error naming ``model.<name>.<key>``."""
    given = dict(given or {})
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ValueError(f"model.{name}: unknown keys {unknown}; expected a subset of {sorted(defaults)}")
    out = dict(defaults)
    out.update(given)
    if "level_weights" in out:
        out["level_weights"] = [float(w) for w in out["level_weights"]]
    return out
