"""NVlabs PyTorch snapshots (stylegan2-ada-pytorch, and StyleGAN2 nets saved by the stylegan3 code).

Snapshots of ``training/training_loop.py``: a pickle of ``dict(G, D, G_ema, augment_pipe, training_set_kwargs)``
whose networks are ``torch_utils.persistence`` objects. :mod:`.safe_pickle` turns each into a
:class:`PersistentObject` (class name + module ``__dict__``); here the state dict is collected from the
nested ``_parameters`` / ``_buffers`` / ``_modules`` and the constructor kwargs from ``_init_kwargs``.
The sizes the kwargs declare (resolution, channels, latent widths, layer counts) are checked against the
tensors before anything is built, so a hostile file cannot make the loader allocate a huge network.
"""

from __future__ import annotations

import logging
import re

import torch

from . import genforce
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
# Networks of a snapshot dict: NVlabs' three + genforce/insgen's momentum D and contrastive heads.
NETWORK_ENTRIES = ("G", "D", "G_ema", "D_ema", "DHead", "GHead")


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


# Defaults of NVlabs training/networks.py for the size-bearing arguments the kwargs may leave out.
_NV_DEFAULTS = {"channel_base": 32768, "channel_max": 512, "num_layers": 8, "mbstd_num_channels": 1}


def _declared(kwargs: dict, key: str, source: str, name: str):
    value = kwargs.get(key, _NV_DEFAULTS.get(key))
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
        raise ValueError(f"{source}: '{name}' declares {key}={value!r}; expected a non-negative integer")
    return value


def _expect(source: str, name: str, what: str, declared, actual, tensor: str, shape) -> None:
    if declared != actual:
        raise ValueError(
            f"{source}: '{name}' declares {what}={declared} but its tensor '{tensor}' {tuple(shape)} implies "
            f"{actual}; refusing to build a network the file's weights do not match"
        )


def _blocks(state_dict: dict, prefix: str, source: str, name: str) -> list[int]:
    res = sorted({int(m.group(1)) for k in state_dict if (m := re.match(rf"{re.escape(prefix)}b(\d+)\.", k))})
    if not res or res[0] != 4 or res != [4 * 2**i for i in range(len(res))]:
        raise ValueError(f"{source}: '{name}' blocks {res} are not 4, 8, ..., resolution")
    return res


def _check_mapping(kwargs: dict, sd: dict, source: str, name: str, z_dim: int, c_dim: int) -> None:
    """Mapping network: c_dim from the embedding, z_dim from fc0, the layer count and width from the fc's."""
    mapping = kwargs.get("mapping_kwargs") or {}
    n_fc = sum(1 for k in sd if re.fullmatch(r"mapping\.fc\d+\.weight", k))
    embed = sd.get("mapping.embed.weight")
    _expect(
        source,
        name,
        "c_dim",
        c_dim,
        0 if embed is None else embed.shape[1],
        "mapping.embed.weight",
        () if embed is None else embed.shape,
    )
    if n_fc:
        _expect(
            source,
            name,
            "mapping_kwargs.num_layers",
            _declared(mapping, "num_layers", source, name),
            n_fc,
            "mapping.fc*.weight",
            (n_fc,),
        )
        fc0 = sd["mapping.fc0.weight"]
        embed_features = 0 if embed is None else embed.shape[0]
        _expect(source, name, "z_dim", z_dim, fc0.shape[1] - embed_features, "mapping.fc0.weight", fc0.shape)
        if mapping.get("layer_features") is not None and n_fc > 1:
            _expect(
                source,
                name,
                "mapping_kwargs.layer_features",
                mapping["layer_features"],
                fc0.shape[0],
                "mapping.fc0.weight",
                fc0.shape,
            )


