"""Ahead-of-time build of the ``ops._C`` extension (docs/ops.md "Building").

``pip install --no-build-isolation --no-deps -e .`` compiles the C++ CPU kernels always, and the CUDA kernels
when torch has CUDA and nvcc is found, for ``TORCH_CUDA_ARCH_LIST`` (default below, never cleared).
``SUITE_OPS_CUDA=0`` forces a CPU-only build; ``SUITE_OPS_CUDA=1`` makes a missing CUDA toolchain an error.
Nothing is compiled at import time.
"""

import glob
import os
import shutil

import torch
from setuptools import setup
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

DEFAULT_CUDA_ARCH_LIST = "8.0;8.6;9.0+PTX"  # A100, RTX 30xx/A6000, H100/H200 (+PTX for newer GPUs)

here = os.path.dirname(os.path.abspath(__file__))
csrc = os.path.join("ops", "csrc")
cpp_sources = sorted(glob.glob(os.path.join(csrc, "*.cpp")))
cu_sources = sorted(glob.glob(os.path.join(csrc, "*.cu")))


def _nvcc() -> str | None:
    if CUDA_HOME is not None and os.path.exists(os.path.join(CUDA_HOME, "bin", "nvcc")):
        return os.path.join(CUDA_HOME, "bin", "nvcc")
    return shutil.which("nvcc")


def _build_cuda() -> bool:
    mode = os.environ.get("SUITE_OPS_CUDA", "auto")
    if mode not in ("auto", "0", "1"):
        raise RuntimeError(f"SUITE_OPS_CUDA must be auto, 0 or 1, got {mode!r}")
    available = torch.version.cuda is not None and _nvcc() is not None
    if mode == "1" and not available:
        raise RuntimeError(
            f"SUITE_OPS_CUDA=1 but CUDA kernels cannot be built: torch.version.cuda={torch.version.cuda}, "
            f"nvcc={_nvcc()}"
        )
    return available and mode != "0"


# -fno-trapping-math lets gcc if-convert and vectorise the activation selects (results unchanged).
cxx_flags = ["-O3", "-fno-trapping-math", "-fopenmp"]  # torch adds -std=c++20
if _build_cuda():
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", DEFAULT_CUDA_ARCH_LIST)
    print(f"ops._C: building CPU + CUDA kernels for TORCH_CUDA_ARCH_LIST={os.environ['TORCH_CUDA_ARCH_LIST']}")
    ext = CUDAExtension(
        "ops._C",
        cpp_sources + cu_sources,
        define_macros=[("SUITE_OPS_WITH_CUDA", None)],
        extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3"]},
        extra_link_args=["-fopenmp"],
    )
else:
    print("ops._C: building CPU kernels only (no CUDA torch or no nvcc)")
    ext = CppExtension("ops._C", cpp_sources, extra_compile_args={"cxx": cxx_flags}, extra_link_args=["-fopenmp"])

setup(ext_modules=[ext], cmdclass={"build_ext": BuildExtension})
