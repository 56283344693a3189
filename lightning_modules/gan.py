"""Base adversarial LightningModule: StyleGAN2-ADA training (Karras et al. 2020) for every GAN method.

The loop follows ``training_loop.py`` of stylegan2-ada-pytorch (spec: stylegan2_ada.md §6-§8):
per iteration the phases Gmain -> Greg -> Dmain -> Dreg run, each with its own latents, then G_ema is
updated and the ADA probability adjusted. Regularisation is lazy (Greg every ``g_reg_interval``, Dreg every
``d_reg_interval`` iterations, iteration 0 included) with the lr/beta correction of §7.1.

Methods extend it through hooks instead of copying the loop:

- ``gmain_loss`` / ``greg_loss`` / ``dmain_loss`` / ``dreg_loss`` return a dict of named scalar terms; a
  method overrides one, calls ``super()`` and adds its terms (EqGAN-SA's alignment loss, InsGen's contrastive
  terms).
- ``extra_optimizers`` adds optimisers (InsGen's heads); ``after_phase`` runs after each phase's step;
  ``after_iteration`` after the EMA update (InsGen's momentum D).
- ``run_G`` / ``run_D`` are the single place where images are generated (with style mixing) and shown to D
  (through the ADA pipe).

State that makes a resumed run continue exactly lives in buffers (``seen_img``, ``iteration``, ``pl_mean``,
ADA ``p``) or in the checkpoint (per-rank RNG states, ADA accumulators).
"""

from __future__ import annotations

import copy
import logging
import math
import random
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from datamodules.imageio import save_image_grid, to_uint8

log = logging.getLogger(__name__)

PHASES = ("Gmain", "Greg", "Dmain", "Dreg")


def lazy_adam(params: Iterable[nn.Parameter], lr: float, betas, eps: float, reg_interval: int | None):
    """Adam with the lazy-regularisation correction (spec §7.1): lr*k/(k+1), beta**(k/(k+1))."""
    if reg_interval:
        ratio = reg_interval / (reg_interval + 1)
        lr = lr * ratio
        betas = tuple(b**ratio for b in betas)
    return torch.optim.Adam(params, lr=lr, betas=tuple(betas), eps=eps)


def ema_beta(batch_size: int, ema_kimg: float, ema_rampup: float | None, seen_img: int) -> float:
    """G_ema decay from a half-life in kimg (spec §7.3): beta = 0.5 ** (batch / ema_nimg)."""
    ema_nimg = ema_kimg * 1000
    if ema_rampup is not None:
        ema_nimg = min(ema_nimg, seen_img * ema_rampup)
    return 0.5 ** (batch_size / max(ema_nimg, 1e-8))


@torch.no_grad()
def update_ema(ema: nn.Module, live: nn.Module, beta: float) -> None:
    """theta_ema <- beta*theta_ema + (1-beta)*theta for parameters; buffers are copied (spec §7.3)."""
    for p_ema, p in zip(ema.parameters(), live.parameters(), strict=True):
        p_ema.copy_(p.detach().lerp(p_ema, beta))
    for b_ema, b in zip(ema.buffers(), live.buffers(), strict=True):
        b_ema.copy_(b)


def sanitize_gradients(params: Iterable[nn.Parameter]) -> None:
    """NaN -> 0, +inf -> 1e5, -inf -> -1e5, as the reference does before every step (spec §6)."""
    for p in params:
        if p.grad is not None:
            torch.nan_to_num(p.grad, nan=0, posinf=1e5, neginf=-1e5, out=p.grad)


