"""Custom ops: compiled ``suite_ops`` extension + pure-PyTorch reference path (docs/ops.md).

Importing this package never compiles anything; the extension ``ops._C`` is built by ``pip install -e .``.
"""

import logging
import os

from ops import bias_act, conv2d_resample, cpu_allocator, grid_sample, upfirdn2d, volume_sample, winograd
from ops._backend import BACKENDS, cuda_kernels_built, extension_available, extension_error, get_backend, set_backend

log = logging.getLogger(__name__)

# Keys of the ``ops`` config group (conf/ops/*.yaml) and the environment variables that carry them into DDP workers.
CONFIG_ENV_VARS = {
    "backend": "SUITE_OPS_BACKEND",
    "linear_clamp_grad": "SUITE_OPS_LINEAR_CLAMP_GRAD",
    "conv3x3": "SUITE_OPS_CONV3X3",
    "cpu_allocator": cpu_allocator.ENV_VAR,
    "cpu_allocator_slack_mb": cpu_allocator.SLACK_ENV_VAR,
}


def configure(ops_cfg) -> None:
    """Apply the ``ops`` config group to this process and export it as environment variables, which the DDP workers
    started from this process read when they import ``ops``. With ``backend: auto`` and no compiled extension, the
    caching CPU allocator falls back to torch's default, as the ops fall back to the reference path (logged)."""
    missing = sorted(set(CONFIG_ENV_VARS) - set(ops_cfg))
    unknown = sorted(set(ops_cfg) - set(CONFIG_ENV_VARS))
    if missing or unknown:
        raise ValueError(f"config group ops: missing keys {missing}, unknown keys {unknown} (conf/ops/*.yaml)")
    set_backend(ops_cfg["backend"])
    bias_act.set_linear_clamp_grad(ops_cfg["linear_clamp_grad"])
    winograd.set_conv3x3(ops_cfg["conv3x3"])
    choice = dict(ops_cfg)
    if choice["cpu_allocator"] == "caching" and choice["backend"] == "auto" and not extension_available():
        reason = extension_error()
        log.warning("ops.cpu_allocator: caching needs ops._C (%s); torch's default allocator instead", reason)
        choice["cpu_allocator"] = "default"
    cpu_allocator.set_cpu_allocator(choice["cpu_allocator"], choice["cpu_allocator_slack_mb"])
    for key, var in CONFIG_ENV_VARS.items():
        os.environ[var] = str(choice[key])


cpu_allocator.apply_environment()

__all__ = [
    "BACKENDS",
    "bias_act",
    "configure",
    "conv2d_resample",
    "cpu_allocator",
    "cuda_kernels_built",
    "extension_available",
    "get_backend",
    "grid_sample",
    "set_backend",
    "upfirdn2d",
    "volume_sample",
    "winograd",
]
