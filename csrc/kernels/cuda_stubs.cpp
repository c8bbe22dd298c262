// The CUDA entry points of a library built without CUDA: each returns PYR_ERROR_NOT_BUILT (and
// each workspace query 0), so that the C ABI is the same whichever way the library was built
// and a caller learns at run time, from a status, that it must use the CPU kernels. Compiled
// by every build; empty when PYR_WITH_CUDA is defined (the .cu files then define the symbols).
// A new CUDA entry point adds its stub here, one line.
#include "pyreversible/kernels.h"

#ifndef PYR_WITH_CUDA

#define PYR_CUDA_STUB(name, params) \
  extern "C" pyr_status name(const params*) { return PYR_ERROR_NOT_BUILT; }
#define PYR_CUDA_WORKSPACE_STUB(name, params) \
  extern "C" size_t name(const params*) { return 0; }

PYR_CUDA_STUB(pyr_additive_coupling_fwd_cuda, pyr_additive_coupling_params)
PYR_CUDA_STUB(pyr_additive_coupling_mlp_fwd_cuda, pyr_additive_coupling_mlp_params)
PYR_CUDA_WORKSPACE_STUB(pyr_additive_coupling_mlp_fwd_cuda_workspace_bytes,
                        pyr_additive_coupling_mlp_params)
PYR_CUDA_STUB(pyr_additive_coupling_mlp_bwd_cuda, pyr_additive_coupling_mlp_bwd_params)
PYR_CUDA_WORKSPACE_STUB(pyr_additive_coupling_mlp_bwd_cuda_workspace_bytes,
                        pyr_additive_coupling_mlp_bwd_params)

PYR_CUDA_STUB(pyr_causal_conv1d_fwd_cuda, pyr_causal_conv1d_params)
PYR_CUDA_STUB(pyr_causal_conv1d_bwd_cuda, pyr_causal_conv1d_bwd_params)
PYR_CUDA_WORKSPACE_STUB(pyr_causal_conv1d_bwd_cuda_workspace_bytes, pyr_causal_conv1d_bwd_params)
PYR_CUDA_STUB(pyr_masked_conv2d_fwd_cuda, pyr_masked_conv2d_params)
PYR_CUDA_STUB(pyr_masked_conv2d_bwd_cuda, pyr_masked_conv2d_bwd_params)
PYR_CUDA_WORKSPACE_STUB(pyr_masked_conv2d_bwd_cuda_workspace_bytes, pyr_masked_conv2d_bwd_params)
PYR_CUDA_STUB(pyr_wavenet_layer_fwd_cuda, pyr_wavenet_layer_params)
PYR_CUDA_STUB(pyr_wavenet_layer_bwd_cuda, pyr_wavenet_layer_bwd_params)
PYR_CUDA_WORKSPACE_STUB(pyr_wavenet_layer_bwd_cuda_workspace_bytes, pyr_wavenet_layer_bwd_params)

PYR_CUDA_STUB(pyr_wavenet_step_cuda, pyr_wavenet_step_params)
PYR_CUDA_WORKSPACE_STUB(pyr_wavenet_step_cuda_workspace_bytes, pyr_wavenet_step_params)
PYR_CUDA_STUB(pyr_reversible_block_cuda, pyr_reversible_block_params)

#endif