def check_declared_sizes(class_name: str, kwargs: dict, sd: dict, source: str, name: str) -> None:
    """Every size ``kwargs`` declares must be the one the tensors have (NVlabs channel rule
    ``min(channel_base // res, channel_max)``); raises ValueError naming the argument and the tensor."""
    if class_name == GENERATOR:
        syn = kwargs.get("synthesis_kwargs") or {}
        res = _blocks(sd, "synthesis.", source, name)
        top = f"synthesis.b{res[-1]}.torgb.weight"
        if top not in sd or "synthesis.b4.conv1.affine.weight" not in sd:
            raise ValueError(f"{source}: '{name}' lacks '{top}' or 'synthesis.b4.conv1.affine.weight'")
        _expect(
            source,
            name,
            "img_resolution",
            _declared(kwargs, "img_resolution", source, name),
            res[-1],
            top,
            sd[top].shape,
        )
        _expect(
            source,
            name,
            "img_channels",
            _declared(kwargs, "img_channels", source, name),
            sd[top].shape[0],
            top,
            sd[top].shape,
        )
        affine = sd["synthesis.b4.conv1.affine.weight"]
        _expect(
            source,
            name,
            "w_dim",
            _declared(kwargs, "w_dim", source, name),
            affine.shape[1],
            "synthesis.b4.conv1.affine.weight",
            affine.shape,
        )
        base, cmax = _declared(syn, "channel_base", source, name), _declared(syn, "channel_max", source, name)
        for r in res:
            key = f"synthesis.b{r}.conv1.weight"
            _expect(
                source,
                name,
                f"channels at {r} (channel_base={base}, channel_max={cmax})",
                min(base // r, cmax),
                sd[key].shape[0],
                key,
                sd[key].shape,
            )
        z_dim, c_dim = _declared(kwargs, "z_dim", source, name), _declared(kwargs, "c_dim", source, name)
    else:
        res = _blocks(sd, "", source, name)
        top = f"b{res[-1]}.fromrgb.weight"
        if top not in sd or "b4.conv.weight" not in sd or "b4.out.weight" not in sd:
            raise ValueError(f"{source}: '{name}' lacks '{top}' or the b4 epilogue tensors")
        _expect(
            source,
            name,
            "img_resolution",
            _declared(kwargs, "img_resolution", source, name),
            res[-1],
            top,
            sd[top].shape,
        )
        _expect(
            source,
            name,
            "img_channels",
            _declared(kwargs, "img_channels", source, name),
            sd[top].shape[1],
            top,
            sd[top].shape,
        )
        base, cmax = _declared(kwargs, "channel_base", source, name), _declared(kwargs, "channel_max", source, name)
        for r in res:
            key = "b4.conv.weight" if r == 4 else f"b{r}.conv0.weight"
            _expect(
                source,
                name,
                f"channels at {r} (channel_base={base}, channel_max={cmax})",
                min(base // r, cmax),
                sd[key].shape[0],
                key,
                sd[key].shape,
            )
        epilogue = kwargs.get("epilogue_kwargs") or {}
        mbstd = _declared(epilogue, "mbstd_num_channels", source, name)
        conv = sd["b4.conv.weight"]
        _expect(
            source,
            name,
            "epilogue_kwargs.mbstd_num_channels",
            mbstd,
            conv.shape[1] - conv.shape[0],
            "b4.conv.weight",
            conv.shape,
        )
        c_dim = _declared(kwargs, "c_dim", source, name)
        if c_dim:
            cmap = kwargs.get("cmap_dim") if kwargs.get("cmap_dim") is not None else min(base // 4, cmax)
            _expect(
                source, name, "cmap_dim", cmap, sd["b4.out.weight"].shape[0], "b4.out.weight", sd["b4.out.weight"].shape
            )
        z_dim = 0
    _check_mapping(kwargs, sd, source, name, z_dim, c_dim)


def convert_network(obj, name: str, source: str) -> dict:
    """One pickled G or D → network entry; refuses classes the suite does not implement."""
    if not isinstance(obj, PersistentObject):
        raise TypeError(f"{source}: '{name}' is {type(obj).__name__}, expected a pickled NVIDIA network")
    if obj.class_name == "CLHead":  # genforce/insgen contrastive head
        return genforce.insgen_head(module_state_dict(obj, source), init_kwargs(obj, (), source), source, name)
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
        use_sel = kwargs.pop("use_sel", None)  # genforce/eqgan-sa generator
        kwargs = generator_kwargs(kwargs, source)
    check_declared_sizes(class_name, kwargs, state_dict, source, name)
    if class_name == GENERATOR and use_sel is not None:
        return genforce.eqgan_generator(kwargs, state_dict, use_sel, source, name)
    return entry(class_name, kwargs, state_dict)


def convert_nvidia_pickle(data: dict, source: str) -> dict:
    """``{'networks': {G, D, G_ema entries}, 'meta': {...}}`` from an unpickled NVIDIA snapshot dict; genforce/insgen
    snapshots add ``D_ema``, ``DHead`` and ``GHead`` (:mod:`.genforce`)."""
    nets = {}
    for name in NETWORK_ENTRIES:
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
    ignored = sorted(set(data) - {*NETWORK_ENTRIES, "augment_pipe", "training_set_kwargs"})
    if ignored:
        log.info("%s: ignoring entries %s", source, ignored)
        meta["ignored_entries"] = ignored
    return {"networks": nets, "meta": meta}
