"""Backend switch ``auto | compiled | ref`` for the custom ops (docs/ops.md, Backends).

- ``ref``: the pure-PyTorch reference path everywhere (the specification).
- ``compiled``: the registered ``suite_ops`` operators of the ahead-of-time built extension ``ops._C``;
  raises if the extension is missing or lacks a kernel for the tensor's device. Never falls back silently.
- ``auto``: the compiled operator where it exists for the device and is measured to be faster
  (``AUTO_CPU_OPS``, from ``experiments/bench_ops.py``), the reference path otherwise.

The choice comes from ``set_backend`` (the train entry point passes ``cfg.ops.backend``), else from the
environment variable ``SUITE_OPS_BACKEND``, else ``auto``. It is logged once.
"""

from __future__ import annotations

import logging
import os

import torch

log = logging.getLogger(__name__)

BACKENDS = ("auto", "compiled", "ref")
ENV_VAR = "SUITE_OPS_BACKEND"

# Ops whose CPU kernel beats the reference path on the StyleGAN2 shapes of experiments/bench_ops.py
# (volume_sample: VolumeGAN's 32^3 x 32 volume, experiments/bench_volumegan.py).
AUTO_CPU_OPS = frozenset({"upfirdn2d", "bias_act", "grid_sample", "volume_sample", "winograd"})

_state: dict = {"backend": None, "logged": False}
_ext: dict = {"loaded": None, "error": None, "cpu_avx2": False}


def _load_extension() -> bool:
    """Import ``ops._C`` once (built by ``pip install -e .``, never compiled here) + its autograd."""
    if _ext["loaded"] is None:
        try:
            from ops import _compiled  # noqa: F401  (imports ops._C and registers fake/autograd kernels)

            _ext["loaded"] = True
            _ext["cpu_avx2"] = bool(torch.ops.suite_ops.cpu_has_avx2())
        except ImportError as err:
            _ext["loaded"], _ext["error"] = False, err
    return _ext["loaded"]


def cpu_has_avx2() -> bool:
    """Whether the extension's AVX2 CPU loops can run here (read once at load; a plain value for torch.compile)."""
    return _load_extension() and _ext["cpu_avx2"]


def extension_available() -> bool:
    """True when the compiled extension ``ops._C`` imports."""
    return _load_extension()


def extension_error() -> str | None:
    """Why the extension could not be imported (None when it imported)."""
    _load_extension()
    return None if _ext["error"] is None else str(_ext["error"])


def cuda_kernels_built() -> bool:
    """True when the extension was built with its CUDA kernels."""
    return _load_extension() and bool(torch.ops.suite_ops.has_cuda())


def set_backend(name: str) -> None:
    """Select the backend (``auto``, ``compiled`` or ``ref``); ``compiled`` checks the extension now."""
    if name not in BACKENDS:
        raise ValueError(f"ops backend must be one of {BACKENDS}, got {name!r} (config key ops.backend / {ENV_VAR})")
    if name == "compiled" and not _load_extension():
        raise RuntimeError(
            "ops backend 'compiled' requested but the extension ops._C is not built "
            f"({_ext['error']}). Build it: `pip install --no-build-isolation --no-deps -e .` (docs/ops.md)."
        )
    changed = _state["backend"] != name
    _state["backend"] = name
    if changed:
        _state["logged"] = False
    _log_choice()


def get_backend() -> str:
    """The active backend name; reads ``SUITE_OPS_BACKEND`` (default ``auto``) on first use."""
    if _state["backend"] is None:
        set_backend(os.environ.get(ENV_VAR, "auto"))
    return _state["backend"]


def _log_choice() -> None:
    if _state["logged"]:
        return
    _state["logged"] = True
    name = _state["backend"]
    if name == "ref":
        log.info("ops backend: ref (pure-PyTorch reference path)")
    elif name == "compiled":
        log.info("ops backend: compiled (suite_ops extension, CUDA kernels: %s)", cuda_kernels_built())
    elif _load_extension():
        log.info(
            "ops backend: auto -> compiled kernels on CUDA%s; on CPU compiled for %s (faster in "
            "experiments/bench_ops.py), reference for the rest",
            "" if cuda_kernels_built() else " (not built: reference on CUDA)",
            sorted(AUTO_CPU_OPS),
        )
    else:
        log.info("ops backend: auto -> ref everywhere, because the extension is not built (%s)", _ext["error"])


def use_compiled(op: str, x: torch.Tensor) -> bool:
    """Whether ``op`` on tensor ``x`` runs the compiled operator under the active backend."""
    name = get_backend()
    if name == "ref":
        return False
    on_cuda = x.device.type == "cuda"
    if name == "compiled":
        if on_cuda and not cuda_kernels_built():
            raise RuntimeError(
                f"ops backend 'compiled': {op} on CUDA but ops._C was built without CUDA kernels "
                "(rebuild with nvcc and TORCH_CUDA_ARCH_LIST set, docs/ops.md)"
            )
        if x.device.type not in ("cpu", "cuda"):
            raise RuntimeError(f"ops backend 'compiled': no {op} kernel for device {x.device}")
        return True
    if not _load_extension():
        return False
    if on_cuda:
        return cuda_kernels_built()
    return x.device.type == "cpu" and op in AUTO_CPU_OPS
