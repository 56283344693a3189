"""Load any supported network file into the suite's G / D / G_ema; write the suite's own network file.

State-dict converters instead of class-pickle loading (docs/checkpoints.md). Formats, auto-detected by content,
never by extension:

- ``suite.networks/1``: :func:`save_networks` output, read with ``torch.load(weights_only=True)``;
- our Lightning ``.ckpt``: ``state_dict`` with ``G.`` / ``D.`` / ``G_ema.`` prefixes + ``networks``
  ({name: {class, init_kwargs}}) written by the LightningModule's ``on_save_checkpoint``;
- NVlabs PyTorch pickles and the original TensorFlow StyleGAN2 pickles;
- rosinality ``.pt`` and Hammer/genforce ``.pth``.

Foreign files go through :mod:`networks.converters.safe_pickle`: nothing in them is executed. Classes are
rebuilt only from the allow-list :data:`NETWORK_CLASSES` (extend it with :func:`register_network_class`).
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import logging
import pickle
import re
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from networks.converters import hammer, nvidia, rosinality, tf_stylegan2
from networks.converters.safe_pickle import TFNetwork, load_file

log = logging.getLogger(__name__)

NETWORK_FORMAT = "suite.networks/1"
# The suite's own network classes (imported by name only after this check); users extend it with
# register_network_class.
NETWORK_CLASSES = {
    "networks.stylegan2.Generator",
    "networks.stylegan2.Discriminator",
    "networks.genda.AdaptedGenerator",
    "networks.eqgan_sa.EqGANGenerator",
    "networks.depthgan.DepthGANGenerator",
    "networks.depthgan.DepthGANDiscriminator",
    "networks.volumegan.VolumeGANGenerator",
    "networks.volumegan.VolumeGANDiscriminator",
    "networks.insgen_heads.ContrastiveHead",
}
# Data-only classes met in training checkpoints (CLI args, Hydra/Lightning hyper-parameters): kept as inert
# placeholders, never constructed.
CKPT_INERT = (
    "argparse.Namespace",
    "omegaconf.",
    "typing.",
    "pathlib.",
    "collections.defaultdict",
    "builtins.dict",
    "builtins.list",
    "builtins.tuple",
    "builtins.int",
    "builtins.float",
    "builtins.str",
    "builtins.bool",
    "lightning.fabric.utilities.data.AttributeDict",
    "pytorch_lightning.utilities.parsing.AttributeDict",
)


def register_network_class(name: str) -> None:
    """Allow ``module.Class`` (one of the suite's network classes) to be rebuilt from checkpoints."""
    NETWORK_CLASSES.add(name)


def network_class(name: str, source: str) -> type[nn.Module]:
    """The class for ``name`` if it is on the allow-list, else a ValueError naming file and class."""
    if name not in NETWORK_CLASSES:
        raise ValueError(
            f"{source}: network class '{name}' is not on the allow-list {sorted(NETWORK_CLASSES)} "
            "(networks/checkpoint.py: register_network_class)"
        )
    module, _, cls = name.rpartition(".")
    return getattr(importlib.import_module(module), cls)


def class_name(net: nn.Module) -> str:
    return f"{type(net).__module__}.{type(net).__qualname__}"


def build_network(spec: dict, source: str, name: str) -> nn.Module:
    """Instantiate ``spec['class'](**init_kwargs)`` and load ``state_dict`` strictly.

    Missing keys are an error unless they match ``spec['defaults']`` (a regex: buffers a foreign layout
    does not store). A shape mismatch names the tensor and both shapes.
    """
    cls = network_class(spec["class"], source)
    try:
        net = cls(**copy.deepcopy(spec["init_kwargs"]))
    except TypeError as e:
        raise ValueError(f"{source}: cannot build '{name}' ({spec['class']}) from init_kwargs: {e}") from e
    own = net.state_dict()
    given = spec["state_dict"]
    for key, value in given.items():
        if key not in own:
            raise ValueError(f"{source}: '{name}' has tensor '{key}' that {spec['class']} does not have")
        if tuple(value.shape) != tuple(own[key].shape):
            raise ValueError(
                f"{source}: '{name}' tensor '{key}' has shape {tuple(value.shape)} in the file but "
                f"{spec['class']} built from the file's hyper-parameters expects {tuple(own[key].shape)}"
            )
    defaults = re.compile(spec["defaults"]) if spec.get("defaults") else None
    missing = [k for k in own if k not in given and not (defaults and defaults.fullmatch(k))]
    if missing:
        raise ValueError(f"{source}: '{name}' lacks tensors {missing[:8]}{' ...' if len(missing) > 8 else ''}")
    state = {k: given.get(k, own[k]) for k in own}
    net.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})
    return net


