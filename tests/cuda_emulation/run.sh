#!/usr/bin/env bash
# Runs the CUDA kernels of the convolution ops on the CPU under a host emulation of CUDA
# (prelude.h: the threads of a block are std::threads, __syncthreads a barrier, the blocks run
# one after another) and compares them with the C++ CPU kernels on the same inputs, in
# float64, float32, float16 and bfloat16, for strided inputs and outputs and several output
# masks (harness.cpp). For machines without a GPU: it checks the kernels' index arithmetic,
# bounds, tiling and reductions, not the device compiler, the memory model or speed. Needs g++
# with C++20 and the CUDA toolkit's headers; about 5 minutes on 2 cores, so it is a manual
# check, not part of the pytest suite:
#     bash tests/cuda_emulation/run.sh [causal | masked | wavenet | nonfinite]
set -euo pipefail
cd "$(dirname "$0")/../.."
here=tests/cuda_emulation
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

cuda_include=${CUDA_HOME:-/usr/local/cuda}/include
flags=(-std=c++20 -O1 -pthread -I "$tmp" -I csrc/kernels/include -I csrc/kernels
  -I "$cuda_include")

# the CUDA sources, with the launches, dynamic shared memory and one attribute call rewritten
# for the host (transform.py)
cp "$here/prelude.h" csrc/kernels/cuda/coupling_common.cuh "$tmp/"
python3 "$here/transform.py" csrc/kernels/cuda/conv_common.cuh >"$tmp/conv_common_emu.cuh"
for op in causal_conv1d masked_conv2d wavenet_layer; do
  python3 "$here/transform.py" "csrc/kernels/cuda/$op.cu" >"$tmp/${op}_emu.cpp"
  g++ "${flags[@]}" -c "$tmp/${op}_emu.cpp" -o "$tmp/${op}_emu.o"
  g++ -std=c++20 -O2 -fopenmp -march=native -I csrc/kernels/include -I csrc/kernels \
    -c "csrc/kernels/cpu/$op.cpp" -o "$tmp/${op}_cpu.o"
done
g++ -std=c++20 -O2 -I csrc/kernels/include -c csrc/kernels/common.cpp -o "$tmp/common.o"
g++ "${flags[@]}" -c "$here/stubs.cpp" -o "$tmp/stubs.o"
g++ "${flags[@]}" -c "$here/harness.cpp" -o "$tmp/harness.o"
g++ -pthread -fopenmp "$tmp"/*.o -o "$tmp/harness"
"$tmp/harness" "$@"
