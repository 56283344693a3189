"""GenDA: one-shot generative domain adaptation (Yang et al., arXiv 2111.09876).

A pretrained StyleGAN2 G and D stay frozen (eval mode, no gradients); only the attribute adaptor
(``networks.genda.AttributeAdaptor``, between W and the synthesis network) and the attribute classifier (a
head on D's features) are trained. Two phases per iteration on the base engine (choices [X], no official code):

1. ``classifier``: softplus(-h(f(T(x_ref)))) + softplus(h(f(T(G(A(w_β)))))), only h is updated;
2. ``adaptor``: softplus(-h(f(T(G(A(w_β)))))) (+ ``adaptor_l2`` (||a-1||² + ||b||²)), only (a, b) are updated;

where f is a per-sample tap of the frozen D (``classifier.feature``, default the pooled ``b8`` block output: a
reference batch is copies of one image, so a feature after D's minibatch-std layer would let h separate reference
from fakes by batch spread alone), T the same light augmentation for the reference (applied by the one-shot
datamodule) and the fakes (``fake_augment``, applied here with the datamodule's function), and
w_β = w̄ + β(w − w̄) the diversity constraint (``train_truncation`` β, training only; grids use
``eval_truncation``, metrics their protocol's psi).

The module is a :class:`~lightning_modules.gan.GANModule` with these two phases (run state, seeding,
``init_from``, checkpoints, ``total_kimg``, logging and grids are the base's); it takes none of StyleGAN2's
loss keys. ``G_ema`` is the ``AdaptedGenerator`` (the frozen G behind the adaptor), so the metrics callback,
``generate.py`` and ``evaluate.py`` see the adapted domain; there is no EMA.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from datamodules.one_shot import augment_batch
from lightning_modules.config import check_choice, check_range, parse_block
from lightning_modules.gan import GANModule, RealBatch
from lightning_modules.phases import OptimizerSpec, Phase, PhaseOutput
from networks.checkpoint import BundlePart
from networks.genda import (
    GRANULARITIES,
    AdaptedGenerator,
    AttributeAdaptor,
    AttributeClassifier,
    discriminator_features,
)
from networks.image_output import save_image_grid, to_uint8

log = logging.getLogger(__name__)

DEMO_HINT = (
    "for genda_demo, train the embedded demo generator first: `make train` (python experiments/train.py "
    "experiment=demo) writes logs/demo/seed0/checkpoints/last.ckpt; or pass model.init_from=<file>"
)


@dataclasses.dataclass
class FakeAugmentConfig:
    """``model.fake_augment``: the reference's light augmentation (x-flip, integer translation up to ``translate``
    of the size, reflect padding) also on the fakes before D [D]; ``enabled: false`` = reference only (ablation).
    ``conf/model/genda.yaml`` ties ``hflip``/``translate`` to ``data.hflip``/``data.translate``."""

    enabled: bool = True
    hflip: bool = True
    translate: float = 0.0625

    def __post_init__(self):
        check_range("model.fake_augment.translate", self.translate, 0, 0.5)


@dataclasses.dataclass
class AdaptorConfig:
    """``model.adaptor``: ``granularity`` ``shared`` (one (a, b) for all layers, W) | ``per_layer`` (W+) [M]."""

    granularity: str = "shared"

    def __post_init__(self):
        check_choice("model.adaptor.granularity", self.granularity, GRANULARITIES)


@dataclasses.dataclass
class ClassifierConfig:
    """``model.classifier``: the D tap it reads (``feature``), ``depth`` FC layers, their width [X]."""

    feature: str = "b8"
    depth: int = 1
    hidden_features: int | None = None

    def __post_init__(self):
        check_range("model.classifier.depth", self.depth, low=1)


def mean_pairwise_distance(img: torch.Tensor) -> torch.Tensor:
    """Mean L2 distance over all pairs of images [N, ...] (N >= 2): the diversity measure (grids, tests)."""
    flat = img.detach().float().flatten(1)
    return torch.pdist(flat).mean()


class GenDAModule(GANModule):
    """Frozen G/D + trainable attribute adaptor and classifier under a training-time truncation.

    Args:
        generator / discriminator: the source networks (architecture must match ``init_from``).
        adaptor: kwargs of ``AttributeAdaptor.for_generator`` (``granularity: shared | per_layer``).
        classifier: kwargs of ``AttributeClassifier.for_discriminator`` (``feature``, ``depth``,
            ``hidden_features``).
        fake_augment: :class:`FakeAugmentConfig`.
        train_truncation: β of the diversity constraint during adaptation; eval_truncation: psi of the grids.
        adaptor_l2: weight of the L2 pull of (a, b) towards the identity.
        lr, betas, eps: Adam of both heads; adaptor_lr / classifier_lr override lr.
        source_network: which generator of ``init_from`` is adapted (``G_ema`` or ``G``).
        init_from: the pretrained file (required for training; anything ``networks.checkpoint`` reads).
        batch_size, total_kimg, seed, sample_grid, sample_every_kimg: as :class:`GANModule`.
    """

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        adaptor: dict | None = None,
        classifier: dict | None = None,
        fake_augment: dict | None = None,
        train_truncation: float = 0.7,
        eval_truncation: float = 1.0,
        adaptor_l2: float = 0.0,
        lr: float = 0.002,
        betas: tuple[float, float] = (0.0, 0.99),
        eps: float = 1e-8,
        adaptor_lr: float | None = None,
        classifier_lr: float | None = None,
        source_network: str = "G_ema",
        init_from: str | None = None,
        batch_size: int = 8,
        total_kimg: float = 16,
        seed: int = 0,
        sample_grid: tuple[int, int] = (4, 8),
        sample_every_kimg: float = 4.0,
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
        super().__init__(
            generator,
            discriminator,
            batch_size=batch_size,
            total_kimg=total_kimg,
            lr=lr,
            betas=betas,
            eps=eps,
            ema_kimg=None,
            seed=seed,
            sample_grid=sample_grid,
            sample_every_kimg=sample_every_kimg,
            sample_truncation_psi=eval_truncation,
            init_from=init_from,
        )
        self.fake_augment = parse_block("model.fake_augment", FakeAugmentConfig, fake_augment)
        self.G.requires_grad_(False).eval()
        self.D.requires_grad_(False).eval()
        adaptor_cfg = parse_block("model.adaptor", AdaptorConfig, adaptor)
        classifier_cfg = parse_block("model.classifier", ClassifierConfig, classifier)
        self.G_ema = AdaptedGenerator(self.G, AttributeAdaptor.for_generator(self.G, **dataclasses.asdict(adaptor_cfg)))
        with torch.random.fork_rng(devices=[]):  # the head's initialisation depends on the seed only
            torch.manual_seed(self.hparams.seed)
            self.classifier = AttributeClassifier.for_discriminator(self.D, **dataclasses.asdict(classifier_cfg))
        self.phases = [
            Phase("classifier", ("classifier",), self.classifier_loss),
            Phase("adaptor", ("adaptor",), self.adaptor_loss),
        ]

    @property
    def adaptor(self) -> AttributeAdaptor:
        return self.G_ema.adaptor

    def train(self, mode: bool = True):
        """G and D stay in eval mode whatever Lightning asks (both fixed)."""
        super().train(mode)
        self.G.eval()
        self.D.eval()
        return self

    # ------------------------------------------------------------------ set-up
    def setup(self, stage: str) -> None:
        if stage == "fit" and not self.hparams.init_from:
            raise ValueError(f"model.init_from is not set: GenDA adapts a pretrained StyleGAN2; {DEMO_HINT}")
        super().setup(stage)

    def init_parts(self) -> tuple[BundlePart, ...]:
        """G <- the file's ``source_network`` (fallback its G), D <- its D; both required."""
        return (BundlePart("G", source=self.hparams.source_network, fallback="G"), BundlePart("D"))

    def load_init(self, path: str) -> None:
        if not Path(path).is_file():
            raise FileNotFoundError(f"model.init_from={path}: no such file; {DEMO_HINT}")
        super().load_init(path)
        log.info("init_from=%s: classifier on its D (%s)", path, self.classifier.feature)

    def optimizer_specs(self) -> list[OptimizerSpec]:
        hp = self.hparams
        common = dict(betas=tuple(hp.betas), eps=hp.eps)
        return [
            OptimizerSpec("adaptor", self.adaptor.parameters, hp.adaptor_lr or hp.lr, **common),
            OptimizerSpec("classifier", self.classifier.parameters, hp.classifier_lr or hp.lr, **common),
        ]

    # ------------------------------------------------------------------ model
    def sample_z(self, n: int) -> torch.Tensor:
        return torch.randn([n, self.G.z_dim], device=self.device)

    def synthesize(self, z: torch.Tensor, c: torch.Tensor, training: bool) -> torch.Tensor:
        """G(A(w)), truncated by β (``train_truncation``) when training, else ``eval_truncation``."""
        hp = self.hparams
        psi = hp.train_truncation if training else hp.eval_truncation
        return self.G_ema(z, c, truncation_psi=psi, noise_mode="random" if training else "const")

    def augment_fakes(self, img: torch.Tensor) -> torch.Tensor:
        """T(fakes): the reference's augmentation (``datamodules.one_shot.augment_batch``), differentiable."""
        cfg = self.fake_augment
        if not cfg.enabled:
            return img
        return augment_batch(img, cfg.hflip, cfg.translate)

    def features(self, img: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """f(img): the classifier's tap of the frozen D."""
        return discriminator_features(self.D, img, c, self.classifier.feature)

    def classifier_loss(self, real: RealBatch) -> PhaseOutput:
        """softplus(-h(f(T(x_ref)))) + softplus(h(f(T(G(A(w_β)))))); G, D and A get no gradient."""
        n = len(real)
        c = real.c[:n]
        with torch.no_grad():
            fake = self.augment_fakes(self.synthesize(self.sample_z(n), c, training=True))
            fake_feats = self.features(fake, c)
            real_feats = self.features(real.img, real.c)
        real_logits = self.classifier(real_feats)
        self.stats.report("scores/real", real_logits)
        terms = {
            "D/real": F.softplus(-real_logits).mean(),
            "D/fake": F.softplus(self.classifier(fake_feats)).mean(),
        }
        return PhaseOutput(terms)

    def adaptor_loss(self, real: RealBatch) -> PhaseOutput:
        """softplus(-h(f(T(G(A(w_β)))))) (+ adaptor_l2 · ||(a, b) - identity||²)."""
        n = len(real)
        c = real.c[:n]
        fake = self.augment_fakes(self.synthesize(self.sample_z(n), c, training=True))
        logits = self.classifier(self.features(fake, c))
        self.stats.report("scores/fake", logits)
        terms = {"G/adv": F.softplus(-logits).mean()}
        if self.hparams.adaptor_l2 > 0:
            terms["G/l2"] = self.hparams.adaptor_l2 * self.adaptor.deviation()
        return PhaseOutput(terms)

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
        caption = f"kimg {self.progress.kimg:.2f}: rows source / adapted, diversity ratio {ratio:.3f}"
        path = self.write_figure("source_vs_adapted", grid, (2 * rows, cols), caption)
        ref = getattr(self.trainer.datamodule, "reference_image", None)
        if ref is not None and not (path.parent / "reference.png").exists():
            save_image_grid(ref()[None], path.parent / "reference.png", (1, 1))
        for logger in self.loggers:
            logger.log_metrics({"diversity/ratio": ratio, "progress/kimg": self.progress.kimg}, step=self.global_step)
        log.info("samples: %s (diversity adapted/source %.3f)", path, ratio)