def describe_mismatch(own: nn.Module, src: nn.Module) -> str:
    """The constructor arguments that differ between two networks (``key: own vs file``), or ''."""
    a, b = getattr(own, "init_kwargs", None), getattr(src, "init_kwargs", None)
    if not isinstance(a, dict) or not isinstance(b, dict):
        return ""
    diffs = []

    def walk(x, y, prefix):
        for key in sorted(set(x) | set(y), key=str):
            u, v = x.get(key, "<absent>"), y.get(key, "<absent>")
            if isinstance(u, dict) and isinstance(v, dict):
                walk(u, v, f"{prefix}{key}.")
            elif u != v:
                diffs.append(f"{prefix}{key}: {u!r} here vs {v!r} in the file")

    walk(a, b, "")
    return "; ".join(diffs)


def copy_network(own: nn.Module, src: nn.Module, source: str, name: str) -> None:
    """Load ``src``'s tensors into ``own`` strictly; a mismatch names the differing constructor arguments."""
    try:
        own.load_state_dict(src.state_dict())
    except RuntimeError as e:
        diff = describe_mismatch(own, src)
        detail = f"differing arguments: {diff}" if diff else str(e).splitlines()[0]
        raise ValueError(f"{source}: network '{name}' does not match this run's architecture ({detail})") from None


@dataclasses.dataclass(frozen=True)
class BundlePart:
    """One network of a method's bundle (the networks its checkpoints hold and ``init_from`` loads).

    Args:
        name: attribute of the training module (``G``, ``D``, ``G_ema``, ``D_ema``, ``DHead``, ...).
        required: a file without it (and without ``fallback``) is refused; optional parts stay freshly built.
        source: the network's name in the file (default ``name``; GenDA adapts the file's ``G_ema`` as its ``G``).
        fallback: the file's network used when it lacks ``source`` (``G_ema`` <- ``G``, ``D_ema`` <- ``D``).
    """

    name: str
    required: bool = True
    source: str | None = None
    fallback: str | None = None


def bundle_specs(nets: Mapping[str, nn.Module]) -> dict[str, dict]:
    """``{name: {class, init_kwargs}}`` of a bundle, as our Lightning checkpoints store it beside ``state_dict``
    (tensors under ``<name>.*``); :func:`read_networks` rebuilds the networks from the two."""
    specs = {}
    for name, net in nets.items():
        kwargs = copy.deepcopy(net.init_kwargs)
        _check_plain(kwargs, f"networks.{name}.init_kwargs")
        specs[name] = {"class": class_name(net), "init_kwargs": kwargs}
    return specs


def load_bundle(
    path: str | Path, parts: Sequence[BundlePart], device: str | torch.device = "cpu"
) -> tuple[dict[str, nn.Module], dict[str, str]]:
    """The networks of ``parts`` from any supported file, read once.

    Returns ``(networks, provenance)``: ``networks[name]`` is the rebuilt network (absent optional parts are
    missing from the dict) and ``provenance[name]`` says where each part came from (``file:<name>``,
    ``fallback:<name>`` or ``absent``). A required part the file lacks raises an error naming file and part.
    """
    nets = load_networks(path, device=device)
    out, provenance = {}, {}
    for part in parts:
        source = part.source or part.name
        if nets.get(source) is not None:
            out[part.name], provenance[part.name] = nets[source], f"file:{source}"
        elif part.fallback and nets.get(part.fallback) is not None:
            out[part.name], provenance[part.name] = nets[part.fallback], f"fallback:{part.fallback}"
        elif part.required:
            raise ValueError(
                f"{path}: has no network '{source}'{f' (nor {part.fallback!r})' if part.fallback else ''}; "
                f"it holds {nets['meta']['networks']}"
            )
        else:
            provenance[part.name] = "absent"
    return out, provenance


def _check_plain(value, where: str) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str | int):
                raise TypeError(f"{where}: key {k!r} is not a str/int")
            _check_plain(v, f"{where}.{k}")
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]")
    elif not (value is None or isinstance(value, str | int | float | bool)):
        raise TypeError(f"{where}: {type(value).__name__} is not plain data (dict/list/str/number/bool/None)")


def save_networks(path: str | Path, nets: dict[str, nn.Module | None], meta: dict | None = None) -> None:
    """Write ``{'format', 'networks': {name: {class, init_kwargs, state_dict}}, 'meta'}`` (plain data)."""
    present = {name: net for name, net in nets.items() if net is not None}
    for net in present.values():
        network_class(class_name(net), str(path))
    networks = bundle_specs(present)
    for name, net in present.items():
        networks[name]["state_dict"] = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
    meta = dict(meta or {})
    _check_plain(meta, "meta")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": NETWORK_FORMAT, "networks": networks, "meta": meta}, str(path))


