"""Toy generators with NVIDIA's API for the editing tests."""

from __future__ import annotations

import torch
from torch import nn

from networks.stylegan2 import Generator


class _LinearMapping(nn.Module):
    def __init__(self, dim: int, num_ws: int):
        super().__init__()
        self.num_ws = num_ws
        self.register_buffer("w_avg", torch.zeros(dim))

    def forward(self, z, c=None, truncation_psi=1.0, truncation_cutoff=None):
        ws = z[:, None, :].repeat(1, self.num_ws, 1)
        cut = self.num_ws if truncation_cutoff is None else truncation_cutoff
        ws[:, :cut] = self.w_avg.lerp(ws[:, :cut], truncation_psi)
        return ws


class _LinearSynthesis(nn.Module):
    def __init__(self, P: torch.Tensor, channels: int, res: int):
        super().__init__()
        self.register_buffer("P", P)
        self.channels, self.res = channels, res

    def forward(self, ws, noise_mode="const"):
        return (ws.mean(dim=1) @ self.P.T).reshape(ws.shape[0], self.channels, self.res, self.res)


class LinearToyG(nn.Module):
    """``G(w+) = P · mean_ℓ(w+_ℓ)``; the image has ``channels × res × res`` outputs, ``P`` is ``[C·res²,
    D]``.
    """

    def __init__(self, P: torch.Tensor, channels: int, res: int, num_ws: int = 4):
        super().__init__()
        self.z_dim = self.w_dim = P.shape[1]
        self.c_dim, self.num_ws, self.img_resolution = 0, num_ws, res
        self.mapping = _LinearMapping(P.shape[1], num_ws)
        self.synthesis = _LinearSynthesis(P, channels, res)


def tiny_stylegan2(res: int = 16, seed: int = 0, w_dim: int = 16) -> Generator:
    """Randomly initialised StyleGAN2 (small channels) in eval mode."""
    torch.manual_seed(seed)
    return Generator(
        z_dim=w_dim,
        c_dim=0,
        w_dim=w_dim,
        img_resolution=res,
        img_channels=3,
        mapping_kwargs={"num_layers": 2},
        synthesis_kwargs={"channel_base": 128, "channel_max": 16},
    ).eval()
