"""Tiny StyleGAN2 modules and a trainer factory for the GAN training tests."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Checkpoint

from datamodules.embedded import EmbeddedImageDataModule
from lightning_modules.stylegan2_ada import StyleGAN2ADAModule
from networks.augment import AugmentPipe
from networks.stylegan2 import Discriminator, Generator

RES = 16


def tiny_networks(c_dim: int = 0):
    G = Generator(
        z_dim=16,
        c_dim=c_dim,
        w_dim=16,
        img_resolution=RES,
        img_channels=3,
        mapping_kwargs={"num_layers": 2},
        synthesis_kwargs={"channel_base": 128, "channel_max": 16},
    )
    D = Discriminator(
        c_dim=c_dim,
        img_resolution=RES,
        img_channels=3,
        channel_base=128,
        channel_max=16,
        epilogue_kwargs={"mbstd_group_size": 2},
    )
    return G, D


def tiny_module(batch_size: int = 4, total_kimg: float = 0.012, augment: bool = True, cls=StyleGAN2ADAModule, **kwargs):
    G, D = tiny_networks()
    pipe = AugmentPipe.from_preset("bgc") if augment else None
    defaults = dict(
        batch_size=batch_size,
        total_kimg=total_kimg,
        lr=0.002,
        r1_gamma=1.0,
        g_reg_interval=2,
        d_reg_interval=2,
        ema_kimg=0.01,
        ema_rampup=0.05,
        sample_grid=(2, 2),
        sample_every_kimg=100,
        augment_p=0.2 if augment else 0.0,
        ada={"target": 0.6, "interval": 2, "kimg": 1} if augment else None,
    )
    defaults.update(kwargs)
    return cls(G, D, augment_pipe=pipe, **defaults)


def random_batch(n: int = 4, seed: int = 0):
    """A RealBatch of seeded random images in [-1, 1] (unconditional)."""
    from lightning_modules.gan import RealBatch

    g = torch.Generator().manual_seed(seed)
    return RealBatch(torch.rand(n, 3, RES, RES, generator=g) * 2 - 1, torch.zeros(n, 0))


def tiny_datamodule(batch_size: int = 4) -> EmbeddedImageDataModule:
    return EmbeddedImageDataModule(name="faces", resolution=RES, batch_size=batch_size, num_workers=0, seed=0)


def tiny_trainer(root, callbacks=(), **kwargs) -> pl.Trainer:
    defaults = dict(
        accelerator="cpu",
        devices=1,
        max_epochs=-1,
        logger=False,
        enable_checkpointing=any(isinstance(c, Checkpoint) for c in callbacks),
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(root),
        num_sanity_val_steps=0,
    )
    defaults.update(kwargs)
    return pl.Trainer(callbacks=list(callbacks), **defaults)
