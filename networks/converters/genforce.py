"""The method networks of genforce/insgen and genforce/eqgan-sa snapshots (NVlabs pickles with extra entries).

Both originals are forks of stylegan2-ada-pytorch and write the NVlabs snapshot dict (:mod:`.nvidia`):

- genforce/insgen ``training/training_loop.py`` (lines 401-416) adds ``D_ema`` (an NVIDIA ``Discriminator``),
  ``DHead`` and ``GHead``: ``training/contrastive_head.py`` ``CLHead``, a persistent module whose query and
  momentum MLPs are plain ``torch.nn.Sequential(Linear, ReLU, Linear)`` and whose buffers are ``queue``
  [128, K] and ``queue_ptr`` [1]. :func:`insgen_head` turns one into :class:`networks.insgen_heads.ContrastiveHead`
  (same state-dict keys), with every size taken from the tensors.
- genforce/eqgan-sa ``training/networks.py`` ``Generator(..., use_sel)`` (line 737) holds a ``SEL`` per synthesis
  layer (``InstanceNorm2d`` without state, ``LeakyReLU``, equalised-lr ``Conv2dLayer``s: the keys of
  :class:`networks.eqgan_sa.SpatialEncodingLayer`) and always builds the heatmap encoder ``hm_conv*`` (lines
  648-655), also with ``use_sel=False``, where nothing uses it. :func:`eqgan_generator` turns it into
  :class:`networks.eqgan_sa.EqGANGenerator` (heatmap sampler and SEL widths at the original's values), dropping the
  unused encoder of a ``use_sel=False`` generator.
"""

from __future__ import annotations

import logging

import torch

from .common import entry

log = logging.getLogger(__name__)

INSGEN_HEAD = "networks.insgen_heads.ContrastiveHead"
EQGAN_GENERATOR = "networks.eqgan_sa.EqGANGenerator"
_HEAD_LINEARS = ("mlp.0", "mlp.2", "momentum_mlp.0", "momentum_mlp.2")


def _shape(sd: dict, key: str, ndim: int, source: str, name: str) -> tuple:
    value = sd.get(key)
    if not isinstance(value, torch.Tensor) or value.ndim != ndim:
        got = "missing" if value is None else f"shape {tuple(value.shape)}"
        raise ValueError(f"{source}: InsGen head '{name}' tensor '{key}' is {got}, expected {ndim} dimensions")
    return tuple(value.shape)


def insgen_head(sd: dict, kwargs: dict, source: str, name: str) -> dict:
    """A ``CLHead`` state dict (+ its init kwargs ``inplanes``, ``queue_size``, ...) -> ContrastiveHead entry."""
    hidden, in_dim = _shape(sd, "mlp.0.weight", 2, source, name)
    out_dim, hidden2 = _shape(sd, "mlp.2.weight", 2, source, name)
    q_dim, queue_size = _shape(sd, "queue", 2, source, name)
    for layer, want in zip(_HEAD_LINEARS, [(hidden, in_dim), (out_dim, hidden)] * 2, strict=True):
        if _shape(sd, f"{layer}.weight", 2, source, name) != want or _shape(sd, f"{layer}.bias", 1, source, name) != (
            want[0],
        ):
            raise ValueError(f"{source}: InsGen head '{name}' layer '{layer}' does not match {want} (out, in)")
    if hidden2 != hidden or q_dim != out_dim or _shape(sd, "queue_ptr", 1, source, name) != (1,):
        raise ValueError(
            f"{source}: InsGen head '{name}': queue {(q_dim, queue_size)} / queue_ptr do not fit the MLP "
            f"{in_dim} -> {hidden} -> {out_dim}"
        )
    declared = {"inplanes": in_dim, "queue_size": queue_size}
    for key, actual in declared.items():
        if kwargs.get(key) not in (None, actual):
            raise ValueError(
                f"{source}: InsGen head '{name}' declares {key}={kwargs[key]!r} but its tensors say {actual}"
            )
    sd = {**sd, "queue_ptr": sd["queue_ptr"].to(torch.int64)}
    init = dict(in_dim=in_dim, hidden_dim=hidden, out_dim=out_dim, queue_size=queue_size)
    return entry(INSGEN_HEAD, init, sd)


def eqgan_generator(kwargs: dict, sd: dict, use_sel, source: str, name: str) -> dict:
    """An EqGAN-SA ``Generator`` (kwargs already in NVlabs' nested form, ``use_sel`` popped) -> EqGANGenerator."""
    if not isinstance(use_sel, bool):
        raise ValueError(f"{source}: EqGAN-SA generator '{name}' declares use_sel={use_sel!r}, expected a bool")
    encoder = [k for k in sd if k.startswith("synthesis.hm_conv")]
    if use_sel and not encoder:
        raise ValueError(f"{source}: EqGAN-SA generator '{name}' has use_sel=True but no heatmap encoder tensors")
    if not use_sel and encoder:
        log.info(
            "%s: '%s' has use_sel=False: dropping its unused heatmap encoder (%d tensors)", source, name, len(encoder)
        )
        sd = {k: v for k, v in sd.items() if k not in encoder}
    return entry(EQGAN_GENERATOR, {**kwargs, "use_sel": use_sel, "sel_kwargs": {}}, sd)
