"""One validation mechanism for every method's configuration: structured configs.

A method's nested block (``model.insgen``, ``model.eqgan``, ``model.ada``, ...) is a dataclass; :func:`parse_block`
merges the given values into it with OmegaConf's structured-config checks (unknown keys and values of the wrong
type are refused, naming ``model.<block>.<key>``), then builds the dataclass, whose ``__post_init__`` checks
ranges. The top-level keys of ``model`` are the constructor arguments of the module class: :func:`check_keys`
refuses a key the class does not take, so a method accepts only the keys it uses.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Mapping
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value is unknown or invalid; the message names the key (``model.insgen.tau``)."""


def parse_block(key: str, schema: type[T], given: Mapping | DictConfig | None) -> T:
    """``schema`` (a dataclass) filled from ``given``; errors name ``key`` + the offending sub-key."""
    if isinstance(given, schema):
        return given
    values = given if isinstance(given, DictConfig) else OmegaConf.create(dict(given or {}))
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), values)
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as e:
        full_key = getattr(e, "full_key", None) or ""
        reason = str(e).splitlines()[0]
        fields = sorted(f.name for f in dataclasses.fields(schema))
        raise ConfigError(f"{key}.{full_key}: {reason} (keys of {key}: {fields})") from None


def check_range(key: str, value: Any, low: float | None = None, high: float | None = None, open_low=False) -> None:
    """Raise :class:`ConfigError` naming ``key`` unless ``low <= value <= high`` (``low < value`` if open_low)."""
    if value is None:
        return
    bad = (low is not None and (value <= low if open_low else value < low)) or (high is not None and value > high)
    if bad:
        lo = "" if low is None else f"{'>' if open_low else '>='} {low}"
        hi = "" if high is None else f"<= {high}"
        raise ConfigError(f"{key}: expected a value {' and '.join(x for x in (lo, hi) if x)}, got {value!r}")


def check_choice(key: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ConfigError(f"{key}: expected one of {list(choices)}, got {value!r}")


def accepted_keys(target: type) -> set[str] | None:
    """Constructor argument names of ``target``, following ``**kwargs`` up the class hierarchy to the base that
    takes them; None when the chain ends in ``**kwargs`` (then any key is passed on)."""
    keys: set[str] = set()
    for cls in target.__mro__:
        if "__init__" not in vars(cls):
            continue
        params = list(inspect.signature(vars(cls)["__init__"]).parameters.values())[1:]
        keys |= {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            return keys
    return None


def check_keys(cfg: Mapping | DictConfig, prefix: str = "model") -> None:
    """Refuse keys of ``cfg`` (a ``_target_`` block) that its target class does not take, naming them."""
    target = cfg.get("_target_")
    if not target:
        return
    module_name, _, attr = str(target).rpartition(".")
    cls = getattr(__import__(module_name, fromlist=[attr]), attr)
    accepted = accepted_keys(cls)
    if accepted is None:
        return
    given = {str(k) for k in cfg if not str(k).startswith("_")}
    unknown = sorted(given - accepted)
    if unknown:
        keys = ", ".join(f"{prefix}.{k}" for k in unknown)
        raise ConfigError(f"{keys}: not used by {cls.__name__} ({target}); its keys are {sorted(accepted)}")
