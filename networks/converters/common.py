"""Shared helpers of the converters: network entries, tensor lookup, channel-table fitting."""

from __future__ import annotations

import numpy as np
import torch

GENERATOR = "networks.stylegan2.Generator"
DISCRIMINATOR = "networks.stylegan2.Discriminator"

# Keys a foreign layout does not carry; the freshly built network's own values are kept (legacy.py does so).
FILTER_KEYS = r".*resample_filter"


def entry(class_name: str, init_kwargs: dict, state_dict: dict, defaults: str | None = None) -> dict:
    """One network as ``{'class', 'init_kwargs', 'state_dict'}`` (+ ``defaults``: regex of kept keys)."""
    out = {"class": class_name, "init_kwargs": init_kwargs, "state_dict": state_dict}
    if defaults is not None:
        out["defaults"] = defaults
    return out


def as_tensor(x) -> torch.Tensor:
    """numpy array or tensor → contiguous float32 CPU tensor (a copy, never a view of the file data)."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.array(x, order="C"))  # keeps 0-d arrays 0-d
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected an array or tensor, got {type(x).__name__}")
    return x.detach().to(torch.float32).contiguous().clone()


def take(params: dict, key: str, source: str, what: str):
    """``params[key]`` or a KeyError naming the file, the layout and the missing tensor."""
    if key not in params:
        raise KeyError(f"{source}: {what} tensor '{key}' is missing from the file")
    return params[key]


def shape_of(x) -> tuple:
    return tuple(x.shape)


def fit_channels(channels: dict[int, int], source: str, preferred: tuple = (32768, 16384)) -> tuple[int, int]:
    """``(channel_base, channel_max)`` with ``min(base // r, max) == channels[r]`` for every resolution r.

    NVIDIA's channel rule (``training/networks.py``); the standard bases are tried first so that releases get their
    usual kwargs.
    """
    cmax = max(channels.values())
    candidates = list(preferred) + [c * r for r, c in channels.items() if c < cmax] + [cmax * max(channels)]
    for base in candidates:
        if all(min(base // r, cmax) == c for r, c in channels.items()):
            return int(base), int(cmax)
    table = ", ".join(f"{r}: {c}" for r, c in sorted(channels.items()))
    raise ValueError(
        f"{source}: channel counts per resolution ({table}) do not follow min(channel_base / r, channel_max)"
    )


def res_log2(r: int) -> int:
    return int(np.log2(r))
