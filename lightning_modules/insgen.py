"""InsGen (Yang et al., NeurIPS 2021): StyleGAN2-ADA + instance discrimination, spec ``insgen.md``.

What the paper adds to :class:`~lightning_modules.gan.AdversarialModule`, and nothing else (spec §2-§4):

- ``D_ema``: a momentum copy of D (m = 0.999), updated once per iteration before the phases, no gradients;
- ``DHead`` / ``GHead``: :class:`~networks.insgen_heads.ContrastiveHead` (query MLP, momentum MLP, queue, tau)
  for real and fake instance discrimination, each with its own Adam stepped in the Dmain phase;
- three InfoNCE terms: real ID and fake ID (fake positive from z + delta, delta ~ N(0, sigma^2 I), G frozen)
  added to D's Dmain loss, the G "diversity" term added to G's Gmain loss (heads and D frozen, queue untouched);
- the linear ADA schedule p = p_max * kimg / total_kimg (``ada_linear``) instead of the adaptive rule.

Every constant is a key of the ``insgen`` dict (``conf/model/insgen.yaml``); the code quirks of the original
(§9) are switches: ``fill_fake_from`` (``query`` = faithful) and ``head_momentum_update`` (``every_forward`` =
faithful). Heads are stepped once per Dmain; the suite's base runs one micro-batch per rank and phase, so the
original's per-micro-batch stepping gives the same result here and needs no switch.

Efficiency: the ID features come from D's blocks only (the epilogue does not touch them). With
``query_view=adversarial`` (default, [D]) the query features f(A(.)) are read off the adversarial D passes the
base runs anyway (their ADA draw is independent of the key's draw A', so every InfoNCE term keeps its
distribution); ``separate`` runs the original's extra D passes on fresh draws (the real and fake views share
one pass). The key views always share one D_ema pass.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
from typing import Any

import torch
from torch import nn

from lightning_modules.gan import AdversarialModule, lazy_adam
from networks.insgen_heads import ContrastiveHead, pool_feature, pooled_features

log = logging.getLogger(__name__)

FILL_FAKE_FROM = ("query", "key")
HEAD_MOMENTUM_UPDATE = ("every_forward", "d_phase_only")
QUERY_VIEW = ("adversarial", "separate")


@dataclasses.dataclass
class InsGenConfig:
    """The ``model.insgen`` keys (spec §10); defaults are the official train.py values [C]."""

    tau: float = 0.2
    momentum_head: float = 0.999
    momentum_d_ema: float = 0.999
    lambda_real: float = 1.0
    lambda_fake: float = 1.0
    lambda_g: float = 0.1
    delta_sigma: float = 0.15
    queue: dict = dataclasses.field(default_factory=lambda: {"real_size": None, "fake_size": None, "fraction": 0.05})
    head: dict = dataclasses.field(default_factory=lambda: {"hidden_dim": None, "out_dim": 128})
    fill_fake_from: str = "query"
    head_momentum_update: str = "every_forward"
    query_view: str = "adversarial"
    ada_linear: bool = False
    ada_linear_max: float = 0.6


def parse_insgen_config(cfg: dict | None) -> InsGenConfig:
    """Validate ``model.insgen``: unknown keys and bad values raise an error naming the key."""
    cfg = dict(cfg or {})
    fields = {f.name for f in dataclasses.fields(InsGenConfig)}
    unknown = sorted(set(cfg) - fields)
    if unknown:
        raise ValueError(f"model.insgen: unknown keys {unknown}; expected some of {sorted(fields)}")
    out = InsGenConfig()
    for key, value in cfg.items():
        if key in ("queue", "head"):
            merged = dict(getattr(out, key))
            extra = sorted(set(value or {}) - set(merged))
            if extra:
                raise ValueError(f"model.insgen.{key}: unknown keys {extra}; expected some of {sorted(merged)}")
            merged.update(value or {})
            value = merged
        setattr(out, key, value)
    if out.fill_fake_from not in FILL_FAKE_FROM:
        raise ValueError(f"model.insgen.fill_fake_from: expected one of {FILL_FAKE_FROM}, got {out.fill_fake_from!r}")
    if out.query_view not in QUERY_VIEW:
        raise ValueError(f"model.insgen.query_view: expected one of {QUERY_VIEW}, got {out.query_view!r}")
    if out.head_momentum_update not in HEAD_MOMENTUM_UPDATE:
        raise ValueError(
            f"model.insgen.head_momentum_update: expected one of {HEAD_MOMENTUM_UPDATE}, "
            f"got {out.head_momentum_update!r}"
        )
    for key in ("lambda_real", "lambda_fake", "lambda_g", "delta_sigma"):
        if getattr(out, key) < 0:
            raise ValueError(f"model.insgen.{key}: expected >= 0, got {getattr(out, key)!r}")
    for key in ("real_size", "fake_size"):
        size = out.queue[key]
        if size is not None and (int(size) != size or size < 1):
            raise ValueError(f"model.insgen.queue.{key}: expected null or a positive integer, got {size!r}")
    if not 0 < out.queue["fraction"] <= 1:
        raise ValueError(f"model.insgen.queue.fraction: expected a value in (0, 1], got {out.queue['fraction']!r}")
    return out


def default_queue_size(dataset, fraction: float) -> int:
    """Official rule [C]: int(fraction * N) for N distinct images, x2 with x-flip (FFHQ-2K + mirror -> 200)."""
    n = len(dataset)
    if getattr(dataset, "xflip", False):
        return max(int(fraction * (n // 2)) * 2, 1)
    return max(int(fraction * n), 1)


class InsGenModule(AdversarialModule):
    """StyleGAN2-ADA with InsGen's instance discrimination (spec ``insgen.md``).

    Args: those of :class:`AdversarialModule` (``augment_pipe`` is mandatory: the contrastive views are ADA
    augmentations, spec §4) plus ``insgen``, a dict of :class:`InsGenConfig` keys.
    """

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
                "of the pipe, spec insgen.md §4)"
            )
        super().__init__(generator, discriminator, augment_pipe=augment_pipe, **kwargs)
        self.cfg = parse_insgen_config(insgen)
        cfg = self.cfg
        if cfg.ada_linear:
            self.ada = None  # the linear ramp replaces the adaptive rule (§4 step 8)
        self.D_ema = copy.deepcopy(discriminator).eval().requires_grad_(False)
        head = dict(
            in_dim=discriminator.b4.in_channels,
            hidden_dim=cfg.head["hidden_dim"],
            out_dim=cfg.head["out_dim"],
            tau=cfg.tau,
            momentum=cfg.momentum_head,
        )
        self.DHead = ContrastiveHead(queue_size=cfg.queue["real_size"] or 1, **head)
        self.GHead = ContrastiveHead(queue_size=cfg.queue["fake_size"] or 1, **head)
        self._last_fake: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self._taps: list[torch.Tensor] | None = None

    # ------------------------------------------------------------------ set-up
    def setup(self, stage: str) -> None:
        """Queue sizes left null follow the dataset (§2), then the base set-up (seeds, ``init_from``)."""
        if stage == "fit":
            for head, key in ((self.DHead, "real_size"), (self.GHead, "fake_size")):
                if self.cfg.queue[key] is None:
                    size = default_queue_size(self._train_dataset(key), self.cfg.queue["fraction"])
                    head.resize_queue(size)
                    log.info(
                        "insgen.queue.%s = %d (%.0f%% of the training set)", key, size, 100 * self.cfg.queue["fraction"]
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

    def extra_optimizers(self) -> list[torch.optim.Optimizer]:
        """Adam for GHead (G's lr/betas) and DHead (D's), lazy-regularisation corrected (spec §3) [C]."""
        hp = self.hparams
        g_head = lazy_adam(self.GHead.mlp.parameters(), hp.lr, hp.betas, hp.eps, hp.g_reg_interval)
        d_head = lazy_adam(self.DHead.mlp.parameters(), hp.d_lr or hp.lr, hp.betas, hp.eps, hp.d_reg_interval)
        return [g_head, d_head]

    # ------------------------------------------------------------- generation
    def run_G(self, z: torch.Tensor, c: torch.Tensor, update_emas: bool = True):
        """The base generator call; remembers (z, c, img) so the ID terms reuse the phase's fakes (§4 step 5)."""
        img, ws = super().run_G(z, c, update_emas=update_emas)
        self._last_fake = (z, c, img)
        return img, ws

    def run_D(self, img: torch.Tensor, c: torch.Tensor, **kwargs):
        """The base D call; inside :meth:`tap_features` it also records this pass's pooled b8 feature f(A(img))
        (with gradients), the query view of ``query_view=adversarial``."""
        if self._taps is None:
            return super().run_D(img, c, **kwargs)
        logits, features = super().run_D(img, c, return_features=True, **kwargs)
        self._taps.append(pool_feature(features[8]))
        return logits

    @contextlib.contextmanager
    def tap_features(self, enabled: bool):
        """Collect the pooled features of every ``run_D`` call in the block (a list in call order)."""
        self._taps = [] if enabled else None
        try:
            yield self._taps
        finally:
            self._taps = None

    def query_features(self, img: torch.Tensor) -> torch.Tensor:
        """f(A(img)) from a separate D pass with gradients (``query_view=separate``, the original's passes)."""
        return pooled_features(self.D, self.augment(img))

    @torch.no_grad()
    def key_features(self, img: torch.Tensor) -> torch.Tensor:
        """f̄(A'(img)): D_ema on an independent ADA draw, no gradients (§3)."""
        return pooled_features(self.D_ema, self.augment(img.detach()))

    # ------------------------------------------------------------------ losses
    def gmain_loss(self, real_img: torch.Tensor, real_c: torch.Tensor) -> dict[str, torch.Tensor]:
        """+ lambda_g * InfoNCE(h(f(A(G(z)))), h̄(f̄(A'(G(z)))), Q_fake): heads and D frozen, no enqueue (§3)."""
        use_g = self.cfg.lambda_g > 0
        shared = use_g and self.cfg.query_view == "adversarial"
        with self.tap_features(shared) as taps:
            terms = super().gmain_loss(real_img, real_c)
        if use_g:
            _, _, gen_img = self._last_fake
            feat_q = taps[-1] if shared else self.query_features(gen_img)
            update = self.cfg.head_momentum_update == "every_forward"
            loss, _, _ = self.GHead(feat_q, self.key_features(gen_img), update_momentum=update)
            self.log_stat("insgen/g_id", loss)
            terms["G/id"] = self.cfg.lambda_g * loss
        return terms

    def dmain_loss(self, real_img: torch.Tensor, real_c: torch.Tensor) -> dict[str, torch.Tensor]:
        """+ lambda_r * real ID + lambda_f * fake ID (§3); both heads get gradients and enqueue keys.

        ``query_view=adversarial`` reads the queries off the base's two D passes (fakes first, then reals);
        ``separate`` runs one more D pass on fresh augmentations of both, as the original.
        """
        cfg = self.cfg
        use_real, use_fake = cfg.lambda_real > 0, cfg.lambda_fake > 0
        shared = (use_real or use_fake) and cfg.query_view == "adversarial"
        with self.tap_features(shared) as taps:
            terms = super().dmain_loss(real_img, real_c)
        if not (use_real or use_fake):
            return terms
        n = real_img.shape[0]
        views = []  # (query image, key image, query feature tapped from the base pass), reals first
        if use_real:
            views.append((real_img.detach(), real_img.detach(), taps[1] if shared else None))
        if use_fake:
            gen_z, gen_c, gen_img = self._last_fake
            with torch.no_grad():
                noisy_img, _ = self.run_G(gen_z + cfg.delta_sigma * torch.randn_like(gen_z), gen_c)
            views.append((gen_img.detach(), noisy_img, taps[0] if shared else None))
        img_q, img_k, tapped = zip(*views, strict=True)
        for head in (self.DHead, self.GHead):
            head.mlp.requires_grad_(True)  # the phase toggle froze every parameter outside D's optimiser
            for p in head.mlp.parameters():
                p.grad = None
        feat_q = torch.cat(tapped) if shared else self.query_features(torch.cat(img_q))
        feat_k = self.key_features(torch.cat(img_k))
        if use_real:
            loss, _, k = self.DHead(feat_q[:n], feat_k[:n])
            self.DHead.enqueue(k)
            self.log_stat("insgen/real_id", loss)
            terms["D/real_id"] = cfg.lambda_real * loss
        if use_fake:
            fq, fk = feat_q[-n:], feat_k[-n:]
            loss, _, k = self.GHead(fq, fk)
            self.GHead.enqueue(self.GHead.key(fq) if cfg.fill_fake_from == "query" else k)
            self.log_stat("insgen/fake_id", loss)
            terms["D/fake_id"] = cfg.lambda_fake * loss
        return terms

    # ------------------------------------------------------------------- loop
    def training_step(self, batch, batch_idx):
        """D_ema <- m * D_ema + (1 - m) * D once per iteration, before the phases (§4 step 2) [C]."""
        self.update_d_ema()
        return super().training_step(batch, batch_idx)

    @torch.no_grad()
    def update_d_ema(self) -> None:
        m = self.cfg.momentum_d_ema
        for p_ema, p in zip(self.D_ema.parameters(), self.D.parameters(), strict=True):
            p_ema.mul_(m).add_(p.detach(), alpha=1 - m)

    def after_phase(self, phase: str, real_img: torch.Tensor, real_c: torch.Tensor) -> None:
        """Step both head optimisers after D's Dmain step (spec §3: heads stepped in the D phase)."""
        if phase == "Dmain":
            for opt in self.optimizers()[2:]:
                opt.step()

    def after_iteration(self) -> None:
        """``ada_linear``: p = p_max * kimg / total_kimg (§4 step 8, README: for < 5k images) [R]."""
        if self.cfg.ada_linear:
            ramp = self.seen_img.to(torch.float32) / (1000 * self.hparams.total_kimg)
            self.augment_pipe.p.copy_((self.cfg.ada_linear_max * ramp).clamp(0, self.cfg.ada_linear_max))

    # ------------------------------------------------------------ checkpoints
    def network_specs(self) -> dict[str, dict]:
        """G, D, G_ema and D_ema (heads live in the state dict: ``DHead.*``, ``GHead.*``)."""
        specs = super().network_specs()
        specs["D_ema"] = dict(specs["D"], init_kwargs=self.D_ema.init_kwargs)
        return specs

    def load_pretrained(self, path: str) -> None:
        """G, D, G_ema from any network file (base); D_ema and heads from the file when it has them,
        otherwise D_ema <- D and fresh heads and queues, each logged (issue genforce/insgen#6)."""
        super().load_pretrained(path)
        from networks.checkpoint import load_networks

        nets = load_networks(path)
        if nets.get("D_ema") is not None:
            self.D_ema.load_state_dict(nets["D_ema"].state_dict())
            log.info("init_from=%s: loaded D_ema", path)
        else:
            self.D_ema.load_state_dict(self.D.state_dict())
            log.info("init_from=%s has no D_ema: initialised D_ema = D", path)
        heads = self._heads_from_lightning_ckpt(path)
        for name in ("DHead", "GHead"):
            head: ContrastiveHead = getattr(self, name)
            state = heads.get(name)
            if not state:
                log.info("init_from=%s has no %s: fresh head and queue (K=%d)", path, name, head.queue_size)
                continue
            if state["queue"].shape != head.queue.shape:
                log.info(
                    "init_from=%s: %s queue %s differs from K=%d: fresh queue",
                    path,
                    name,
                    tuple(state["queue"].shape),
                    head.queue_size,
                )
                state = {k: v for k, v in state.items() if not k.startswith("queue")}
            head.load_state_dict(state, strict=False)
            log.info("init_from=%s: loaded %s (%s)", path, name, ", ".join(sorted({k.split(".")[0] for k in state})))

    @staticmethod
    def _heads_from_lightning_ckpt(path: str) -> dict[str, dict[str, torch.Tensor]]:
        """``DHead.*`` / ``GHead.*`` tensors of one of our Lightning checkpoints; {} for any other file."""
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # not a plain torch file (a pickle, a TF snapshot): it has no heads of ours
            return {}
        state = data.get("state_dict") if isinstance(data, dict) else None
        if not isinstance(state, dict):
            return {}
        out: dict[str, dict[str, torch.Tensor]] = {}
        for name in ("DHead", "GHead"):
            sub = {k[len(name) + 1 :]: v for k, v in state.items() if k.startswith(f"{name}.")}
            if sub:
                out[name] = sub
        return out

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
