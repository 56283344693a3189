"""The base of every adversarial method: run state, the phase engine, G_ema, sample grids, checkpoints.

Three parts, each doing one job (docs/architecture.md draws them):

- run state (:mod:`lightning_modules.run_state`): images seen, iteration, per-rank random streams, what a start
  from another run (``init_from``) changed, all on the host and in the checkpoint;
- the phase engine (:meth:`GANModule.training_step`): every iteration runs ``self.phases`` (records of
  :class:`~lightning_modules.phases.Phase`) in order, each with its optimisers trainable and every other optimised
  parameter frozen, then the EMA of the generator and the method's ``after_iteration``; as NVlabs
  ``training/training_loop.py`` (Karras et al. 2020, arXiv 2006.06676, Appendix);
- the losses, which live in subclasses (:class:`lightning_modules.stylegan2_ada.StyleGAN2ADAModule` for the
  StyleGAN2 family, GenDA's own two phases).

A method changes the phase list, declares the networks of its checkpoints (``bundle_parts``) and overrides the
loss functions it extends; it never copies the loop. Statistics are reported to ``self.stats`` without host
synchronisation and logged every ``trainer.log_every_n_steps`` iterations.
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch import nn

from lightning_modules.phases import OptimizerSpec, Phase, PhaseOutput, sanitize_gradients
from lightning_modules.run_state import RunProgress, gather_rng_states, restore_rng_state, seed_rank
from lightning_modules.training_stats import TrainingStats
from networks.checkpoint import BundlePart, bundle_specs, copy_network, load_bundle
from networks.image_output import save_image_grid, to_uint8

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RealBatch:
    """One rank's real images in [-1, 1] (float) and their labels [N, c_dim] (float)."""

    img: torch.Tensor
    c: torch.Tensor

    def __len__(self) -> int:
        return self.img.shape[0]


def ema_beta(batch_size: int, ema_kimg: float, ema_rampup: float | None, seen_img: int) -> float:
    """EMA decay from a half-life in kimg: beta = 0.5 ** (batch / ema_nimg), ema_nimg capped at seen_img * rampup
    (NVlabs ``training_loop.py``; Karras et al. 2020, arXiv 2006.06676, Appendix B)."""
    ema_nimg = ema_kimg * 1000
    if ema_rampup is not None:
        ema_nimg = min(ema_nimg, seen_img * ema_rampup)
    return 0.5 ** (batch_size / max(ema_nimg, 1e-8))


@torch.no_grad()
def update_ema(ema: nn.Module, live: nn.Module, beta: float) -> None:
    """theta_ema <- beta*theta_ema + (1-beta)*theta for parameters (one fused call); buffers are copied."""
    ema_params, live_params = list(ema.parameters()), [p.detach() for p in live.parameters()]
    if len(ema_params) != len(live_params):
        raise ValueError(f"update_ema: {len(ema_params)} EMA parameters vs {len(live_params)} live parameters")
    torch._foreach_copy_(ema_params, torch._foreach_lerp(live_params, ema_params, beta))
    for b_ema, b in zip(ema.buffers(), live.buffers(), strict=True):
        b_ema.copy_(b)