def _suite_file(data: dict, source: str, trusted: bool) -> dict:
    if not trusted:
        raise ValueError(f"{source}: a '{NETWORK_FORMAT}' file must hold plain data only (torch weights_only)")
    nets = data.get("networks")
    if not isinstance(nets, dict):
        raise ValueError(f"{source}: key 'networks' must be a dict of {{class, init_kwargs, state_dict}}")
    return {"networks": nets, "meta": {**dict(data.get("meta") or {}), "format": NETWORK_FORMAT}}


def _lightning_ckpt(data: dict, source: str) -> dict:
    specs = data.get("networks")
    if not isinstance(specs, dict):
        raise ValueError(
            f"{source}: Lightning checkpoint without a 'networks' entry ({{name: {{class, init_kwargs}}}} "
            "written by the LightningModule's on_save_checkpoint); cannot tell which networks it holds"
        )
    state = data["state_dict"]
    nets = {}
    for name, spec in specs.items():
        if not isinstance(spec, dict) or "class" not in spec or "init_kwargs" not in spec:
            raise ValueError(f"{source}: networks.{name} must be a dict with 'class' and 'init_kwargs'")
        prefix = f"{name}."
        sub = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        if not sub:
            raise ValueError(f"{source}: networks.{name} is listed but state_dict has no '{prefix}*' tensors")
        nets[name] = {"class": spec["class"], "init_kwargs": spec["init_kwargs"], "state_dict": sub}
    meta = {"format": "lightning-ckpt"}
    for key in ("epoch", "global_step", "seen_img"):
        if isinstance(data.get(key), int | float):
            meta[key] = data[key]
    return {"networks": nets, "meta": meta}


def _classify_torch(data, source: str, trusted: bool) -> dict:
    if not isinstance(data, dict):
        raise ValueError(f"{source}: unknown checkpoint format (a torch file holding {type(data).__name__})")
    if data.get("format") == NETWORK_FORMAT:
        return _suite_file(data, source, trusted)
    if isinstance(data.get("state_dict"), dict):
        return _lightning_ckpt(data, source)
    if isinstance(data.get("models"), dict):
        return hammer.convert_hammer(data, source)
    if any(k in data for k in ("g_ema", "g", "d")):
        return rosinality.convert_rosinality(data, source)
    raise ValueError(
        f"{source}: unknown checkpoint format; top-level keys {sorted(map(str, data))[:12]} match none of "
        f"'{NETWORK_FORMAT}', Lightning (state_dict + networks), Hammer (models), rosinality (g_ema/g/d)"
    )


def read_networks(path: str | Path) -> dict:
    """Detect the format of ``path`` and return ``{'networks': {name: spec}, 'meta': {...}}`` (no modules)."""
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise FileNotFoundError(f"network file not found: {source}")
    if zipfile.is_zipfile(path):
        try:
            data = torch.load(str(path), map_location="cpu", weights_only=True)
            trusted = True
        except pickle.UnpicklingError as e:
            log.info("%s: not plain data (%s); reading with the restricted unpickler", source, str(e)[:200])
            data = load_file(path, inert=CKPT_INERT)[1]
            trusted = False
        return _classify_torch(data, source, trusted)
    kind, data = load_file(path, inert=CKPT_INERT)
    if kind == "torch":
        return _classify_torch(data, source, trusted=False)
    if isinstance(data, tuple) and len(data) == 3 and all(isinstance(n, TFNetwork) for n in data):
        return tf_stylegan2.convert_tf_pickle(data, source)
    if isinstance(data, dict) and any(k in data for k in ("G", "D", "G_ema")):
        return nvidia.convert_nvidia_pickle(data, source)
    raise ValueError(
        f"{source}: unknown pickle content ({type(data).__name__}); expected an NVlabs snapshot dict "
        "(G, D, G_ema) or a TensorFlow (G, D, Gs) tuple"
    )


def load_networks(path: str | Path, device: str | torch.device = "cpu") -> dict:
    """``dict(G=..., D=..., G_ema=..., meta=...)`` from any supported file; absent networks are None.

    Networks come back in eval mode on ``device``; other networks a suite checkpoint lists are included
    under their own names.
    """
    data = read_networks(path)
    source = str(path)
    out: dict = {"G": None, "D": None, "G_ema": None}
    for name, spec in data["networks"].items():
        out[name] = build_network(spec, source, name).to(device).eval()
    out["meta"] = {**data["meta"], "source": source, "networks": sorted(data["networks"])}
    log.info("%s: loaded %s (%s)", source, ", ".join(sorted(data["networks"])), data["meta"]["format"])
    return out