class AdversarialModule(pl.LightningModule):
    """StyleGAN2-ADA: non-saturating loss, lazy R1 and path-length regularisation, style mixing, G_ema, ADA.

    Args:
        generator / discriminator: networks (``networks.stylegan2``); G_ema is a frozen deep copy of G.
        augment_pipe: ``networks.augment.AugmentPipe`` or None (no augmentation).
        ada: kwargs of ``networks.augment.AdaptiveP`` (target, interval, kimg) that adapts ``augment_pipe.p``,
            or None for a fixed p. augment_p: initial p (spec §8.3).
        batch_size: the GLOBAL batch (the schedules use it; the datamodule splits it across ranks).
        total_kimg: stop after this many thousand real images.
        lr, betas, eps: Adam settings shared by G and D (spec §9); ``d_lr`` overrides D's lr.
        r1_gamma, pl_weight, pl_decay, pl_batch_shrink, style_mixing_prob: spec §6-§7.
        g_reg_interval, d_reg_interval: lazy regularisation intervals (None disables the phase).
        ema_kimg, ema_rampup: G_ema half-life in kimg and ramp-up ratio (spec §7.3).
        seed: base seed; rank r draws from seed*world_size + r (pitfalls §4).
        sample_grid: (rows, cols) of the fixed-latent sample grid; sample_every_kimg: how often to render it.
        init_from: optional network file or foreign checkpoint to start from (``networks.checkpoint``).
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
        super().__init__()
        self.save_hyperparameters(ignore=["generator", "discriminator", "augment_pipe"])
        self.automatic_optimization = False
        self.G = generator
        self.D = discriminator
        self.G_ema = copy.deepcopy(generator).eval().requires_grad_(False)
        self.augment_pipe = augment_pipe
        self.ada = None
        if augment_pipe is not None:
            augment_pipe.p.fill_(augment_p)
            if ada is not None:
                from networks.augment import AdaptiveP

                self.ada = AdaptiveP(augment_pipe, **ada)
        self.register_buffer("seen_img", torch.zeros([], dtype=torch.int64))
        self.register_buffer("iteration", torch.zeros([], dtype=torch.int64))
        self.register_buffer("pl_mean", torch.zeros([]))
        grid = torch.Generator().manual_seed(seed + 123456789)
        n_grid = sample_grid[0] * sample_grid[1]
        self.register_buffer("grid_z", torch.randn([n_grid, generator.z_dim], generator=grid), persistent=False)
        self._grid_c: torch.Tensor | None = None
        self._next_sample_kimg = 0.0

    # ------------------------------------------------------------------ set-up
    def setup(self, stage: str) -> None:
        """Per-rank random streams (pitfalls §4) and an optional pretrained start."""
        rank_seed = self.hparams.seed * self.trainer.world_size + self.trainer.global_rank
        torch.manual_seed(rank_seed)
        np.random.seed(rank_seed % 2**32)  # noqa: NPY002 (seeds the global stream other code draws from)
        random.seed(rank_seed)
        if self.hparams.init_from and stage == "fit" and int(self.seen_img) == 0:
            self.load_pretrained(self.hparams.init_from)

    def load_pretrained(self, path: str) -> None:
        """Copy G, D and G_ema from a network file or a foreign checkpoint; missing parts are reported."""
        from networks.checkpoint import load_networks

        nets = load_networks(path)
        for name in ("G", "D", "G_ema"):
            src = nets.get(name) or (nets.get("G") if name == "G_ema" else None)
            if src is None:
                log.warning("init_from=%s has no %s: keeping its fresh initialisation", path, name)
                continue
            missing, unexpected = getattr(self, name).load_state_dict(src.state_dict(), strict=False)
            log.info("init_from=%s: loaded %s (missing %s, unexpected %s)", path, name, missing, unexpected)
        if self.ada is not None:
            self.ada.kimg = 100  # the reference's faster ADA speed when resuming from a pickle (spec §7.1)
        self.hparams.ema_rampup = None

    def configure_optimizers(self):
        hp = self.hparams
        opt_g = lazy_adam(self.G.parameters(), hp.lr, hp.betas, hp.eps, hp.g_reg_interval)
        opt_d = lazy_adam(self.D.parameters(), hp.d_lr or hp.lr, hp.betas, hp.eps, hp.d_reg_interval)
        return [opt_g, opt_d, *self.extra_optimizers()]

    def extra_optimizers(self) -> list[torch.optim.Optimizer]:
        """Hook: optimisers of method-specific networks, stepped by the method itself."""
        return []

    # ------------------------------------------------------------- generation
    @property
    def global_batch(self) -> int:
        return int(self.hparams.batch_size)

    def sample_z(self, n: int) -> torch.Tensor:
        return torch.randn([n, self.G.z_dim], device=self.device)

    def sample_c(self, n: int, real_c: torch.Tensor) -> torch.Tensor:
        """Labels for fakes, drawn from the real batch's labels (the dataset's label distribution)."""
        if real_c.shape[1] == 0:
            return real_c[:n]
        idx = torch.randint(0, real_c.shape[0], [n], device=self.device)
        return real_c[idx]

    def run_G(self, z: torch.Tensor, c: torch.Tensor, update_emas: bool = True, **synthesis_kwargs):
        """G(z, c) with style mixing (spec §7.2): returns (img, ws).

        ``synthesis_kwargs`` go to ``G.synthesis`` (e.g. EqGAN-SA's ``spatial`` heatmaps).
        """
        ws = self.G.mapping(z, c, update_emas=update_emas)
        prob = self.hparams.style_mixing_prob
        if prob > 0:
            num_ws = ws.shape[1]
            cutoff = int(torch.randint(1, num_ws, []))
            if float(torch.rand([])) >= prob:
                cutoff = num_ws
            if cutoff < num_ws:
                mixed = self.G.mapping(torch.randn_like(z), c, update_emas=False)
                ws = torch.cat([ws[:, :cutoff], mixed[:, cutoff:]], dim=1)
        img = self.G.synthesis(ws, update_emas=update_emas, **synthesis_kwargs)
        return img, ws

    def augment(self, img: torch.Tensor) -> torch.Tensor:
        if self.augment_pipe is None or float(self.augment_pipe.p) <= 0:
            return img
        return self.augment_pipe(img)

    def run_D(self, img: torch.Tensor, c: torch.Tensor, **kwargs):
        """D(A(img), c): every image shown to D goes through the ADA pipe (spec §8.1)."""
        return self.D(self.augment(img), c, **kwargs)

    # ------------------------------------------------------------------ losses
    def gmain_loss(self, real_img: torch.Tensor, real_c: torch.Tensor) -> dict[str, torch.Tensor]:
        """Non-saturating G loss softplus(-D(G(z))) (spec §6)."""
        n = real_img.shape[0]
        gen_c = self.sample_c(n, real_c)
        gen_img, _ = self.run_G(self.sample_z(n), gen_c)
        logits = self.run_D(gen_img, gen_c)
        self.log_stat("scores/fake", logits.mean())
        return {"G/adv": F.softplus(-logits).mean()}

    def greg_loss(self, real_img: torch.Tensor, real_c: torch.Tensor) -> dict[str, torch.Tensor]:
        """Path-length regularisation (spec §6), multiplied by the lazy interval."""
        hp = self.hparams
        n = max(real_img.shape[0] // hp.pl_batch_shrink, 1)
        gen_img, gen_ws = self.run_G(self.sample_z(n), self.sample_c(n, real_c))
        pl_noise = torch.randn_like(gen_img) / math.sqrt(gen_img.shape[2] * gen_img.shape[3])
        (pl_grads,) = torch.autograd.grad((gen_img * pl_noise).sum(), gen_ws, create_graph=True)
        pl_lengths = pl_grads.square().sum(2).mean(1).sqrt()
        pl_mean = self.pl_mean.lerp(pl_lengths.mean().detach(), hp.pl_decay)
        self.pl_mean.copy_(pl_mean)
        penalty = (pl_lengths - pl_mean).square()
        self.log_stat("pl_penalty", penalty.mean())
        loss = (gen_img[:, 0, 0, 0] * 0 + penalty * hp.pl_weight).mean()
        return {"G/pl": loss * hp.g_reg_interval}

    def dmain_loss(self, real_img: torch.Tensor, real_c: torch.Tensor) -> dict[str, torch.Tensor]:
        """softplus(D(G(z))) + softplus(-D(x)) with G frozen (spec §6)."""
        n = real_img.shape[0]
        with torch.no_grad():
            gen_c = self.sample_c(n, real_c)
            gen_img, _ = self.run_G(self.sample_z(n), gen_c)
        fake_logits = self.run_D(gen_img, gen_c)
        real_logits = self.run_D(real_img.detach(), real_c)
        self.observe_real_logits(real_logits)
        self.log_stat("scores/real", real_logits.mean())
        return {"D/fake": F.softplus(fake_logits).mean(), "D/real": F.softplus(-real_logits).mean()}

    def dreg_loss(self, real_img: torch.Tensor, real_c: torch.Tensor) -> dict[str, torch.Tensor]:
        """R1 = gamma/2 * ||dD(A(x))/dx||^2 on the pre-augmentation reals (spec §6)."""
        hp = self.hparams
        real = real_img.detach().requires_grad_(True)
        logits = self.run_D(real, real_c)
        self.observe_real_logits(logits)
        (r1_grads,) = torch.autograd.grad(logits.sum(), real, create_graph=True)
        penalty = r1_grads.square().sum([1, 2, 3])
        self.log_stat("r1_penalty", penalty.mean())
        loss = (logits[:, 0] * 0 + penalty * (hp.r1_gamma / 2)).mean()
        return {"D/r1": loss * hp.d_reg_interval}

    def observe_real_logits(self, logits: torch.Tensor) -> None:
        if self.ada is not None:
            self.ada.accumulate(logits.detach())

    # ------------------------------------------------------------------- loop
    def phase_schedule(self, iteration: int) -> list[str]:
        """Phases that run at this iteration: mains always, regs at iteration % interval == 0 (spec §7.1)."""
        hp = self.hparams
        phases = ["Gmain"]
        if hp.g_reg_interval and hp.pl_weight > 0 and iteration % hp.g_reg_interval == 0:
            phases.append("Greg")
        phases.append("Dmain")
        if hp.d_reg_interval and hp.r1_gamma > 0 and iteration % hp.d_reg_interval == 0:
            phases.append("Dreg")
        return phases

    def preprocess_batch(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 [N,C,H,W] -> float in [-1, 1] (spec §7.4); labels as float."""
        img, c = batch[0], batch[1]
        if img.dtype == torch.uint8:
            img = img.to(torch.float32) / 127.5 - 1
        return img, c.to(torch.float32)

    def training_step(self, batch, batch_idx):
        real_img, real_c = self.preprocess_batch(batch)
        opts = self.optimizers()
        opt_g, opt_d = opts[0], opts[1]
        it = int(self.iteration)
        self._stats: dict[str, torch.Tensor] = {}
        for phase in self.phase_schedule(it):
            opt, net = (opt_g, self.G) if phase.startswith("G") else (opt_d, self.D)
            loss_fn = {
                "Gmain": self.gmain_loss,
                "Greg": self.greg_loss,
                "Dmain": self.dmain_loss,
                "Dreg": self.dreg_loss,
            }[phase]
            with self.toggled_optimizer(opt):
                opt.zero_grad(set_to_none=True)
                terms = loss_fn(real_img, real_c)
                loss = sum(terms.values())
                self.manual_backward(loss)
                sanitize_gradients(net.parameters())
                opt.step()
            for k, v in terms.items():
                self._stats[f"loss/{k}"] = v.detach()
            self.after_phase(phase, real_img, real_c)
        beta = ema_beta(self.global_batch, self.hparams.ema_kimg, self.hparams.ema_rampup, int(self.seen_img))
        update_ema(self.G_ema, self.G, beta)
        self.seen_img += self.global_batch
        self.iteration += 1
        if self.ada is not None:
            self.ada.step(self.global_batch)
        self.after_iteration()
        self.log_step()

    def after_phase(self, phase: str, real_img: torch.Tensor, real_c: torch.Tensor) -> None:
        """Hook: runs after each phase's optimiser step."""

    def after_iteration(self) -> None:
        """Hook: runs after the G_ema update and the ADA adjustment."""

    # ---------------------------------------------------------------- logging
    def log_stat(self, name: str, value: torch.Tensor) -> None:
        self._stats[name] = value.detach()

    def log_step(self) -> None:
        kimg = int(self.seen_img) / 1000
        stats = {k: v.float() for k, v in self._stats.items()}
        stats["kimg"] = torch.tensor(kimg)
        if self.augment_pipe is not None:
            stats["augment_p"] = self.augment_pipe.p.detach().float()
        bar = {"loss/G/adv", "loss/D/real", "kimg"}
        batch = self.global_batch
        self.log_dict({k: v for k, v in stats.items() if k in bar}, prog_bar=True, batch_size=batch)
        self.log_dict({k: v for k, v in stats.items() if k not in bar}, batch_size=batch)
        if kimg >= self.hparams.total_kimg:
            self.trainer.should_stop = True
        if kimg >= self._next_sample_kimg or self.trainer.should_stop:
            self.save_samples()
            self._next_sample_kimg = kimg + self.hparams.sample_every_kimg

    @torch.no_grad()
    def render_grid(self) -> torch.Tensor:
        """Fixed-latent G_ema samples (uint8 [N, C, H, W]) for the sample grid."""
        z = self.grid_z.to(self.device)
        c = torch.zeros([z.shape[0], self.G.c_dim], device=self.device)
        if self._grid_c is not None:
            c = self._grid_c.to(self.device)
        imgs = []
        for zi, ci in zip(z.split(16), c.split(16), strict=True):
            imgs.append(self.G_ema(zi, ci, truncation_psi=self.hparams.sample_truncation_psi, noise_mode="const"))
        return to_uint8(torch.cat(imgs))

    def save_samples(self) -> None:
        """Render the grid on rank 0, write it as PNG and send it to the loggers."""
        if not self.trainer.is_global_zero:
            return
        grid = self.render_grid()
        kimg = int(self.seen_img) / 1000
        out = Path(self.trainer.default_root_dir) / "samples" / f"fakes{int(self.seen_img) // 1000:06d}.png"
        path = save_image_grid(grid, out, self.hparams.sample_grid)
        for logger in self.loggers:
            if hasattr(logger, "log_image"):
                logger.log_image(key="samples/fakes", images=[str(path)], caption=[f"kimg {kimg:.1f}"])

    # ------------------------------------------------------------ checkpoints
    def network_specs(self) -> dict[str, dict]:
        """How to rebuild each network of the checkpoint (read by ``networks.checkpoint``)."""
        specs = {}
        for name in ("G", "D", "G_ema"):
            net = getattr(self, name)
            cls = type(net)
            specs[name] = {"class": f"{cls.__module__}.{cls.__qualname__}", "init_kwargs": net.init_kwargs}
        return specs

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["networks"] = self.network_specs()
        name, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002
        state = {  # plain types and tensors only, so the checkpoint loads with weights_only=True
            "torch": torch.get_rng_state(),
            "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
            "python": random.getstate(),
        }
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            states = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(states, state)
        else:
            states = [state]
        checkpoint["rng_states"] = states
        if self.ada is not None:
            checkpoint["ada_state"] = self.ada.state_dict()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        states = checkpoint.get("rng_states")
        rank = self.trainer.global_rank if self._trainer is not None else 0
        world = self.trainer.world_size if self._trainer is not None else 1
        if states and len(states) == world:
            torch.set_rng_state(states[rank]["torch"])
            name, keys, pos, has_gauss, cached = states[rank]["numpy"]
            np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))  # noqa: NPY002
            random.setstate(states[rank]["python"])
        elif states:
            log.warning(
                "checkpoint was written by %d ranks, this run has %d: random streams are re-seeded",
                len(states),
                world,
            )
        if self.ada is not None and "ada_state" in checkpoint:
            self.ada.load_state_dict(checkpoint["ada_state"])
        self._next_sample_kimg = int(checkpoint["state_dict"]["seen_img"]) / 1000 + self.hparams.sample_every_kimg
