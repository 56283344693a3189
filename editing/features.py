"""Read and write access to the intermediate features of a StyleGAN2 synthesis network.

LoGAN (arXiv 2105.08222, abstract) edits "the intermediate generative features" of a pretrained generator. A
*site* names one place in ``G.synthesis`` (NVIDIA layout, NVlabs/stylegan2-ada-pytorch ``training/networks.py``):

- ``b{res}.conv0``, ``b{res}.conv1``, ``b{res}.torgb``: the output of one modulated layer;
- ``b{res}``: the output ``(x, img)`` of a whole block (features and the RGB skip image accumulated so far).

``synthesize(G, ws, edits=..., capture=...)`` renders with callbacks that may replace the output of any site
and returns the outputs of the sites asked for. The callbacks are forward hooks (``with_kwargs``), removed when
the call returns; ``networks/stylegan2.py`` is not changed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

Callback = Callable[[nn.Module, tuple, dict, Any], Any]
LAYER_KINDS = ("conv0", "conv1", "torgb")


def _synthesis(G: nn.Module) -> nn.Module:
    syn = getattr(G, "synthesis", G)
    if not hasattr(syn, "block_resolutions") or not hasattr(syn, f"b{syn.block_resolutions[0]}"):
        raise ValueError(
            f"feature access needs a StyleGAN2 synthesis network with blocks b4..b{{R}} "
            f"(networks.stylegan2.SynthesisNetwork); got {type(syn).__name__}"
        )
    return syn


def synthesis_sites(G: nn.Module) -> dict[str, nn.Module]:
    """Every site of ``G.synthesis`` in execution order (per block: conv0, conv1, torgb, then the block)."""
    syn = _synthesis(G)
    sites: dict[str, nn.Module] = {}
    for res in syn.block_resolutions:
        block = getattr(syn, f"b{res}")
        for kind in LAYER_KINDS:
            if hasattr(block, kind):
                sites[f"b{res}.{kind}"] = getattr(block, kind)
        sites[f"b{res}"] = block
    return sites


def layer_w_index(G: nn.Module) -> dict[str, int]:
    """w+ index of every modulated layer: conv0 / conv1 use consecutive entries, ToRGB shares the next block's
    first entry (NVlabs ``SynthesisNetwork.forward``: ``w_idx += block.num_conv``).
    """
    syn = _synthesis(G)
    index: dict[str, int] = {}
    w_idx = 0
    for res in syn.block_resolutions:
        block = getattr(syn, f"b{res}")
        k = w_idx
        for kind in ("conv0", "conv1"):
            if hasattr(block, kind):
                index[f"b{res}.{kind}"] = k
                k += 1
        if hasattr(block, "torgb"):
            index[f"b{res}.torgb"] = w_idx + block.num_conv
        w_idx += block.num_conv
    return index


def check_site(G: nn.Module, site: str) -> str:
    sites = synthesis_sites(G)
    if site not in sites:
        raise ValueError(f"synthesis site {site!r} does not exist; expected one of {list(sites)}")
    return site


def site_resolution(G: nn.Module, site: str) -> int:
    """Spatial size of the site's output (a block's resolution for conv0/conv1/torgb and the block)."""
    check_site(G, site)
    return int(site.split(".")[0][1:])


def expand_layers(G: nn.Module, layers: Iterable[str]) -> list[str]:
    """Modulated layer names from ``layers``; a block name ``b{res}`` stands for all its modulated layers."""
    index = layer_w_index(G)
    out: list[str] = []
    for name in layers:
        name = str(name)
        if name in index:
            found = [name]
        else:
            found = [k for k in index if k.split(".")[0] == name]
        if not found:
            raise ValueError(f"style layer {name!r}: expected a block b{{res}} or one of {list(index)}")
        out.extend(k for k in found if k not in out)
    return out


def layers_after(G: nn.Module, site: str) -> list[str]:
    """Modulated layers that run after ``site`` (in execution order)."""
    names = list(synthesis_sites(G))
    check_site(G, site)
    index = layer_w_index(G)
    return [k for k in names[names.index(site) + 1 :] if k in index]


@contextmanager
def feature_hooks(G: nn.Module, callbacks: Mapping[str, Callback | Sequence[Callback]]):
    """Install ``callbacks`` on sites for the duration of the ``with`` block.

    A callback is called as ``cb(module, args, kwargs, output)`` after the site ran and returns the output to
    use instead (or None to keep it); several callbacks on one site run in the given order.
    """
    sites = synthesis_sites(G)
    handles = []
    try:
        for site, cbs in callbacks.items():
            check_site(G, site)
            for cb in [cbs] if callable(cbs) else list(cbs):
                handles.append(sites[site].register_forward_hook(cb, with_kwargs=True))
        yield
    finally:
        for h in handles:
            h.remove()


def _capture_hook(store: dict, site: str) -> Callback:
    def hook(module, args, kwargs, output):
        store[site] = output

    return hook


@torch.no_grad()
def synthesize(
    G: nn.Module,
    ws: torch.Tensor,
    edits: Mapping[str, Callback | Sequence[Callback]] | None = None,
    capture: Iterable[str] = (),
    noise_mode: str = "const",
    **synthesis_kwargs,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """``(image, {site: output})``: ``G.synthesis(ws)`` with ``edits`` applied; captured outputs are taken after
    the edits of the same site.
    """
    captured: dict[str, Any] = {}
    callbacks: dict[str, list[Callback]] = {k: ([v] if callable(v) else list(v)) for k, v in (edits or {}).items()}
    for site in capture:
        callbacks.setdefault(site, []).append(_capture_hook(captured, site))
    with feature_hooks(G, callbacks):
        img = _synthesis(G)(ws, noise_mode=noise_mode, **synthesis_kwargs)
    return img, captured


def receptive_margin(G: nn.Module, site: str) -> int:
    """Image pixels by which a change confined to a region of ``site``'s output can spread in the final image.

    Spread per layer, measured on the suite's ops (a change of one input cell at output resolution s):
    3x3 conv ±1 cell, up-sampling 3x3 conv ±2 cells beyond the up-sampled cell (transposed conv + 4-tap FIR),
    RGB skip up-sampling ±1 cell; ToRGB is 1x1. A change of a block's output ``(x, img)`` starts both paths.
    """
    syn = _synthesis(G)
    check_site(G, site)
    R = int(syn.img_resolution)
    rx: int | None = None
    rimg: int | None = None
    for res in syn.block_resolutions:
        block = getattr(syn, f"b{res}")
        cell = R // res
        if rimg is not None and res > 4:
            rimg += cell
        for kind, spread in (("conv0", 2), ("conv1", 1)):
            if not hasattr(block, kind):
                continue
            if rx is not None:
                rx += spread * cell
            if site == f"b{res}.{kind}":
                rx = 0
        if hasattr(block, "torgb"):
            if site == f"b{res}.torgb":
                rimg = 0 if rimg is None else rimg
            elif rx is not None:
                rimg = rx if rimg is None else max(rimg, rx)
        if site == f"b{res}":
            rx, rimg = 0 if rx is None else rx, 0 if rimg is None else rimg
    return int(rimg if rimg is not None else (rx or 0))
