"""InsGen (Yang et al., NeurIPS 2021, arXiv 2106.04566): StyleGAN2-ADA + instance discrimination.

What the paper adds to :class:`~lightning_modules.stylegan2_ada.StyleGAN2ADAModule`, and nothing else (arXiv
2106.04566 Sec. 3; genforce/insgen ``training/loss.py``, ``training/training_loop.py``):

- ``D_ema``: a momentum copy of D (m = 0.999), updated once per iteration before the phases, no gradients;
- ``DHead`` / ``GHead``: :class:`~networks.insgen_heads.ContrastiveHead` (query MLP, momentum MLP, queue) for
  real and fake instance discrimination, each with its own Adam, trained and stepped in the Dmain phase;
- three InfoNCE terms: real ID and fake ID (fake positive from z + delta, delta ~ N(0, sigma^2 I), G frozen)
  added to D's Dmain loss, the G "diversity" term added to G's Gmain loss (heads and D frozen, queue untouched);
- the linear ADA schedule p = p_max * kimg / total_kimg (``ada_linear``) instead of the adaptive rule.

Every constant is a key of ``model.insgen`` (:class:`InsGenConfig`, ``conf/model/insgen.yaml``); the code quirks
of the original are switches: ``fill_fake_from`` (``query`` = faithful) and ``head_momentum_update``
(``every_forward`` = faithful). Heads are stepped once per Dmain; the suite's base runs one micro-batch per rank
and phase, so the original's per-micro-batch stepping gives the same result here and needs no switch.

Efficiency: the ID feature is D's ``b8`` tap, pooled (the epilogue does not touch it). With
``query_view=adversarial`` ([D]) the query features f(A(.)) are the ``b8`` taps of the adversarial D passes the
base runs anyway (declared in ``d_taps``; their ADA draw is independent of the key's draw A', so every InfoNCE
term keeps its distribution); ``separate`` runs the original's extra D passes on fresh draws (the real and fake
views share one pass). The key views always share one D_ema pass. No tensor is kept between calls: the queries
come from the phase output's records by name.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from typing import Any

import torch
from torch import nn

from lightning_modules.config import check_choice, check_range, parse_block
from lightning_modules.contrastive import enqueue, instance_loss, pool_feature
from lightning_modules.gan import RealBatch
from lightning_modules.phases import OptimizerSpec, PhaseOutput, replace_phase
from lightning_modules.stylegan2_ada import StyleGAN2ADAModule
from networks.checkpoint import BundlePart, copy_network
from networks.insgen_heads import ContrastiveHead

log = logging.getLogger(__name__)

FILL_FAKE_FROM = ("query", "key")
HEAD_MOMENTUM_UPDATE = ("every_forward", "d_phase_only")
QUERY_VIEW = ("adversarial", "separate")


@dataclasses.dataclass
class QueueConfig:
    """Queue sizes (None: ``fraction`` of the dataset size, official rule) [C]."""

    real_size: int | None = None
    fake_size: int | None = None
    fraction: float = 0.05

    def __post_init__(self):
        check_range("model.insgen.queue.real_size", self.real_size, low=1)
        check_range("model.insgen.queue.fake_size", self.fake_size, low=1)
        check_range("model.insgen.queue.fraction", self.fraction, 0, 1, open_low=True)


@dataclasses.dataclass
class HeadConfig:
    """Head widths: hidden None = D's feature width (512 -> 512 -> 128 in the paper presets) [C]."""

    hidden_dim: int | None = None
    out_dim: int = 128


