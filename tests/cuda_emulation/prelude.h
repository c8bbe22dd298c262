// Host emulation of the few CUDA features the conv kernels use: a block's threads are real
// threads with a barrier for __syncthreads; blocks run one after another.
#pragma once
#define __shared__ static
#define __launch_bounds__(...)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <barrier>
#include <cmath>
#include <cstring>
#include <thread>
#include <vector>

namespace pyr_emu {
inline thread_local uint3 tid_, bid_;
inline thread_local dim3 gdim_, bdim_;
inline thread_local std::barrier<>* bar_;
alignas(16) inline unsigned char dynamic_smem[1 << 20];

template <typename... KArgs, typename... Args>
void launch(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t, cudaStream_t, Args... args) {
  const unsigned n = block.x * block.y * block.z;
  for (unsigned bz = 0; bz < grid.z; ++bz)
    for (unsigned by = 0; by < grid.y; ++by)
      for (unsigned bx = 0; bx < grid.x; ++bx) {
        std::barrier<> bar(n);
        std::vector<std::thread> threads;
        for (unsigned t = 0; t < n; ++t)
          threads.emplace_back([&, t] {
            tid_ = {t, 0, 0};
            bid_ = {bx, by, bz};
            gdim_ = grid;
            bdim_ = block;
            bar_ = &bar;
            kernel(args...);
            bar.arrive_and_drop();
          });
        for (auto& th : threads) th.join();
      }
}
}  // namespace pyr_emu

#define threadIdx pyr_emu::tid_
#define blockIdx pyr_emu::bid_
#define gridDim pyr_emu::gdim_
#define blockDim pyr_emu::bdim_
#define __syncthreads() pyr_emu::bar_->arrive_and_wait()
