"""What ``experiments/train.py`` checks before a checkpoint reaches Lightning (docs/reliability.md).

- Every checkpoint is read weights-only (``torch.load(weights_only=True)``): a file whose unpickling would run
  code is refused, whatever the torch version's default.
- ``ckpt_path=auto`` tries ``last.ckpt`` and ``hpc_ckpt_*.ckpt`` newest first and skips unreadable ones with
  a log line; an explicit or last unreadable checkpoint stops the run with the next step to take.
- A network file handed in as ``ckpt_path`` is told apart from a training checkpoint (use ``model.init_from``).
- The composed config is compared with the one stored in the checkpoint (``run_config``); differences outside
  :data:`RESUME_FREE_KEYS` are refused, naming the keys, unless ``resume_config_changes`` allows them.
- The networks' constructor arguments stored in the checkpoint are compared with the ones the config builds.
"""

from __future__ import annotations

import fnmatch
import inspect
import logging
import pickle
import re
import time
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

log = logging.getLogger("train")

# Keys a resume may change without being asked: where things are written and logged, what is measured and
# how often, the hardware, and how long the run goes on (suite design decision [D]).
RESUME_FREE_KEYS = (
    "ckpt_path",
    "print_config",
    "cpu_threads",
    "resume_config_changes",
    "run_id",
    "task_name",
    "tags",
    "optimized_metric",
    "test_after_fit",
    "paths.*",
    "logger.*",
    "callbacks.*",
    "metrics.*",
    "ops.*",
    "hparams_search*",
    "trainer.accelerator",
    "trainer.devices",
    "trainer.num_nodes",
    "trainer.strategy*",
    "trainer.default_root_dir",
    "trainer.log_every_n_steps",
    "trainer.enable_*",
    "trainer.max_epochs",
    "trainer.max_steps",
    "trainer.max_time",
    "trainer.num_sanity_val_steps",
    "data.num_workers",
    "data.pin_memory",
    "model.total_kimg",
    "model.sample_every_kimg",
    "model.sample_grid",
    "model.init_from",
)
NEXT_STEP = (
    "Next step: ckpt_path=<another checkpoint> to resume from it, ckpt_path=null to restart this run directory "
    "from scratch (its checkpoints are overwritten), or run_id=<new id> for a new run directory"
)


class ResumeError(ValueError):
    """A checkpoint cannot or must not be resumed; the message says why and what to do instead."""


def _first_line(err: BaseException) -> str:
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    globals_ = [ln for ln in lines if "GLOBAL" in ln or "Unsupported" in ln]
    return (globals_ or lines or [type(err).__name__])[0][:300]


def _not_a_training_checkpoint(path: Path, why: str) -> ResumeError:
    """A network file (ours or a foreign one) passed as ``ckpt_path``, or a file that is no checkpoint at all."""
    from networks.checkpoint import read_networks
    from networks.converters.safe_pickle import UnsafePickleError

    try:
        fmt = read_networks(path)["meta"]["format"]
    except UnsafePickleError as e:
        return ResumeError(f"{path}: refusing to read it ({e}). {NEXT_STEP}")
    except Exception:  # neither a checkpoint nor a network file
        return ResumeError(
            f"{path}: cannot be read as a checkpoint ({why}); it may be truncated (a kill or a full disk during a "
            f"write) or not a checkpoint at all. {NEXT_STEP}"
        )
    return ResumeError(
        f"{path} is a network file ({fmt}), not a training checkpoint (it has no optimiser or progress state to "
        f"resume): to start training from its weights pass model.init_from={path} with ckpt_path=null"
    )


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A Lightning checkpoint read weights-only and memory-mapped (tensors stay on disk until used)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ckpt_path={path}: no such checkpoint file")
    if not zipfile.is_zipfile(path):  # torch.save writes zip archives; truncation loses the central directory
        raise _not_a_training_checkpoint(path, "not a torch zip archive")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as e:
        raise ResumeError(
            f"{path}: refusing to load it: it holds objects beyond plain data ({_first_line(e)}); nothing in it "
            f"was executed. Only checkpoints written by this suite are resumed. {NEXT_STEP}"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as e:
        raise ResumeError(
            f"{path}: cannot be read ({type(e).__name__}: {_first_line(e)}); it may be truncated (a kill or a "
            f"full disk during a write). {NEXT_STEP}"
        ) from None
    if not isinstance(ckpt, dict) or "pytorch-lightning_version" not in ckpt or "state_dict" not in ckpt:
        raise _not_a_training_checkpoint(path, "no Lightning training state")
    return ckpt


def find_checkpoint(ckpt_path: str | None, ckpt_dir: Path, root_dir: Path) -> tuple[str | None, dict | None]:
    """``(path, checkpoint)`` to resume from, or ``(None, None)`` for a fresh start.

    ``auto``: ``last.ckpt`` and ``hpc_ckpt_*.ckpt`` of this run directory, newest first; an unreadable one is
    skipped with a warning; when all are unreadable the run stops (rather than overwrite them).
    """
    if ckpt_path is None:
        return None, None
    if ckpt_path != "auto":
        return str(ckpt_path), read_checkpoint(ckpt_path)
    candidates = [p for p in [ckpt_dir / "last.ckpt", *root_dir.glob("hpc_ckpt_*.ckpt")] if p.is_file()]
    candidates.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    skipped = []
    for path in candidates:
        try:
            return str(path), read_checkpoint(path)
        except (ResumeError, OSError) as e:
            reason = str(e).split(f". {NEXT_STEP}")[0]
            log.warning("ckpt_path=auto: skipping %s: %s", path, reason)
            skipped.append(f"  {reason}")
    if skipped:
        raise ResumeError(
            "ckpt_path=auto: none of the checkpoints of this run directory can be resumed:\n"
            + "\n".join(skipped)
            + f"\n{NEXT_STEP}"
        )
    return None, None


def _normalise(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _normalise(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_normalise(v) for v in value]
    return value


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict) and node:
        out = {}
        for k, v in node.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: node}