@dataclasses.dataclass
class InsGenConfig:
    """``model.insgen``; defaults are the official train.py values [C]."""

    tau: float = 0.2
    momentum_head: float = 0.999
    momentum_d_ema: float = 0.999
    lambda_real: float = 1.0
    lambda_fake: float = 1.0
    lambda_g: float = 0.1
    delta_sigma: float = 0.15
    queue: QueueConfig = dataclasses.field(default_factory=QueueConfig)
    head: HeadConfig = dataclasses.field(default_factory=HeadConfig)
    fill_fake_from: str = "query"
    head_momentum_update: str = "every_forward"
    query_view: str = "adversarial"
    ada_linear: bool = False
    ada_linear_max: float = 0.6

    def __post_init__(self):
        check_choice("model.insgen.fill_fake_from", self.fill_fake_from, FILL_FAKE_FROM)
        check_choice("model.insgen.query_view", self.query_view, QUERY_VIEW)
        check_choice("model.insgen.head_momentum_update", self.head_momentum_update, HEAD_MOMENTUM_UPDATE)
        for key in ("lambda_real", "lambda_fake", "lambda_g", "delta_sigma"):
            check_range(f"model.insgen.{key}", getattr(self, key), low=0)
        check_range("model.insgen.tau", self.tau, low=0, open_low=True)


