"""Custom ops: compiled ``suite_ops`` extension + pure-PyTorch reference path (docs/ops.md).

Importing this package never compiles anything; the extension ``ops._C`` is built by ``pip install -e .``.
"""

from ops import bias_act, conv2d_resample, grid_sample, upfirdn2d, volume_sample, winograd
from ops._backend import BACKENDS, cuda_kernels_built, extension_available, get_backend, set_backend

__all__ = [
    "BACKENDS",
    "bias_act",
    "conv2d_resample",
    "cuda_kernels_built",
    "extension_available",
    "get_backend",
    "grid_sample",
    "set_backend",
    "upfirdn2d",
    "volume_sample",
    "winograd",
]
