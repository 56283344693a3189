"""GenDA: one-shot generative domain adaptation (Yang et al., arXiv 2111.09876; spec genda.md).

A pretrained StyleGAN2 G and D stay frozen (eval mode, no gradients); only the attribute adaptor
(``networks.genda.AttributeAdaptor``, between W and the synthesis network) and the attribute classifier (a
head on D's backbone features) are trained. One iteration (spec §3, choices [X]):

1. classifier step: softplus(-h(f(x_ref))) + softplus(h(f(G(A(w_β))))), only h is updated;
2. adaptor step: softplus(-h(f(G(A(w_β))))) (+ ``adaptor_l2`` (||a-1||² + ||b||²)), only (a, b) are updated;

where f is the frozen D backbone, x_ref the augmented reference and w_β = w̄ + β(w − w̄) the diversity
constraint (``train_truncation`` β, training only; grids use ``eval_truncation``, metrics their protocol's
psi).

The module subclasses ``AdversarialModule`` for what GenDA shares with every GAN of the suite (per-rank
seeding, pretrained loading, RNG state in checkpoints, ``seen_img``/``total_kimg`` schedule, step logging,
sample grids); the Gmain/Dmain phase loop is replaced by the two steps above. ``G_ema`` is the
``AdaptedGenerator`` (the frozen G behind the adaptor), so the metrics callback, ``generate.py`` and
``evaluate.py`` see the adapted domain.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from datamodules.imageio import save_image_grid, to_uint8
from lightning_modules.gan import AdversarialModule, sanitize_gradients
from networks.genda import AdaptedGenerator, AttributeAdaptor, AttributeClassifier, discriminator_features

log = logging.getLogger(__name__)

DEMO_HINT = (
    "for genda_demo, train the embedded demo generator first: `make train` (python experiments/train.py "
    "experiment=demo) writes logs/demo/seed0/checkpoints/last.ckpt; or pass model.init_from=<file>"
)


def mean_pairwise_distance(img: torch.Tensor) -> torch.Tensor:
    """Mean L2 distance over all pairs of images [N, ...] (N >= 2): the diversity measure (grids, tests)."""
    flat = img.detach().float().flatten(1)
    return torch.pdist(flat).mean()


class GenDAModule(AdversarialModule):
    """Frozen G/D + trainable attribute adaptor and classifier under a training-time truncation (spec §2-§3).

    Args:
        generator / discriminator: the source networks (architecture must match ``init_from``).
        adaptor: kwargs of ``AttributeAdaptor.for_generator`` (``granularity: shared | per_layer``).
        classifier: kwargs of ``AttributeClassifier.for_discriminator`` (``feature``, ``depth``,
            ``hidden_features``).
        train_truncation: β of the diversity constraint during adaptation; eval_truncation: psi of the grids.
        adaptor_l2: weight of the L2 pull of (a, b) towards the identity.
        adaptor_lr / classifier_lr: learning rates (None: ``lr``); Adam with ``betas``/``eps``.
        source_network: which generator of ``init_from`` is adapted (``G_ema`` or ``G``).
        init_from: the pretrained file (required for training; anything ``networks.checkpoint`` reads).
        **kwargs: ``AdversarialModule`` arguments (batch_size, total_kimg, lr, betas, seed, sample_grid, ...).
    """

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        adaptor: dict | None = None,
        classifier: dict | None = None,
        train_truncation: float = 0.7,
        eval_truncation: float = 1.0,
        adaptor_l2: float = 0.0,
        adaptor_lr: float | None = None,
        classifier_lr: float | None = None,
        source_network: str = "G_ema",
        init_from: str | None = None,
        **kwargs,
    ):
        if getattr(generator, "c_dim", 0):
            raise ValueError(
                f"model.generator.c_dim={generator.c_dim}: GenDA adapts unconditional generators (c_dim=0)"
            )
        if source_network not in ("G_ema", "G"):
            raise ValueError(f"model.source_network must be 'G_ema' or 'G', got {source_network!r}")
        for key, value in (("train_truncation", train_truncation), ("eval_truncation", eval_truncation)):
            if not 0 <= value <= 1:
                raise ValueError(f"model.{key} must be in [0, 1], got {value}")
        super().__init__(generator, discriminator, init_from=init_from, **kwargs)
        self.G.requires_grad_(False).eval()
        self.D.requires_grad_(False).eval()
        self.G_ema = AdaptedGenerator(self.G, AttributeAdaptor.for_generator(self.G, **dict(adaptor or {})))
        with torch.random.fork_rng(devices=[]):  # the head's initialisation depends on the seed only
            torch.manual_seed(self.hparams.seed)
            self.classifier = AttributeClassifier.for_discriminator(self.D, **dict(classifier or {}))

    @property
    def adaptor(self) -> AttributeAdaptor:
        return self.G_ema.adaptor

    def train(self, mode: bool = True):
        """G and D stay in eval mode whatever Lightning asks (spec §2: both fixed)."""
        super().train(mode)
        self.G.eval()
        self.D.eval()
        return self

    # ------------------------------------------------------------------ set-up
    def setup(self, stage: str) -> None:
        if stage == "fit" and not self.hparams.init_from:
            raise ValueError(f"model.init_from is not set: GenDA adapts a pretrained StyleGAN2; {DEMO_HINT}")
        super().setup(stage)

    def load_pretrained(self, path: str) -> None:
        """G <- the file's ``source_network`` (fallback G), D <- its D; strict, with errors naming the key."""
        from networks.checkpoint import load_networks

        if not Path(path).is_file():
            raise FileNotFoundError(f"model.init_from={path}: no such file; {DEMO_HINT}")
        nets = load_networks(path)
        source = self.hparams.source_network
        if nets.get(source) is None:
            log.warning("init_from=%s has no %s: adapting its G", path, source)
            source = "G"
        for key, own, src in (
            ("generator", self.G, nets.get(source)),
            ("discriminator", self.D, nets.get("D")),
        ):
            if src is None:
                raise ValueError(f"model.init_from={path}: the file has no {key}; GenDA needs both G and D")
            try:
                own.load_state_dict(src.state_dict())
            except RuntimeError as e:
                raise ValueError(
                    f"model.init_from={path}: its {key} does not match model.{key} of the config; set "
                    f"model.{key} to the file's architecture {getattr(src, 'init_kwargs', '?')} ({e})"
                ) from e
        log.info("init_from=%s: adapting %s, classifier on its D (%s)", path, source, self.classifier.feature)

    def configure_optimizers(self):
        hp = self.hparams

        def adam(params, lr):
            return torch.optim.Adam(params, lr=lr or hp.lr, betas=tuple(hp.betas), eps=hp.eps)

        return [
            adam(self.adaptor.parameters(), hp.adaptor_lr),
            adam(self.classifier.parameters(), hp.classifier_lr),
        ]

    # ------------------------------------------------------------------ model
    def synthesize(self, z: torch.Tensor, c: torch.Tensor, training: bool) -> torch.Tensor:
        """G(A(w)), truncated by β (``train_truncation``) when training, else ``eval_truncation`` (§2)."""
        hp = self.hparams
        psi = hp.train_truncation if training else hp.eval_truncation
        return self.G_ema(z, c, truncation_psi=psi, noise_mode="random" if training else "const")

    def score(self, img: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Classifier logit on the frozen D backbone (positive = reference domain)."""
        feats = discriminator_features(self.D, self.augment(img), c, self.classifier.feature)
        return self.classifier(feats)

    def classifier_loss(self, real_img: torch.Tensor, real_c: torch.Tensor) -> dict[str, torch.Tensor]:
        """softplus(-h(f(x_ref))) + softplus(h(f(G(A(w_β))))) (spec §3); G, D and A get no gradient."""
        n = real_img.shape[0]
        c = self.sample_c(n, real_c)
        with torch.no_grad():
            fake = self.synthesize(self.sample_z(n), c, training=True)
            fake_feats = discriminator_features(self.D, self.augment(fake), c, self.classifier.feature)
            real_feats = discriminator_features(self.D, self.augment(real_img), real_c, self.classifier.feature)
        real_logits = self.classifier(real_feats)
        self.log_stat("scores/real", real_logits.mean())
        return {
            "D/real": F.softplus(-real_logits).mean(),
            "D/fake": F.softplus(self.classifier(fake_feats)).mean(),
        }

    def adaptor_loss(self, real_img: torch.Tensor, real_c: torch.Tensor) -> dict[str, torch.Tensor]:
        """softplus(-h(f(G(A(w_β))))) (+ adaptor_l2 · ||(a, b) - identity||²) (spec §3)."""
        n = real_img.shape[0]
        c = self.sample_c(n, real_c)
        logits = self.score(self.synthesize(self.sample_z(n), c, training=True), c)
        self.log_stat("scores/fake", logits.mean())
        terms = {"G/adv": F.softplus(-logits).mean()}
        if self.hparams.adaptor_l2 > 0:
            terms["G/l2"] = self.hparams.adaptor_l2 * self.adaptor.deviation()
        return terms

    def training_step(self, batch, batch_idx):
        real_img, real_c = self.preprocess_batch(batch)
        opt_adaptor, opt_classifier = self.optimizers()
        self._stats: dict[str, torch.Tensor] = {}
        steps = (
            (opt_classifier, self.classifier, self.classifier_loss),
            (opt_adaptor, self.adaptor, self.adaptor_loss),
        )
        for opt, net, loss_fn in steps:
            with self.toggled_optimizer(opt):
                opt.zero_grad(set_to_none=True)
                terms = loss_fn(real_img, real_c)
                self.manual_backward(sum(terms.values()))
                sanitize_gradients(net.parameters())
                opt.step()
            for k, v in terms.items():
                self._stats[f"loss/{k}"] = v.detach()
        self.seen_img += self.global_batch
        self.iteration += 1
        self.after_iteration()
        self.log_step()

    # ---------------------------------------------------------------- samples
    @torch.no_grad()
    def render_grid(self) -> torch.Tensor:
        """uint8 [2·rows·cols, C, H, W]: each row of source samples, then the adapted row (same latents)."""
        rows, cols = self.hparams.sample_grid
        z = self.grid_z.to(self.device)
        c = torch.zeros([z.shape[0], self.G.c_dim], device=self.device)
        psi = self.hparams.eval_truncation
        source, adapted = [], []
        for zi, ci in zip(z.split(16), c.split(16), strict=True):
            source.append(self.G(zi, ci, truncation_psi=psi, noise_mode="const"))
            adapted.append(self.G_ema(zi, ci, truncation_psi=psi, noise_mode="const"))
        pair = torch.stack([torch.cat(source), torch.cat(adapted)])  # [2, rows*cols, C, H, W]
        pair = pair.unflatten(1, (rows, cols)).transpose(0, 1)  # [rows, 2, cols, C, H, W]
        return to_uint8(pair.flatten(0, 2))

    def save_samples(self) -> None:
        """Source-vs-adapted grid as PNG + to the loggers (W&B), with the diversity ratio (rank 0)."""
        if not self.trainer.is_global_zero:
            return
        rows, cols = self.hparams.sample_grid
        grid = self.render_grid()
        pairs = grid.float().unflatten(0, (rows, 2, cols))
        ratio = float(
            mean_pairwise_distance(pairs[:, 1].flatten(0, 1)) / mean_pairwise_distance(pairs[:, 0].flatten(0, 1))
        )
        kimg = int(self.seen_img) / 1000
        out_dir = Path(self.trainer.default_root_dir) / "samples"
        path = save_image_grid(grid, out_dir / f"source_vs_adapted{int(self.seen_img):09d}.png", (2 * rows, cols))
        ref = getattr(self.trainer.datamodule, "reference_image", None)
        if ref is not None and not (out_dir / "reference.png").exists():
            save_image_grid(ref()[None], out_dir / "reference.png", (1, 1))
        caption = f"kimg {kimg:.2f}: rows source / adapted, diversity ratio {ratio:.3f}"
        for logger in self.loggers:
            logger.log_metrics({"diversity/ratio": ratio, "kimg": kimg}, step=self.global_step)
            if hasattr(logger, "log_image"):
                logger.log_image(key="samples/source_vs_adapted", images=[str(path)], caption=[caption])
        log.info("samples: %s (diversity adapted/source %.3f)", path, ratio)
