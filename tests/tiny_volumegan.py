"""A tiny random VolumeGAN generator (16x16 output, 8x8 rays) shared by the tests of what consumes one."""

from __future__ import annotations

import torch

from networks.volumegan import VolumeGANGenerator

TINY_VOLUMEGAN = dict(
    z_dim=8,
    w_dim=8,
    img_resolution=16,
    nerf_resolution=8,
    volume_channels=[4, 4, 4],
    pe_freqs=2,
    mlp_hidden=8,
    feat_dim=8,
    num_coarse=4,
    num_fine=4,
    channel_base=64,
    channel_max=8,
    mapping_kwargs=dict(num_layers=2),
)


def opaque_tiny_volumegan(seed: int = 0) -> VolumeGANGenerator:
    """Seeded random weights with a high density bias: an opaque field, so every ray ends on a surface inside the
    sampled depth range (in training mode, as constructed)."""
    torch.manual_seed(seed)
    G = VolumeGANGenerator(**TINY_VOLUMEGAN)
    with torch.no_grad():
        G.synthesis.mlp.density.bias.fill_(3.0)
    return G
