#!/usr/bin/env bash
# CI machines have no GPU, so the CUDA kernels never run there; this compiles every .cu for the
# architectures the package ships (sm_80, sm_90), so that a broken CUDA source still fails CI,
# and logs ptxas's registers and spills per kernel. The torch extension build defines the
# __CUDA_NO_*_ macros below; compiling with them keeps the sources buildable both ways.
set -euo pipefail

cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

shopt -s nullglob
sources=(csrc/kernels/cuda/*.cu)
if ((${#sources[@]} == 0)); then
  echo "nvcc_check: no CUDA sources in csrc/kernels/cuda" >&2
  exit 1
fi

nvcc --version | tail -n 1
for src in "${sources[@]}"; do
  echo "nvcc_check: $src"
  nvcc -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 \
    -Xptxas -v -std=c++17 -O3 -I csrc/kernels/include \
    -D__CUDA_NO_HALF_OPERATORS__ -D__CUDA_NO_HALF_CONVERSIONS__ \
    -D__CUDA_NO_BFLOAT16_CONVERSIONS__ -D__CUDA_NO_HALF2_OPERATORS__ \
    -c -o "$tmp/$(basename "$src" .cu).o" "$src" 2>&1
done
echo "nvcc_check: ${#sources[@]} file(s) compiled"

# The torch glue's CUDA half (csrc/torch/*.cpp with PYR_WITH_CUDA: the CUDA registrations,
# streams, device guards and workspaces) is compiled only against a CUDA build of torch. With a
# CPU build, check its syntax against the headers it ships: c10/cuda is there, but not the
# generated c10/cuda/impl/cuda_cmake_macros.h, for which a stub stands in.
if python -c "import torch" 2>/dev/null; then
  mkdir -p "$tmp/stub/c10/cuda/impl"
  printf '#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n' \
    >"$tmp/stub/c10/cuda/impl/cuda_cmake_macros.h"
  mapfile -t includes < <(python -c "
import sysconfig
from torch.utils.cpp_extension import CUDA_HOME, include_paths
for p in include_paths():
    print('-I' + p)
print('-I' + sysconfig.get_paths()['include'])
print('-I' + (CUDA_HOME or '/usr/local/cuda') + '/include')")
  glue=(csrc/torch/*.cpp)
  for src in "${glue[@]}"; do
    echo "nvcc_check: $src with PYR_WITH_CUDA (syntax only)"
    g++ -std=c++20 -fsyntax-only -DPYR_WITH_CUDA -I csrc/kernels/include -I csrc/kernels \
      "${includes[@]}" -I "$tmp/stub" "$src"
  done
  echo "nvcc_check: ${#glue[@]} torch glue file(s) checked"
fi