_ABSENT = "<absent>"


def config_differences(saved: dict, current: dict) -> list[tuple[str, Any, Any]]:
    """``(dotted key, saved value, current value)`` for every leaf that differs (lists compare whole)."""
    old, new = _flatten(_normalise(saved)), _flatten(_normalise(current))
    keys = sorted(set(old) | set(new))
    return [(k, old.get(k, _ABSENT), new.get(k, _ABSENT)) for k in keys if old.get(k, _ABSENT) != new.get(k, _ABSENT)]


def _matches(key: str, patterns: Iterable[str]) -> bool:
    """``key`` is matched by a glob, lies under a listed key, or is the group a ``group.*`` glob covers."""
    return any(fnmatch.fnmatchcase(key, p) or key.startswith(f"{p}.") or f"{key}.*" == p for p in patterns)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_config(saved: dict | None, current: dict, allowed: Any, path: str) -> list[str]:
    """Keys that changed since the checkpoint and are allowed (logged); raises ResumeError naming the others.

    ``allowed``: ``resume_config_changes`` -- ``"allow"`` (every change), or a list of dotted keys or globs.
    """
    if isinstance(allowed, ListConfig):
        allowed = OmegaConf.to_container(allowed)
    if allowed is None:
        allowed = []
    if allowed != "allow" and not (isinstance(allowed, list) and all(isinstance(k, str) for k in allowed)):
        raise ResumeError(f"resume_config_changes: expected 'allow' or a list of config keys, got {allowed!r}")
    if saved is None:
        log.warning("%s holds no run config (written before configs were recorded): changes cannot be checked", path)
        return []
    diffs = [d for d in config_differences(saved, current) if not _matches(d[0], RESUME_FREE_KEYS)]
    refused = [] if allowed == "allow" else [d for d in diffs if not _matches(d[0], allowed)]
    if refused:
        lines = "\n".join(f"  {k}: {_short(old)} -> {_short(new)}" for k, old, new in refused)
        keys = ",".join(k for k, _, _ in refused)
        raise ResumeError(
            f"{path}: the config differs from the one this checkpoint was trained with:\n{lines}\n"
            f"Restore those values, allow the change explicitly with resume_config_changes=[{keys}] (or "
            "resume_config_changes=allow), or start a new run with run_id=<new id>"
        )
    for key, old, new in diffs:
        log.warning("resume: %s changed %s -> %s (allowed by resume_config_changes)", key, _short(old), _short(new))
    return [k for k, _, _ in diffs]


def check_network_arguments(ckpt: dict, path: str, model: torch.nn.Module) -> None:
    """The checkpoint's ``networks`` (class + constructor arguments) against the networks the config built."""
    specs = ckpt.get("networks")
    if not isinstance(specs, dict):
        return
    lines = []
    for name, spec in specs.items():
        net = getattr(model, name, None)
        kwargs = getattr(net, "init_kwargs", None)
        if not isinstance(spec, dict) or kwargs is None:
            continue
        cls = f"{type(net).__module__}.{type(net).__qualname__}"
        if spec.get("class") != cls:
            lines.append(f"  {name}: checkpoint {spec.get('class')}, config {cls}")
        for key, old, new in config_differences(spec.get("init_kwargs") or {}, kwargs):
            lines.append(f"  {name}.{key}: checkpoint {_short(old)}, config {_short(new)}")
    if lines:
        raise ResumeError(
            f"{path}: the networks the config builds differ from the checkpoint's:\n" + "\n".join(lines) + "\n"
            "Set the config to the checkpoint's values to resume it, or start a new run with run_id=<new id>"
        )


