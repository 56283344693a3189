"""StyleGAN2-ADA training (Karras et al. 2020, arXiv 2006.06676; NVlabs ``training/loss.py``): the phases
Gmain -> Greg -> Dmain -> Dreg on the base engine, the non-saturating loss, lazy R1 and path-length
regularisation, style mixing, and the ADA controller.

Every generator call returns a :class:`FakeBatch` and every discriminator call a :class:`DOutput` record (logits,
the augmented input D saw, the named taps the method asked for). Loss functions return them in their
:class:`~lightning_modules.phases.PhaseOutput`, so a method that extends a loss reads the passes it needs from
the record, by name, instead of capturing tensors between calls. Methods declare the taps per pass in
``self.d_taps`` (``{"gmain.fake": ("b8",)}``); the pass names are ``gmain.fake``, ``dmain.fake``,
``dmain.real`` and ``dreg.real``.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn

from lightning_modules.config import check_range, parse_block
from lightning_modules.controllers import AdaptiveAugment, set_augment_p
from lightning_modules.gan import GANModule, RealBatch
from lightning_modules.phases import OptimizerSpec, Phase, PhaseOutput


@dataclasses.dataclass(frozen=True)
class FakeBatch:
    """One generator call: latents, labels, w+ [N, num_ws, w_dim], images, and the extra synthesis inputs."""

    z: torch.Tensor
    c: torch.Tensor
    ws: torch.Tensor
    img: torch.Tensor
    inputs: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class DOutput:
    """One discriminator call: logits [N, 1], the (augmented) image D saw, and the requested taps."""

    logits: torch.Tensor
    input: torch.Tensor
    taps: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class AdaConfig:
    """``model.ada``: the p controller (arXiv 2006.06676 Sec. 3): r_t target, adjustment interval, speed in kimg."""

    target: float = 0.6
    interval: int = 4
    kimg: float = 500.0

    def __post_init__(self):
        check_range("model.ada.interval", self.interval, low=1)
        check_range("model.ada.kimg", self.kimg, low=0, open_low=True)


class StyleGAN2ADAModule(GANModule):
    """StyleGAN2-ADA: non-saturating loss, lazy R1 and path-length regularisation, style mixing, G_ema, ADA.

    Args (besides :class:`~lightning_modules.gan.GANModule`'s):
        augment_pipe: ``networks.augment.AugmentPipe`` or None (no augmentation).
        ada: ``model.ada`` (:class:`AdaConfig`) to adapt the pipe's p, or None for a fixed p.
        augment_p: initial p.
        d_lr: D's learning rate (None: ``lr``).
        r1_gamma, pl_weight, pl_decay, pl_batch_shrink: R1 weight and path-length settings (NVlabs ``loss.py``).
        style_mixing_prob: probability of mixing two latents at a random layer (Karras et al. 2019, Sec. 3.1).
        g_reg_interval, d_reg_interval: lazy regularisation intervals (None or 0 disables the phase).
    """

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        augment_pipe: nn.Module | None = None,
        ada: dict | None = None,
        augment_p: float = 0.0,
        batch_size: int = 32,
        total_kimg: float = 25000,
        lr: float = 0.002,
        d_lr: float | None = None,
        betas: tuple[float, float] = (0.0, 0.99),
        eps: float = 1e-8,
        r1_gamma: float = 10.0,
        pl_weight: float = 2.0,
        pl_decay: float = 0.01,
        pl_batch_shrink: int = 2,
        style_mixing_prob: float = 0.9,
        g_reg_interval: int | None = 4,
        d_reg_interval: int | None = 16,
        ema_kimg: float = 10.0,
        ema_rampup: float | None = None,
        seed: int = 0,
        sample_grid: tuple[int, int] = (4, 8),
        sample_every_kimg: float = 4.0,
        sample_truncation_psi: float = 1.0,
        init_from: str | None = None,
    ):
        super().__init__(
            generator,
            discriminator,
            batch_size=batch_size,
            total_kimg=total_kimg,
            lr=lr,
            betas=betas,
            eps=eps,
            ema_kimg=ema_kimg,
            ema_rampup=ema_rampup,
            seed=seed,
            sample_grid=sample_grid,
            sample_every_kimg=sample_every_kimg,
            sample_truncation_psi=sample_truncation_psi,
            init_from=init_from,
        )
        check_range("model.style_mixing_prob", style_mixing_prob, 0, 1)
        check_range("model.augment_p", augment_p, 0, 1)
        self.augment_pipe = augment_pipe
        self.augment_p = float(augment_p) if augment_pipe is not None else 0.0
        if augment_pipe is not None:
            set_augment_p(augment_pipe, self.augment_p)
        self.ada_config = parse_block("model.ada", AdaConfig, ada) if ada is not None else None
        self.ada = None
        if augment_pipe is not None and self.ada_config is not None:
            self.ada = AdaptiveAugment(augment_pipe, self.stats, **dataclasses.asdict(self.ada_config))
        self.register_buffer("pl_mean", torch.zeros([]))
        self.d_taps: dict[str, tuple[str, ...]] = {}
        self.mixing_layers: tuple[int, int | None] = (1, None)
        self.phases = self.stylegan2_phases()

    def stylegan2_phases(self) -> list[Phase]:
        """Gmain, Greg (every ``g_reg_interval``, gain = interval), Dmain, Dreg (every ``d_reg_interval``)."""
        hp = self.hparams
        g_every = (hp.g_reg_interval or 0) if hp.pl_weight > 0 else 0
        d_every = (hp.d_reg_interval or 0) if hp.r1_gamma > 0 else 0
        return [
            Phase("Gmain", ("G",), self.gmain_loss),
            Phase("Greg", ("G",), self.greg_loss, interval=g_every, gain=g_every or 1),
            Phase("Dmain", ("D",), self.dmain_loss),
            Phase("Dreg", ("D",), self.dreg_loss, interval=d_every, gain=d_every or 1),
        ]

    def optimizer_specs(self) -> list[OptimizerSpec]:
        hp = self.hparams
        common = dict(betas=tuple(hp.betas), eps=hp.eps)
        return [
            OptimizerSpec("G", self.G.parameters, hp.lr, reg_interval=hp.g_reg_interval, **common),
            OptimizerSpec("D", self.D.parameters, hp.d_lr or hp.lr, reg_interval=hp.d_reg_interval, **common),
        ]

    # ----------------------------------------------------------------- ADA
    def set_augment_p(self, p: float) -> None:
        """The one place p changes: host copy (read by :meth:`augment`) and the pipe's buffer."""
        self.augment_p = float(p)
        set_augment_p(self.augment_pipe, self.augment_p)

    def augment(self, img: torch.Tensor) -> torch.Tensor:
        """A(img) through the ADA pipe; the identity while p = 0 (decided on the host, no device read)."""
        if self.augment_pipe is None or self.augment_p <= 0:
            return img
        return self.augment_pipe(img)

    def on_fit_start(self) -> None:
        super().on_fit_start()
        self._apply_init_record()

    def _apply_init_record(self) -> None:
        """A run started from another run's networks adapts ADA faster (kimg 100, NVlabs ``train.py --resume``)."""
        if self.ada is not None:
            self.ada.kimg = 100.0 if self.init_record is not None else self.ada_config.kimg

    def after_iteration(self) -> None:
        if self.ada is not None:
            p = self.ada.update(self.progress.iteration, self.global_batch, self.augment_p)
            if p != self.augment_p:
                self.set_augment_p(p)

    def progress_stats(self) -> dict[str, float]:
        values = super().progress_stats()
        if self.augment_pipe is not None:
            values["augment/p"] = self.augment_p
        if self.ada is not None and not math.isnan(self.ada.last_rt):
            values["augment/rt"] = self.ada.last_rt
        return values

    # ------------------------------------------------------------- networks
    def sample_z(self, n: int) -> torch.Tensor:
        return torch.randn([n, self.G.z_dim], device=self.device)

    def sample_c(self, n: int, real_c: torch.Tensor) -> torch.Tensor:
        """Labels for fakes, drawn from the real batch's labels (the dataset's label distribution)."""
        if real_c.shape[1] == 0:
            return real_c[:n]
        idx = torch.randint(0, real_c.shape[0], [n], device=self.device)
        return real_c[idx]

    def synthesis_inputs(self, z: torch.Tensor) -> dict:
        """Hook: extra keyword inputs of ``G.synthesis`` for a batch (EqGAN-SA's heatmaps)."""
        return {}

    def discriminator_inputs(self) -> dict:
        """Hook: extra keyword inputs of every D call in :meth:`run_D` (VolumeGAN's level of detail ``lod``)."""
        return {}

    def mix_styles(self, ws: torch.Tensor, z: torch.Tensor, c: torch.Tensor, mapping=None) -> torch.Tensor:
        """Style mixing: with probability ``style_mixing_prob`` the w's from a random cutoff in
        ``mixing_layers`` on come from another latent, mapped by ``mapping`` (default ``G.mapping``; DepthGAN
        mixes its RGB path). Cutoff and coin are drawn on the device and applied with a mask (no host read), in
        NVlabs' draw order (cutoff, coin, second latent)."""
        mapping = self.G.mapping if mapping is None else mapping
        num_ws = ws.shape[1]
        first, last = self.mixing_layers
        last = num_ws if last is None else last
        cutoff = torch.randint(first, last, [], device=ws.device)
        coin = torch.rand([], device=ws.device) < self.hparams.style_mixing_prob
        cutoff = torch.where(coin, cutoff, torch.full_like(cutoff, num_ws))
        mixed = mapping(torch.randn_like(z), c, update_emas=False)
        keep = torch.arange(num_ws, device=ws.device) < cutoff
        return torch.where(keep[None, :, None], ws, mixed)

    def run_G(self, z: torch.Tensor, c: torch.Tensor, update_emas: bool = True) -> FakeBatch:
        """G(z, c) with style mixing (NVlabs ``loss.py`` ``run_G``)."""
        ws = self.G.mapping(z, c, update_emas=update_emas)
        if self.hparams.style_mixing_prob > 0:
            ws = self.mix_styles(ws, z, c)
        inputs = self.synthesis_inputs(z)
        img = self.G.synthesis(ws, update_emas=update_emas, **inputs)
        return FakeBatch(z, c, ws, img, inputs)

    def run_D(self, img: torch.Tensor, c: torch.Tensor, pass_name: str | None = None, taps=()) -> DOutput:
        """D(A(img), c) through the ADA pipe, with the taps declared for ``pass_name`` plus ``taps``."""
        names = tuple(dict.fromkeys((*self.d_taps.get(pass_name, ()), *taps)))
        aug = self.augment(img)
        inputs = self.discriminator_inputs()
        if not names:
            return DOutput(self.D(aug, c, **inputs), aug)
        logits, tapped = self.D(aug, c, taps=names, **inputs)
        return DOutput(logits, aug, tapped)

    # -------------------------------------------------------------- losses
    def gmain_loss(self, real: RealBatch) -> PhaseOutput:
        """Non-saturating G loss softplus(-D(G(z)))."""
        n = len(real)
        fake = self.run_G(self.sample_z(n), self.sample_c(n, real.c))
        d_fake = self.run_D(fake.img, fake.c, "gmain.fake")
        self.stats.report("scores/fake", d_fake.logits)
        return PhaseOutput({"G/adv": F.softplus(-d_fake.logits).mean()}, {"fake": fake, "d_fake": d_fake})

    def greg_loss(self, real: RealBatch) -> PhaseOutput:
        """Path-length regularisation E[(||J^T y|| - a)^2] (Karras et al. 2020, Eq. 4) on a shrunk batch."""
        hp = self.hparams
        n = max(len(real) // hp.pl_batch_shrink, 1)
        fake = self.run_G(self.sample_z(n), self.sample_c(n, real.c))
        img = fake.img
        pl_noise = torch.randn_like(img) / math.sqrt(img.shape[2] * img.shape[3])
        (pl_grads,) = torch.autograd.grad((img * pl_noise).sum(), fake.ws, create_graph=True)
        pl_lengths = pl_grads.square().sum(2).mean(1).sqrt()
        pl_mean = self.pl_mean.lerp(pl_lengths.mean().detach(), hp.pl_decay)
        self.pl_mean.copy_(pl_mean)
        penalty = (pl_lengths - pl_mean).square()
        self.stats.report("pl_penalty", penalty)
        loss = (img[:, 0, 0, 0] * 0 + penalty * hp.pl_weight).mean()
        return PhaseOutput({"G/pl": loss}, {"fake": fake})

    def dmain_loss(self, real: RealBatch) -> PhaseOutput:
        """softplus(D(G(z))) + softplus(-D(x)) with G frozen."""
        n = len(real)
        with torch.no_grad():
            fake = self.run_G(self.sample_z(n), self.sample_c(n, real.c))
        d_fake = self.run_D(fake.img, fake.c, "dmain.fake")
        d_real = self.run_D(real.img.detach(), real.c, "dmain.real")
        self.stats.report("scores/real", d_real.logits)
        self.stats.report("signs/real", d_real.logits.sign())
        terms = {"D/fake": F.softplus(d_fake.logits).mean(), "D/real": F.softplus(-d_real.logits).mean()}
        return PhaseOutput(terms, {"real": real, "fake": fake, "d_fake": d_fake, "d_real": d_real})

    def dreg_loss(self, real: RealBatch) -> PhaseOutput:
        """R1 = gamma/2 * ||dD(A(x))/dx||^2 on the pre-augmentation reals (Mescheder et al. 2018, Eq. 9)."""
        hp = self.hparams
        img = real.img.detach().requires_grad_(True)
        d_real = self.run_D(img, real.c, "dreg.real")
        self.stats.report("signs/real", d_real.logits.sign())
        (r1_grads,) = torch.autograd.grad(d_real.logits.sum(), img, create_graph=True)
        penalty = r1_grads.square().sum([1, 2, 3])
        self.stats.report("r1_penalty", penalty)
        loss = (d_real.logits[:, 0] * 0 + penalty * (hp.r1_gamma / 2)).mean()
        return PhaseOutput({"D/r1": loss}, {"d_real": d_real})

    # --------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["run_state"]["augment_p"] = self.augment_p

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        legacy_ada = checkpoint.get("ada_state")
        super().on_load_checkpoint(checkpoint)
        if self.augment_pipe is not None:
            self.augment_p = float(checkpoint["run_state"].get("augment_p", checkpoint["state_dict"]["augment_pipe.p"]))
        if self.ada is not None and legacy_ada is not None and "stats" not in checkpoint["run_state"]:
            window = self.ada.window
            window.sums = {"signs/real": torch.tensor([float(legacy_ada["sign_sum"]), 0.0], dtype=torch.float64)}
            window.counts = {"signs/real": int(legacy_ada["count"])}
        self._apply_init_record()
