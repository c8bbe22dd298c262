"""Build pyreversible and its compiled extension, pyreversible._C.

The C++ CPU kernels are compiled ahead of time, when the package is installed: a failed
compile fails the install with the compiler's message, so no half-built package is ever
importable. The CUDA kernels are compiled as well when torch is a CUDA build and a CUDA
toolkit is found (or when PYREVERSIBLE_BUILD_CUDA=1 forces it; =0 skips them).

Install with build isolation off, so that pip builds against the torch already installed
instead of downloading another one:  pip install --no-build-isolation -e .
"""

import glob
import os

import torch
from setuptools import setup
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

HERE = os.path.dirname(os.path.abspath(__file__))


def _want_cuda():
    forced = os.environ.get("PYREVERSIBLE_BUILD_CUDA")
    if forced is not None:
        return forced == "1"
    return torch.version.cuda is not None and CUDA_HOME is not None


def _sources(pattern):
    return sorted(os.path.relpath(p, HERE) for p in glob.glob(os.path.join(HERE, pattern)))


def _extension():
    sources = (
        _sources("csrc/kernels/*.cpp")
        + _sources("csrc/kernels/cpu/*.cpp")
        + _sources("csrc/torch/*.cpp")
    )
    # -march=native: the package is built from source on the machine that runs it, and the
    # kernels' inner loops are written for the compiler to vectorise to the widest unit there.
    cxx = ["-O3", "-fopenmp", "-march=native", "-fno-math-errno"]
    include_dirs = [os.path.join(HERE, "csrc/kernels/include"), os.path.join(HERE, "csrc/kernels")]
    if not _want_cuda():
        return CppExtension(
            "pyreversible._C",
            sources,
            include_dirs=include_dirs,
            extra_compile_args={"cxx": cxx},
            extra_link_args=["-fopenmp"],
        )
    arch = os.environ.get("TORCH_CUDA_ARCH_LIST") or "8.0;9.0"
    gencode = []
    for a in arch.replace(" ", ";").split(";"):
        if a:
            num = a.replace(".", "").replace("+PTX", "")
            gencode += ["-gencode", f"arch=compute_{num},code=sm_{num}"]
    return CUDAExtension(
        "pyreversible._C",
        sources + _sources("csrc/kernels/cuda/*.cu"),
        include_dirs=include_dirs,
        define_macros=[("PYR_WITH_CUDA", "1")],
        extra_compile_args={
            "cxx": cxx,
            "nvcc": ["-O3", "-lineinfo", "--expt-relaxed-constexpr", *gencode],
        },
        extra_link_args=["-fopenmp"],
    )


setup(
    ext_modules=[_extension()],
    cmdclass={"build_ext": BuildExtension},
)
