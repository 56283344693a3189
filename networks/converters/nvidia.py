"""NVlabs PyTorch snapshots (stylegan2-ada-pytorch, and StyleGAN2 nets saved by the stylegan3 code).

Spec ``stylegan2_ada.md`` §11.1: a pickle of ``dict(G, D, G_ema, augment_pipe, training_set_kwargs)`` whose
networks are ``torch_utils.persistence`` objects. :mod:`.safe_pickle` turns each into a
:class:`PersistentObject` (class name + module ``__dict__``); here the state dict is collected from the
nested ``_parameters`` / ``_buffers`` / ``_modules`` and the constructor kwargs from ``_init_kwargs``.
"""

from __future__ import annotations

import logging

import torch

from .common import DISCRIMINATOR, GENERATOR, entry
from .safe_pickle import PersistentObject, plain

log = logging.getLogger(__name__)

G_ARGS = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "mapping_kwargs", "synthesis_kwargs")
D_ARGS = (
    "c_dim",
    "img_resolution",
    "img_channels",
    "architecture",
    "channel_base",
    "channel_max",
    "num_fp16_res",
    "conv_clamp",
    "cmap_dim",
    "block_kwargs",
    "mapping_kwargs",
    "epilogue_kwargs",
)
# stylegan3's networks_stylegan2.Generator: a forward-time default only, no effect on the weights.
_RUNTIME_ONLY = ("fused_modconv_default",)
_CLASSES = {"Generator": (GENERATOR, G_ARGS), "Discriminator": (DISCRIMINATOR, D_ARGS)}


def module_state_dict(obj: PersistentObject, source: str, prefix: str = "") -> dict[str, torch.Tensor]:
    """``state_dict()`` of a pickled module: parameters, persistent buffers, then sub-modules, recursively."""
    state = obj.state
    out = {}
    skip = set(state.get("_non_persistent_buffers_set") or ())
    for group in ("_parameters", "_buffers"):
        for name, value in (state.get(group) or {}).items():
            if value is None or (group == "_buffers" and name in skip):
                continue
            if not isinstance(value, torch.Tensor):
                raise TypeError(f"{source}: '{prefix}{name}' is a {type(value).__name__}, expected a tensor")
            out[prefix + name] = value
    for name, sub in (state.get("_modules") or {}).items():
        if sub is None:
            continue
        if not isinstance(sub, PersistentObject):
            raise TypeError(f"{source}: sub-module '{prefix}{name}' is not a persistent NVIDIA module ({sub!r})")
        out.update(module_state_dict(sub, source, f"{prefix}{name}."))
    return out


def init_kwargs(obj: PersistentObject, arg_names: tuple, source: str) -> dict:
    """Constructor kwargs from the persistence record (``_init_args`` mapped onto ``arg_names``)."""
    args = tuple(obj.state.get("_init_args") or ())
    kwargs = plain(dict(obj.state.get("_init_kwargs") or {}))
    if len(args) > len(arg_names):
        raise ValueError(
            f"{source}: {obj.class_name} has {len(args)} positional init args, expected at most {len(arg_names)}"
        )
    kwargs.update(dict(zip(arg_names, plain(args))))
    return kwargs


def generator_kwargs(kwargs: dict, source: str) -> dict:
    """Bring stylegan3-style kwargs (synthesis kwargs flattened into G's) to ada's nested form."""
    kwargs = dict(kwargs)
    for key in _RUNTIME_ONLY:
        if key in kwargs:
            log.info("%s: dropping runtime-only Generator kwarg %s=%r", source, key, kwargs.pop(key))
    if "synthesis_kwargs" not in kwargs:
        synthesis = {k: kwargs.pop(k) for k in list(kwargs) if k not in G_ARGS}
        kwargs["synthesis_kwargs"] = synthesis
        mapping = dict(kwargs.get("mapping_kwargs") or {})
        mapping.setdefault("w_avg_beta", 0.998)  # stylegan3's networks_stylegan2.MappingNetwork default
        kwargs["mapping_kwargs"] = mapping
    unknown = sorted(set(kwargs) - set(G_ARGS))
    if unknown:
        raise ValueError(f"{source}: unknown Generator kwargs {unknown}")
    return kwargs


def convert_network(obj, name: str, source: str) -> dict:
    """One pickled G or D → network entry; refuses classes the suite does not implement."""
    if not isinstance(obj, PersistentObject):
        raise TypeError(f"{source}: '{name}' is {type(obj).__name__}, expected a pickled NVIDIA network")
    if obj.class_name not in _CLASSES:
        raise ValueError(
            f"{source}: '{name}' is a '{obj.class_name}', expected an NVIDIA StyleGAN2 Generator or Discriminator"
        )
    class_name, arg_names = _CLASSES[obj.class_name]
    state_dict = module_state_dict(obj, source)
    kwargs = init_kwargs(obj, arg_names, source)
    if class_name == GENERATOR:
        if any(k.startswith(("synthesis.input.", "synthesis.L0_")) for k in state_dict):
            raise ValueError(
                f"{source}: '{name}' is a StyleGAN3 generator (networks_stylegan3); only StyleGAN2 is supported"
            )
        kwargs = generator_kwargs(kwargs, source)
    return entry(class_name, kwargs, state_dict)


def convert_nvidia_pickle(data: dict, source: str) -> dict:
    """``{'networks': {G, D, G_ema entries}, 'meta': {...}}`` from an unpickled NVIDIA snapshot dict."""
    nets = {}
    for name in ("G", "D", "G_ema"):
        if data.get(name) is not None:
            nets[name] = convert_network(data[name], name, source)
    if not nets:
        raise ValueError(f"{source}: NVIDIA pickle without G, D or G_ema (keys: {sorted(data)})")
    meta: dict = {"format": "nvlabs-pickle"}
    if isinstance(data.get("training_set_kwargs"), dict):
        meta["training_set_kwargs"] = {
            k: v
            for k, v in plain(data["training_set_kwargs"]).items()
            if isinstance(v, str | int | float | bool) or v is None
        }
    pipe = data.get("augment_pipe")
    if isinstance(pipe, PersistentObject):
        p = (pipe.state.get("_buffers") or {}).get("p")
        if isinstance(p, torch.Tensor):
            meta["augment_p"] = float(p.reshape(-1)[0])
    ignored = sorted(set(data) - {"G", "D", "G_ema", "augment_pipe", "training_set_kwargs"})
    if ignored:
        log.info("%s: ignoring entries %s", source, ignored)
        meta["ignored_entries"] = ignored
    return {"networks": nets, "meta": meta}