def explain_load_error(err: RuntimeError, path: str | None) -> ResumeError | None:
    """torch's strict ``load_state_dict`` error (one line per tensor) as a short message, else None."""
    text = str(err)
    if path is None or "Error(s) in loading state_dict" not in text:
        return None
    problems = [ln.strip() for ln in re.split(r"\n\t|\n", text)[1:] if ln.strip()]
    shown = "\n".join(f"  {p[:200]}" for p in problems[:4])
    more = f"\n  ... and {len(problems) - 4} more" if len(problems) > 4 else ""
    return ResumeError(
        f"{path}: its weights do not fit the model the config builds ({len(problems)} problems):\n{shown}{more}\n"
        "The architecture settings differ from the checkpoint's: restore them, or start a new run with "
        "run_id=<new id>"
    )


# Types whose string values are a mistake (data.batch_size=abc): checked before anything is built.
_NUMERIC = {"int", "float", "bool"}
_NUMERIC_OK = _NUMERIC | {"None", "Optional", "Union", "typing", "typing.Optional", "typing.Union"}


def _parameter_types(target: str) -> dict[str, str]:
    """Annotations (as text) of the parameters of a ``_target_``; empty when it cannot be imported."""
    module, _, attr = target.rpartition(".")
    try:
        obj = getattr(__import__(module, fromlist=[attr]), attr)
        params = inspect.signature(obj).parameters
    except (ImportError, AttributeError, TypeError, ValueError):
        return {}
    out = {}
    for name, p in params.items():
        ann = p.annotation
        if ann is not inspect.Parameter.empty:
            out[name] = ann if isinstance(ann, str) else getattr(ann, "__name__", str(ann))
    return out


def _check_value(key: str, value: Any, annotation: str | None, target: str) -> None:
    if annotation is None:
        return
    words = set(re.findall(r"[A-Za-z_][\w.]*", annotation))
    if not (words & _NUMERIC) or not words <= _NUMERIC_OK:
        return
    from lightning_modules.config import ConfigError

    if isinstance(value, str):
        raise ConfigError(f"{key}={value!r}: expected {annotation} (argument of {target})")
    if isinstance(value, float) and "float" not in words and "int" in words and not value.is_integer():
        raise ConfigError(f"{key}={value!r}: expected an integer (argument of {target})")


def _check_node(node: DictConfig, key: str) -> None:
    target = node.get("_target_")
    types = _parameter_types(str(target)) if target else {}
    for name in node:
        if str(name).startswith("_"):
            continue
        try:
            value = node[name]
        except OmegaConfBaseException:  # missing or broken interpolation: instantiate reports it
            continue
        if isinstance(value, DictConfig):
            _check_node(value, f"{key}.{name}")
        elif isinstance(value, ListConfig):
            for i, item in enumerate(value):
                if isinstance(item, DictConfig):
                    _check_node(item, f"{key}.{name}.{i}")
        elif target:
            _check_value(f"{key}.{name}", value, types.get(str(name)), str(target))


def check_argument_types(cfg: DictConfig) -> None:
    """Numbers given as text (``data.batch_size=abc``) are refused naming the key, before anything is built:
    values of ``_target_`` arguments annotated int/float/bool in data, model, callbacks and metrics."""
    for group in ("data", "model", "callbacks", "metrics"):
        node = cfg.get(group)
        if isinstance(node, DictConfig):
            _check_node(node, group)


def keep_previous_metrics(log_dirs: Iterable[str | Path], resuming: bool) -> None:
    """A fresh start in a used run directory moves ``metrics.csv`` aside (``metrics-<time>.csv``) instead of
    deleting it; a resume appends to it (``lightning_modules.loggers.ResumableCSVLogger``)."""
    from pytorch_lightning.utilities.rank_zero import rank_zero_only

    if resuming or rank_zero_only.rank != 0:
        return
    for folder in log_dirs:
        path = Path(folder) / "metrics.csv"
        if path.is_file():
            stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(path.stat().st_mtime))
            kept = path.with_name(f"metrics-{stamp}.csv")
            path.rename(kept)
            log.info("fresh start: the previous %s is kept as %s", path, kept.name)