def default_queue_size(dataset, fraction: float) -> int:
    """Official rule [C]: int(fraction * N) for N distinct images, x2 with x-flip (FFHQ-2K + mirror -> 200)."""
    n = len(dataset)
    if getattr(dataset, "xflip", False):
        return max(int(fraction * (n // 2)) * 2, 1)
    return max(int(fraction * n), 1)


class InsGenModule(StyleGAN2ADAModule):
    """StyleGAN2-ADA with InsGen's instance discrimination.

    Args: those of :class:`StyleGAN2ADAModule` (``augment_pipe`` is mandatory: the contrastive views are ADA
    augmentations) plus ``insgen`` (:class:`InsGenConfig`).
    """

    bundle_parts = StyleGAN2ADAModule.bundle_parts + (
        BundlePart("D_ema", required=False, fallback="D"),
        BundlePart("DHead", required=False),
        BundlePart("GHead", required=False),
    )

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        augment_pipe: nn.Module | None = None,
        insgen: dict | None = None,
        **kwargs: Any,
    ):
        if augment_pipe is None:
            raise ValueError(
                "model.augment_pipe is null: InsGen needs the ADA pipe (its contrastive views are two draws "
                "of the pipe, arXiv 2106.04566 Sec. 3.2)"
            )
        super().__init__(generator, discriminator, augment_pipe=augment_pipe, **kwargs)
        self.cfg = cfg = parse_block("model.insgen", InsGenConfig, insgen)
        if cfg.ada_linear:
            self.ada = None  # the linear ramp replaces the adaptive rule
        self.D_ema = copy.deepcopy(discriminator).eval().requires_grad_(False)
        head = dict(in_dim=discriminator.b4.in_channels, hidden_dim=cfg.head.hidden_dim, out_dim=cfg.head.out_dim)
        self.DHead = ContrastiveHead(queue_size=cfg.queue.real_size or 1, **head)
        self.GHead = ContrastiveHead(queue_size=cfg.queue.fake_size or 1, **head)
        if cfg.query_view == "adversarial":
            passes = {"gmain.fake": cfg.lambda_g, "dmain.fake": cfg.lambda_fake, "dmain.real": cfg.lambda_real}
            self.d_taps = {name: ("b8",) for name, weight in passes.items() if weight > 0}
        self.phases = replace_phase(self.phases, "Dmain", optimizers=("D", "GHead", "DHead"))

    # ------------------------------------------------------------------ set-up
    def setup(self, stage: str) -> None:
        """Queue sizes left null follow the dataset, then the base set-up (seeds)."""
        if stage == "fit":
            for head, key in ((self.DHead, "real_size"), (self.GHead, "fake_size")):
                if getattr(self.cfg.queue, key) is None:
                    size = default_queue_size(self._train_dataset(key), self.cfg.queue.fraction)
                    head.resize_queue(size)
                    log.info(
                        "insgen.queue.%s = %d (%.0f%% of the training set)", key, size, 100 * self.cfg.queue.fraction
                    )
        super().setup(stage)

    def _train_dataset(self, key: str):
        dm = getattr(self.trainer, "datamodule", None)
        dataset = getattr(dm, "train_dataset", None)
        if dataset is None:
            raise ValueError(
                f"model.insgen.queue.{key} is null (= a fraction of the dataset size) but the trainer has no "
                "datamodule with a train_dataset: set model.insgen.queue.real_size and fake_size"
            )
        return dataset

    def optimizer_specs(self) -> list[OptimizerSpec]:
        """+ Adam for GHead (G's lr/betas) and DHead (D's), lazy-regularisation corrected [C]."""
        hp = self.hparams
        common = dict(betas=tuple(hp.betas), eps=hp.eps)
        return super().optimizer_specs() + [
            OptimizerSpec("GHead", self.GHead.mlp.parameters, hp.lr, reg_interval=hp.g_reg_interval, **common),
            OptimizerSpec(
                "DHead", self.DHead.mlp.parameters, hp.d_lr or hp.lr, reg_interval=hp.d_reg_interval, **common
            ),
        ]

    def copy_part(self, name: str, src: nn.Module, source: str) -> None:
        """Heads whose queue size differs from this run's keep their fresh queue (their MLPs are loaded)."""
        own = getattr(self, name)
        if isinstance(own, ContrastiveHead) and src.queue.shape != own.queue.shape:
            log.info(
                "%s: %s queue %s differs from K=%d: fresh queue", source, name, tuple(src.queue.shape), own.queue_size
            )
            state = {k: v for k, v in src.state_dict().items() if not k.startswith("queue")}
            own.load_state_dict(state, strict=False)
            return
        copy_network(own, src, source, name)

    # ---------------------------------------------------------------- features
    def query_features(self, img: torch.Tensor) -> torch.Tensor:
        """f(A(img)) from a separate D pass with gradients (``query_view=separate``, the original's passes)."""
        return pool_feature(self.D.features(self.augment(img), None, ["b8"])["b8"])

    @torch.no_grad()
    def key_features(self, img: torch.Tensor) -> torch.Tensor:
        """f̄(A'(img)): D_ema on an independent ADA draw, no gradients."""
        return pool_feature(self.D_ema.features(self.augment(img.detach()), None, ["b8"])["b8"])

    def _momentum(self, in_d_phase: bool) -> float | None:
        every = self.cfg.head_momentum_update == "every_forward"
        return self.cfg.momentum_head if (every or in_d_phase) else None

    # ------------------------------------------------------------------ losses
    def gmain_loss(self, real: RealBatch) -> PhaseOutput:
        """+ lambda_g * InfoNCE(h(f(A(G(z)))), h̄(f̄(A'(G(z)))), Q_fake): heads and D frozen, no enqueue."""
        out = super().gmain_loss(real)
        if self.cfg.lambda_g <= 0:
            return out
        fake, d_fake = out.records["fake"], out.records["d_fake"]
        feat_q = pool_feature(d_fake.taps["b8"]) if "b8" in d_fake.taps else self.query_features(fake.img)
        loss, _, _ = instance_loss(self.GHead, feat_q, self.key_features(fake.img), self.cfg.tau, self._momentum(False))
        self.stats.report("insgen/g_id", loss)
        return PhaseOutput({**out.terms, "G/id": self.cfg.lambda_g * loss}, out.records)

    def dmain_loss(self, real: RealBatch) -> PhaseOutput:
        """+ lambda_r * real ID + lambda_f * fake ID; both heads get gradients and enqueue keys.

        ``query_view=adversarial`` reads the queries off the ``b8`` taps of the adversarial passes (records
        ``d_real`` and ``d_fake``); ``separate`` runs one more D pass on fresh augmentations of both.
        """
        cfg = self.cfg
        out = super().dmain_loss(real)
        use_real, use_fake = cfg.lambda_real > 0, cfg.lambda_fake > 0
        if not (use_real or use_fake):
            return out
        n = len(real)
        views = []  # (query image, key image, tapped query feature or None), reals first
        if use_real:
            tap = out.records["d_real"].taps.get("b8")
            views.append((real.img.detach(), real.img.detach(), tap))
        if use_fake:
            fake = out.records["fake"]
            with torch.no_grad():
                noisy = self.run_G(fake.z + cfg.delta_sigma * torch.randn_like(fake.z), fake.c)
            views.append((fake.img.detach(), noisy.img, out.records["d_fake"].taps.get("b8")))
        img_q, img_k, tapped = zip(*views, strict=True)
        if all(t is not None for t in tapped):
            feat_q = torch.cat([pool_feature(t) for t in tapped])
        else:
            feat_q = self.query_features(torch.cat(img_q))
        feat_k = self.key_features(torch.cat(img_k))
        terms = dict(out.terms)
        momentum = self._momentum(True)
        if use_real:
            loss, _, k = instance_loss(self.DHead, feat_q[:n], feat_k[:n], cfg.tau, momentum)
            enqueue(self.DHead, k)
            self.stats.report("insgen/real_id", loss)
            terms["D/real_id"] = cfg.lambda_real * loss
        if use_fake:
            fq, fk = feat_q[-n:], feat_k[-n:]
            loss, _, k = instance_loss(self.GHead, fq, fk, cfg.tau, momentum)
            enqueue(self.GHead, self.GHead.key(fq) if cfg.fill_fake_from == "query" else k)
            self.stats.report("insgen/fake_id", loss)
            terms["D/fake_id"] = cfg.lambda_fake * loss
        return PhaseOutput(terms, out.records)

    # ------------------------------------------------------------------- loop
    def before_iteration(self, real: RealBatch) -> None:
        """D_ema <- m * D_ema + (1 - m) * D once per iteration, before the phases [C]."""
        self.update_d_ema()

    @torch.no_grad()
    def update_d_ema(self) -> None:
        m = self.cfg.momentum_d_ema
        ema, live = list(self.D_ema.parameters()), [p.detach() for p in self.D.parameters()]
        torch._foreach_mul_(ema, m)
        torch._foreach_add_(ema, live, alpha=1 - m)

    def after_iteration(self) -> None:
        """``ada_linear``: p = p_max * kimg / total_kimg (InsGen README: for < 5k images) [R]."""
        super().after_iteration()
        if self.cfg.ada_linear:
            ramp = self.progress.kimg / self.hparams.total_kimg
            self.set_augment_p(min(max(self.cfg.ada_linear_max * ramp, 0.0), self.cfg.ada_linear_max))

    # ------------------------------------------------------------ checkpoints
    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Resume (``ckpt_path``) from a plain StyleGAN2-ADA checkpoint: D_ema <- D, fresh heads, logged;
        queues adopt the checkpoint's size when it differs from the configured one."""
        state = checkpoint["state_dict"]
        if not any(k.startswith("D_ema.") for k in state):
            for k in [k for k in state if k.startswith("D.")]:
                state[f"D_ema.{k[2:]}"] = state[k].clone()
            log.info("checkpoint has no D_ema: initialised D_ema = D")
        for name in ("DHead", "GHead"):
            head: ContrastiveHead = getattr(self, name)
            if f"{name}.queue" not in state:
                for k, v in head.state_dict().items():
                    state[f"{name}.{k}"] = v.detach().clone()
                log.info("checkpoint has no %s: fresh head and queue (K=%d)", name, head.queue_size)
            elif state[f"{name}.queue"].shape[1] != head.queue_size:
                log.info(
                    "%s: queue size %d from the checkpoint (configured %d)",
                    name,
                    state[f"{name}.queue"].shape[1],
                    head.queue_size,
                )
                head.resize_queue(state[f"{name}.queue"].shape[1])
        super().on_load_checkpoint(checkpoint)
