"""Semi-supervised action recognition: supervised-only baseline, FixMatch and CMPL (arXiv 2112.09690).

Automatic optimisation, one optimiser. Batches come from ``datamodules.video.SemiSupervisedVideoDataModule``:
training ``{x, y, u_weak, u_strong, u_y}`` (``u_y`` is the unlabeled ground truth, used for pseudo-label
diagnostics only), evaluation ``{x: (B, V, C, T, H, W), y}`` with the softmax averaged over the V views.
Evaluation uses an exponential moving average of the trained networks, as FixMatch evaluates
(google-research/fixmatch fixmatch.py L125-128, L138). The test loop has two loaders: the multi-view protocol
(``test/*``, e.g. 10 clips x 3 crops) and a single centre view (``test_1x1/*``).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from lightning_modules.gan import update_ema


def pseudo_label_loss(
    logits_weak: torch.Tensor, logits_strong: torch.Tensor, threshold: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """FixMatch's unlabeled term (arXiv 2001.07685 Sec. 2): (1/μB)·Σ 1[max q ≥ τ]·H(argmax q, p(𝒜(u))), with
    q = softmax(weak logits).

    The pseudo-labels and the mask are computed from detached logits: no gradient flows into the labelling
    prediction. Returns (loss, mask (float, μB), pseudo-labels (μB)).
    """
    with torch.no_grad():
        probs = logits_weak.detach().float().softmax(dim=1)
        conf, pseudo = probs.max(dim=1)
        mask = (conf >= threshold).float()
    loss = (F.cross_entropy(logits_strong, pseudo, reduction="none") * mask).mean()
    return loss, mask, pseudo


def view_logits(net: nn.Module, views: Sequence[torch.Tensor], plain: Sequence[bool]) -> list[torch.Tensor]:
    """Logits of several batches of views from ONE forward of ``net`` (BatchNorm sees one batch, as FixMatch
    concatenates labeled, weak and strong images: google-research/fixmatch fixmatch.py L99-101).

    Views flagged in ``plain`` skip the classifier dropout: they are the pseudo-labelling (weak) views, which
    FixMatch computes without dropout (its classifiers default to ``dropout=0``, libml/models.py L63).
    ``net`` must expose ``features(x)`` and ``head(features, dropout)`` (``networks.resnet3d.ResNet3d``).
    """
    feats = net.features(torch.cat(list(views))).split([v.shape[0] for v in views])
    return [net.head(f, dropout=not p) for f, p in zip(feats, plain, strict=True)]


def _check_views_api(net: nn.Module, key: str) -> None:
    if not (callable(getattr(net, "features", None)) and callable(getattr(net, "head", None))):
        raise TypeError(f"model.{key} ({type(net).__name__}) needs features(x) and head(features, dropout) so that "
                        "pseudo-labels are computed without dropout; use networks.resnet3d.ResNet3d")  # fmt: skip


def _num_classes(net: nn.Module) -> int:
    kwargs = getattr(net, "init_kwargs", None)
    if isinstance(kwargs, dict) and "num_classes" in kwargs:
        return int(kwargs["num_classes"])
    fc = getattr(net, "fc", None)
    if isinstance(fc, nn.Linear):
        return fc.out_features
    raise ValueError(f"{type(net).__name__}: cannot tell the number of classes (no init_kwargs['num_classes'] / fc)")


class _PseudoLabelStats(nn.Module):
    """Per-direction diagnostics: mask rate, accuracy of accepted / all pseudo-labels, class histogram."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.mask_rate = MeanMetric()
        self.acc_accepted = MeanMetric()
        self.acc_all = MeanMetric()
        self.register_buffer("class_counts", torch.zeros(num_classes), persistent=False)

    @torch.no_grad()
    def update(self, mask: torch.Tensor, pseudo: torch.Tensor, truth: torch.Tensor | None) -> None:
        self.mask_rate.update(mask.mean())
        self.class_counts += torch.bincount(pseudo[mask > 0], minlength=self.class_counts.numel()).float()
        if truth is not None:
            correct = (pseudo == truth).float()
            self.acc_all.update(correct.mean())
            accepted = mask.sum()
            if accepted > 0:
                self.acc_accepted.update((correct * mask).sum() / accepted, weight=accepted)