class GANModule(pl.LightningModule):
    """Run state + phase engine + G_ema + grids + checkpoints; subclasses define phases and losses.

    Args:
        generator / discriminator: the networks (G_ema is a frozen deep copy of G when ``ema_kimg`` is set).
        batch_size: the GLOBAL batch (schedules use it; the datamodule splits it across ranks).
        total_kimg: stop after this many thousand real images.
        lr, betas, eps: Adam settings (per-network optimisers are declared by :meth:`optimizer_specs`).
        ema_kimg, ema_rampup: G_ema half-life in kimg and ramp-up ratio; ``ema_kimg=None``: no G_ema update.
        seed: base seed; rank r draws from ``seed * world_size + r``.
        sample_grid: (rows, cols) of the fixed-latent sample grid; sample_every_kimg: how often it is rendered;
            sample_truncation_psi: its truncation.
        init_from: a network file or foreign checkpoint to start from (read once, at a fresh start only).
    """

    #: The networks of this method's checkpoints and of ``init_from`` (see :class:`networks.checkpoint.BundlePart`).
    bundle_parts: tuple[BundlePart, ...] = (
        BundlePart("G"),
        BundlePart("D"),
        BundlePart("G_ema", required=False, fallback="G"),
    )

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        batch_size: int = 32,
        total_kimg: float = 25000,
        lr: float = 0.002,
        betas: tuple[float, float] = (0.0, 0.99),
        eps: float = 1e-8,
        ema_kimg: float | None = 10.0,
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
        self.progress = RunProgress(total_kimg=float(total_kimg))
        self.stats = TrainingStats()
        self.stats.window("log")
        self.init_record: dict | None = None
        self.phases: list[Phase] = []
        grid = torch.Generator().manual_seed(seed + 123456789)
        n_grid = sample_grid[0] * sample_grid[1]
        self.register_buffer("grid_z", torch.randn([n_grid, generator.z_dim], generator=grid), persistent=False)
        self.grid_c: torch.Tensor | None = None
        self._next_sample_kimg = 0.0
        self._optimizer_names: list[str] = []
        self._trainable: dict[nn.Parameter, bool] = {}

    # ------------------------------------------------------------------ set-up
    @property
    def global_batch(self) -> int:
        return int(self.hparams.batch_size)

    @property
    def ema_rampup(self) -> float | None:
        """The configured ramp-up, off when the run started from another run's networks (NVlabs ``--resume``)."""
        if self.init_record is not None and self.init_record.get("ema_rampup_off"):
            return None
        return self.hparams.ema_rampup

    def setup(self, stage: str) -> None:
        """Per-rank random streams (``seed * world_size + rank``)."""
        seed_rank(self.hparams.seed, self.trainer.global_rank, self.trainer.world_size)

    def on_fit_start(self) -> None:
        """After any checkpoint is restored: ``init_from`` at a fresh start, grid labels from the dataset."""
        if self.hparams.init_from and self.progress.seen_img == 0 and self.init_record is None:
            self.load_init(self.hparams.init_from)
        self.grid_c = self.grid_labels()

    def load_init(self, path: str) -> None:
        """Copy the networks of ``bundle_parts`` from ``path`` (read once) and record what changed."""
        nets, provenance = load_bundle(path, self.init_parts())
        for name, src in nets.items():
            self.copy_part(name, src, str(path))
        for name, where in provenance.items():
            if where == "absent":
                log.info("init_from=%s has no %s: keeping its fresh initialisation", path, name)
            else:
                log.info("init_from=%s: %s <- %s", path, name, where)
        self.init_record = {"source": str(path), "parts": provenance, "ema_rampup_off": True}

    def init_parts(self) -> tuple[BundlePart, ...]:
        """The networks ``init_from`` loads (default: the checkpoint bundle)."""
        return self.bundle_parts

    def copy_part(self, name: str, src: nn.Module, source: str) -> None:
        """Copy a network loaded by ``init_from`` into this module's part ``name`` (strict)."""
        copy_network(getattr(self, name), src, source, name)

    def grid_labels(self) -> torch.Tensor | None:
        """Labels of the sample grid for conditional G: labels of dataset images in a seeded order, sorted so that
        each class fills consecutive cells (NVlabs ``setup_snapshot_image_grid``); None if unconditional."""
        if not getattr(self.G, "c_dim", 0):
            return None
        dm = getattr(self.trainer, "datamodule", None)
        dataset = getattr(dm, "train_dataset", None)
        if dataset is None or not hasattr(dataset, "get_label"):
            log.warning("conditional G without a dataset exposing get_label: sample grid uses all-zero labels")
            return None
        n = self.grid_z.shape[0]
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(self.hparams.seed))
        labels = torch.stack([torch.as_tensor(dataset.get_label(int(i)), dtype=torch.float32) for i in order[:n]])
        if len(labels) < n:
            labels = labels.repeat(math.ceil(n / len(labels)), 1)[:n]
        keys = labels.argmax(dim=1) if labels.shape[1] > 1 else labels[:, 0]
        return labels[torch.argsort(keys, stable=True)]

    # -------------------------------------------------------------- optimisers
    def optimizer_specs(self) -> list[OptimizerSpec]:
        """The optimisers phases refer to by name (subclasses declare theirs)."""
        raise NotImplementedError(f"{type(self).__name__} must declare optimizer_specs()")

    def configure_optimizers(self):
        specs = self.optimizer_specs()
        self._optimizer_names = [s.name for s in specs]
        return [s.build() for s in specs]

    def optimizer(self, name: str):
        """The (Lightning-wrapped) optimiser called ``name``."""
        if name not in self._optimizer_names:
            raise KeyError(f"no optimiser {name!r}; this module has {self._optimizer_names}")
        opts = self.optimizers()
        opts = opts if isinstance(opts, list) else [opts]
        return opts[self._optimizer_names.index(name)]

    # ------------------------------------------------------------------ engine
    def preprocess_batch(self, batch) -> RealBatch:
        """uint8 [N,C,H,W] -> float in [-1, 1]; labels as float."""
        img, c = batch[0], batch[1]
        if img.dtype == torch.uint8:
            img = img.to(torch.float32) / 127.5 - 1
        return RealBatch(img, c.to(torch.float32))

    def training_step(self, batch, batch_idx):
        """One iteration: ``before_iteration``, the phases due at this iteration, EMA, counters, ``after_iteration``."""
        real = self.preprocess_batch(batch)
        self.before_iteration(real)
        for phase in self.phases:
            if phase.runs_at(self.progress.iteration):
                with torch.profiler.record_function(phase.name):
                    out = self.run_phase(phase, real)
                for name, value in out.terms.items():
                    self.stats.report(f"loss/{name}", value)
                self.after_phase(phase, out)
        with torch.profiler.record_function("ema"):
            self.update_ema()
        self.progress.advance(self.global_batch)
        self.after_iteration()
        self.log_progress()

    def run_phase(self, phase: Phase, real: RealBatch) -> PhaseOutput:
        """Train ``phase.optimizers``' parameters on ``phase.loss`` (others frozen), sanitise, step each."""
        opts = [self.optimizer(name) for name in phase.optimizers]
        params = [p for opt in opts for group in opt.param_groups for p in group["params"]]
        self._freeze_all_but(params)
        try:
            for opt in opts:
                opt.zero_grad(set_to_none=True)
            out = phase.loss(real)
            loss = sum(out.terms.values())
            if phase.gain != 1:
                loss = loss * phase.gain
            self.manual_backward(loss)
            sanitize_gradients(params)
            for opt in opts:
                opt.step()
        finally:
            self._restore_trainable()
        return out

    def _freeze_all_but(self, active: list[nn.Parameter]) -> None:
        if not self._trainable:
            opts = self.optimizers()
            for opt in opts if isinstance(opts, list) else [opts]:
                for group in opt.param_groups:
                    for p in group["params"]:
                        self._trainable[p] = p.requires_grad
        keep = set(active)
        for p, trainable in self._trainable.items():
            p.requires_grad_(trainable and p in keep)

    def _restore_trainable(self) -> None:
        for p, trainable in self._trainable.items():
            p.requires_grad_(trainable)

    def before_iteration(self, real: RealBatch) -> None:
        """Hook: runs before the phases (InsGen's momentum D, VolumeGAN's level of detail)."""

    def after_phase(self, phase: Phase, out: PhaseOutput) -> None:
        """Hook: runs after each phase's optimiser steps, with the phase's output records."""

    def after_iteration(self) -> None:
        """Hook: runs after the EMA update and the counters (ADA, schedules)."""

    def ema_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """(EMA copy, live network) pairs updated after every iteration."""
        return [(self.G_ema, self.G)]

    def update_ema(self) -> None:
        if self.hparams.ema_kimg is None:
            return
        beta = ema_beta(self.global_batch, self.hparams.ema_kimg, self.ema_rampup, self.progress.seen_img)
        for ema, live in self.ema_pairs():
            update_ema(ema, live, beta)

    # ------------------------------------------------------------------- logs
    def progress_stats(self) -> dict[str, float]:
        """Host-side values logged with the losses (kimg; subclasses add ADA p, lod, ...)."""
        return {"progress/kimg": self.progress.kimg}

    def log_progress(self) -> None:
        """Every ``log_every_n_steps`` iterations (and at the end) log the reported means: one host read. Stops the
        run at ``total_kimg``; renders the sample grid every ``sample_every_kimg``."""
        if self.progress.done:
            self.trainer.should_stop = True
        every = max(int(getattr(self.trainer, "log_every_n_steps", 50) or 0), 1)
        if self.progress.iteration % every == 0 or self.trainer.should_stop:
            values = {**self.stats.windows["log"].read(), **self.progress_stats()}
            bar = {k: v for k, v in values.items() if k in ("loss/G/adv", "loss/D/real", "progress/kimg")}
            self.log_dict(bar, prog_bar=True, batch_size=self.global_batch)
            self.log_dict({k: v for k, v in values.items() if k not in bar}, batch_size=self.global_batch)
        if self.progress.kimg >= self._next_sample_kimg or self.trainer.should_stop:
            self.save_samples()
            self._next_sample_kimg = self.progress.kimg + self.hparams.sample_every_kimg

    @torch.no_grad()
    def render_grid(self) -> torch.Tensor:
        """Fixed-latent G_ema samples (uint8 [N, C, H, W]) for the sample grid."""
        z = self.grid_z.to(self.device)
        c = torch.zeros([z.shape[0], self.G.c_dim], device=self.device)
        if self.grid_c is not None:
            c = self.grid_c.to(self.device)
        imgs = []
        for zi, ci in zip(z.split(16), c.split(16), strict=True):
            imgs.append(self.G_ema(zi, ci, truncation_psi=self.hparams.sample_truncation_psi, noise_mode="const"))
        return to_uint8(torch.cat(imgs))

    def save_samples(self) -> None:
        """Render the grid on rank 0, write it as PNG and send it to the loggers."""
        if not self.trainer.is_global_zero:
            return
        grid = self.render_grid()
        self.write_figure("fakes", grid, self.hparams.sample_grid, caption=f"kimg {self.progress.kimg:.1f}")

    def write_figure(self, name: str, images: torch.Tensor, grid: tuple[int, int], caption: str) -> Path:
        """``samples/<name><kimg:06d>.png`` in the run directory, also sent to every logger that takes images."""
        out = Path(self.trainer.default_root_dir) / "samples" / f"{name}{self.progress.seen_img // 1000:06d}.png"
        path = save_image_grid(images, out, grid)
        for logger in self.loggers:
            if hasattr(logger, "log_image"):
                logger.log_image(key=f"samples/{name}", images=[str(path)], caption=[caption])
        return path

    # ------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["networks"] = bundle_specs({p.name: getattr(self, p.name) for p in self.bundle_parts})
        checkpoint["run_state"] = {
            "progress": self.progress.state_dict(),
            "rng_states": gather_rng_states(),
            "stats": self.stats.state_dict(),
            "init_record": self.init_record,
            "next_sample_kimg": self._next_sample_kimg,
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "run_state" not in checkpoint:
            checkpoint["run_state"] = self._run_state_of_older_checkpoint(checkpoint)
        state = checkpoint["run_state"]
        self.progress.load_state_dict(state["progress"])
        self.init_record = state.get("init_record")
        self.stats.load_state_dict(state.get("stats", {}), self.device)
        self._next_sample_kimg = state.get("next_sample_kimg", self.progress.kimg + self.hparams.sample_every_kimg)
        states = state.get("rng_states")
        rank = self.trainer.global_rank if self._trainer is not None else 0
        world = self.trainer.world_size if self._trainer is not None else 1
        if states and len(states) == world:
            restore_rng_state(states[rank])
        elif states:
            log.warning(
                "checkpoint was written by %d ranks, this run has %d: random streams are re-seeded",
                len(states),
                world,
            )

    @staticmethod
    def _run_state_of_older_checkpoint(checkpoint: dict) -> dict:
        """Checkpoints written before the host-side run state kept the counters as buffers of the module."""
        sd = checkpoint["state_dict"]
        if "seen_img" not in sd:
            raise KeyError("checkpoint has neither 'run_state' nor the older 'seen_img' buffer: not a GAN checkpoint")
        progress = {"seen_img": int(sd.pop("seen_img")), "iteration": int(sd.pop("iteration", 0))}
        return {"progress": progress, "rng_states": checkpoint.get("rng_states")}