class VideoClassifierBase(pl.LightningModule):
    """Shared parts: optimiser (SGD + warm-up + cosine, suite choice), EMA evaluation networks, multi-view
    evaluation, top-1/top-5 logging.

    ``ema_decay``: evaluation uses ``ema_decay``-averaged copies of the trained networks (FixMatch: 0.999,
    fixmatch.py L85; averaged are the trainable variables, libml/utils.py L129-130, so BatchNorm statistics are
    the live ones, copied at every step). The copies are submodules, so checkpoints hold them and a resumed run
    continues them exactly. ``None`` evaluates the live networks.

    Subclasses implement ``compute_losses(batch) -> dict`` with key ``loss`` and ``train_nets``, and call
    ``_init_eval(num_classes)`` once their networks are set.
    """

    eval_prefixes: tuple[str, ...] = ("",)
    eval_stages: tuple[str, ...] = ("val", "test", "test_1x1")

    def __init__(
        self,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        warmup_epochs: float = 0.0,
        cosine: bool = True,
        no_weight_decay_1d: bool = True,
        ema_decay: float | None = 0.999,
    ):
        super().__init__()
        if ema_decay is not None and not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"model.ema_decay must be in [0, 1) or null (no EMA), got {ema_decay}")
        self.optimizer_factory = optimizer
        self.warmup_epochs = warmup_epochs
        self.cosine = cosine
        self.no_weight_decay_1d = no_weight_decay_1d
        self.ema_decay = ema_decay

    # --- subclass API -------------------------------------------------------------------------------
    def train_nets(self) -> list[nn.Module]:
        raise NotImplementedError

    def compute_losses(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def eval_nets(self) -> list[nn.Module]:
        """The networks evaluated (and used by ``forward``): the EMA copies, or the live networks without EMA."""
        return list(self.ema) if self.ema is not None else self.train_nets()

    def _init_eval(self, num_classes: int) -> None:
        top5 = min(5, num_classes)
        self.eval_metrics = nn.ModuleDict()
        for stage in self.eval_stages:
            for p in self.eval_prefixes:
                self.eval_metrics[f"{stage}_{p}top1"] = MulticlassAccuracy(num_classes, top_k=1, average="micro")
                self.eval_metrics[f"{stage}_{p}top5"] = MulticlassAccuracy(num_classes, top_k=top5, average="micro")
        self.num_classes = num_classes
        self.ema: nn.ModuleList | None = None
        if self.ema_decay is not None:
            self.ema = nn.ModuleList(copy.deepcopy(n) for n in self.train_nets())
            self.ema.requires_grad_(False)
            # optimiser steps folded into the EMA so far (checkpointed with it)
            self.register_buffer("ema_steps", torch.zeros((), dtype=torch.long))

    # --- Lightning hooks ----------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the (primary) evaluation network; inference uses the primary network only (unverified [M])."""
        return self.eval_nets()[0](x)

    def on_fit_start(self) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        n = getattr(dm, "num_classes", None)
        if n is not None and n != self.num_classes:
            raise ValueError(
                f"model.*.num_classes={self.num_classes} but the dataset ({type(dm).__name__}) has {n} classes; "
                "set the network's num_classes to match data"
            )

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        out = self.compute_losses(batch)
        bs = batch["x"].shape[0]
        for k, v in out.items():
            if v.ndim == 0:
                self.log(f"train/{k}", v, on_step=True, on_epoch=True, prog_bar=k == "loss", batch_size=bs,
                         sync_dist=True)  # fmt: skip
        return out["loss"]

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        """Fold each optimiser step into the EMA networks once (FixMatch runs ``ema_op`` after ``train_op``)."""
        if self.ema is None or self.trainer.global_step <= int(self.ema_steps):
            return
        for ema, live in zip(self.ema, self.train_nets(), strict=True):
            update_ema(ema, live, self.ema_decay)
        self.ema_steps.fill_(self.trainer.global_step)

    def on_train_epoch_end(self) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if dm is not None and hasattr(dm, "skipped"):
            self.log("data/skipped", float(dm.skipped), reduce_fx="max", sync_dist=True)

    def _eval_step(self, batch: dict[str, torch.Tensor], stage: str) -> None:
        x, y = batch["x"], batch["y"]
        b, v = x.shape[:2]
        for p, net in zip(self.eval_prefixes, self.eval_nets()):
            probs = net(x.flatten(0, 1)).float().softmax(dim=1).view(b, v, -1).mean(dim=1)
            for k in ("top1", "top5"):
                metric = self.eval_metrics[f"{stage}_{p}{k}"]
                metric.update(probs, y)
                self.log(f"{stage}/{p}{k}", metric, on_step=False, on_epoch=True, prog_bar=k == "top1" and not p,
                         batch_size=b, add_dataloader_idx=False)  # fmt: skip

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        """Loader 0: the multi-view test protocol (``test/*``); loader 1: one centre clip and crop (``test_1x1/*``)."""
        self._eval_step(batch, "test" if dataloader_idx == 0 else "test_1x1")

    def configure_optimizers(self):
        if self.optimizer_factory is None:
            raise ValueError("model.optimizer is missing: expected a `_partial_: true` optimiser config")
        decay, no_decay = [], []
        for p in self.parameters():
            if p.requires_grad:
                (no_decay if (self.no_weight_decay_1d and p.ndim <= 1) else decay).append(p)
        groups = [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]
        opt = self.optimizer_factory([g for g in groups if g["params"]])
        total = max(1, int(self.trainer.estimated_stepping_batches))
        per_epoch = total / max(1, self.trainer.max_epochs or 1)
        warmup = int(self.warmup_epochs * per_epoch)

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            if not self.cosine:
                return 1.0
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class SupervisedVideoModule(VideoClassifierBase):
    """Supervised-only baseline on the labeled clips: L = (1/B)·Σ H(y_b, f(α(x_b))) (the L_s term of CMPL)."""

    def __init__(self, net: nn.Module, **kwargs):
        super().__init__(**kwargs)
        self.save_hyperparameters(ignore=["net", "optimizer"], logger=False)
        self.net = net
        self._init_eval(_num_classes(net))

    def train_nets(self) -> list[nn.Module]:
        return [self.net]

    def compute_losses(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        loss = F.cross_entropy(self.net(batch["x"]), batch["y"])
        return {"loss": loss, "loss_s": loss.detach()}


class FixMatchModule(VideoClassifierBase):
    """FixMatch for clips (arXiv 2001.07685 Sec. 2): L = L_s + λ_u·L_u, one network labelling its own strong views.

    Labeled, weak and strong unlabeled clips go through the network in one forward (as FixMatch, so BatchNorm
    sees one batch); pseudo-labels come from the detached weak logits, computed without dropout (``view_logits``).
    """

    def __init__(self, net: nn.Module, threshold: float = 0.95, lambda_u: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.save_hyperparameters(ignore=["net", "optimizer"], logger=False)
        _check_views_api(net, "net")
        self.net = net
        self.threshold, self.lambda_u = threshold, lambda_u
        self._init_eval(_num_classes(net))
        self.pl_stats = nn.ModuleDict({"self": _PseudoLabelStats(self.num_classes)})

    def train_nets(self) -> list[nn.Module]:
        return [self.net]

    def compute_losses(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if "u_weak" not in batch:
            raise ValueError("FixMatch needs unlabeled clips: set data.mu > 0")
        views = [batch["x"], batch["u_weak"], batch["u_strong"]]
        lx, luw, lus = view_logits(self.net, views, plain=(False, True, False))
        loss_s = F.cross_entropy(lx, batch["y"])
        loss_u, mask, pseudo = pseudo_label_loss(luw, lus, self.threshold)
        self.pl_stats["self"].update(mask, pseudo, batch.get("u_y"))
        return {"loss": loss_s + self.lambda_u * loss_u, "loss_s": loss_s.detach(), "loss_u": loss_u.detach()}

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        _log_pl_stats(self, self.pl_stats)


class CMPLModule(VideoClassifierBase):
    """Cross-Model Pseudo-Labeling (arXiv 2112.09690): primary F and auxiliary A label each other's strong views.

    L_s = (1/B)·Σ [H(y, p_F(α(x))) + H(y, p_A(α(x)))];
    L_u = (1/μB)·Σ [1[max q^A ≥ τ]·H(ŷ^A, p_F(𝒜(u))) + 1[max q^F ≥ τ]·H(ŷ^F, p_A(𝒜(u)))];  L = L_s + λ·L_u.
    With F and A the same network this is exactly twice FixMatch's loss. The weak-view (labelling) logits of both
    networks are computed without dropout (``view_logits``). Evaluation reports both networks (their EMA copies
    by default); the primary is the model (``forward``).
    """

    eval_prefixes = ("", "aux_")

    def __init__(self, primary: nn.Module, auxiliary: nn.Module, threshold: float = 0.95, lambda_u: float = 1.0,
                 **kwargs):  # fmt: skip
        super().__init__(**kwargs)
        self.save_hyperparameters(ignore=["primary", "auxiliary", "optimizer"], logger=False)
        n_f, n_a = _num_classes(primary), _num_classes(auxiliary)
        if n_f != n_a:
            raise ValueError(f"model.primary has {n_f} classes but model.auxiliary has {n_a}; they must match")
        _check_views_api(primary, "primary")
        _check_views_api(auxiliary, "auxiliary")
        self.primary, self.auxiliary = primary, auxiliary
        self.threshold, self.lambda_u = threshold, lambda_u
        self._init_eval(n_f)
        self.pl_stats = nn.ModuleDict({"A_to_F": _PseudoLabelStats(n_f), "F_to_A": _PseudoLabelStats(n_f)})

    def train_nets(self) -> list[nn.Module]:
        return [self.primary, self.auxiliary]

    def compute_losses(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if "u_weak" not in batch:
            raise ValueError("CMPL needs unlabeled clips: set data.mu > 0")
        views, plain = [batch["x"], batch["u_weak"], batch["u_strong"]], (False, True, False)
        fx, fuw, fus = view_logits(self.primary, views, plain)
        ax, auw, aus = view_logits(self.auxiliary, views, plain)
        loss_s_f = F.cross_entropy(fx, batch["y"])
        loss_s_a = F.cross_entropy(ax, batch["y"])
        loss_u_f, mask_af, pseudo_a = pseudo_label_loss(auw, fus, self.threshold)  # A labels for F
        loss_u_a, mask_fa, pseudo_f = pseudo_label_loss(fuw, aus, self.threshold)  # F labels for A
        self.pl_stats["A_to_F"].update(mask_af, pseudo_a, batch.get("u_y"))
        self.pl_stats["F_to_A"].update(mask_fa, pseudo_f, batch.get("u_y"))
        loss_s, loss_u = loss_s_f + loss_s_a, loss_u_f + loss_u_a
        return {
            "loss": loss_s + self.lambda_u * loss_u,
            "loss_s": loss_s.detach(),
            "loss_u": loss_u.detach(),
            "loss_s_primary": loss_s_f.detach(),
            "loss_s_aux": loss_s_a.detach(),
            "loss_u_primary": loss_u_f.detach(),
            "loss_u_aux": loss_u_a.detach(),
        }

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        _log_pl_stats(self, self.pl_stats)


def _log_pl_stats(module: pl.LightningModule, stats: nn.ModuleDict) -> None:
    """Epoch aggregates per direction; ``pl_class_balance`` = entropy of accepted labels / log C (1 = uniform)."""
    for direction, s in stats.items():
        module.log(f"train/{direction}/mask_rate", s.mask_rate.compute(), sync_dist=False)
        if s.acc_all.update_count > 0:
            module.log(f"train/{direction}/pl_acc_all", s.acc_all.compute())
        if s.acc_accepted.update_count > 0:
            module.log(f"train/{direction}/pl_acc", s.acc_accepted.compute())
        counts = module.trainer.strategy.reduce(s.class_counts.clone(), reduce_op="sum")
        total = counts.sum()
        if total > 0 and counts.numel() > 1:
            p = counts / total
            ent = -(p * p.clamp_min(1e-12).log()).sum() / math.log(counts.numel())
            module.log(f"train/{direction}/pl_class_balance", ent)
        s.class_counts.zero_()
        for m in (s.mask_rate, s.acc_all, s.acc_accepted):
            m.reset()
