// Additive coupling on the CPU: first, plain version (correct, not yet fast).
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <new>
#include <vector>

#include "pyreversible/kernels.h"

namespace {

template <typename T>
pyr_status coupling_fwd(const pyr_additive_coupling_params* p) {
  const T* x = static_cast<const T*>(p->x);
  const T* shift = static_cast<const T*>(p->shift);
  T* y = static_cast<T*>(p->y);
  const pyr_partition* part = &p->partition;
#pragma omp parallel for num_threads(p->num_threads > 0 ? p->num_threads : omp_get_max_threads())
  for (int64_t b = 0; b < p->batch; ++b) {
    for (int64_t j = 0; j < part->dim_a; ++j) {
      int64_t k = pyr_partition_position(part, j, 0);
      y[b * p->stride_y_b + k * p->stride_y_d] = x[b * p->stride_x_b + k * p->stride_x_d];
    }
    for (int64_t j = 0; j < part->dim_b; ++j) {
      int64_t k = pyr_partition_position(part, j, 1);
      y[b * p->stride_y_b + k * p->stride_y_d] =
          x[b * p->stride_x_b + k * p->stride_x_d] +
          T(p->sign) * shift[b * p->stride_shift_b + j * p->stride_shift_d];
    }
  }
  return PYR_SUCCESS;
}

template <typename T>
pyr_status coupling_mlp_fwd(const pyr_additive_coupling_mlp_params* p) {
  const T* x = static_cast<const T*>(p->x);
  T* y = static_cast<T*>(p->y);
  const pyr_partition* part = &p->partition;
  int64_t max_width = *std::max_element(p->widths, p->widths + p->num_layers + 1);
#pragma omp parallel num_threads(p->num_threads > 0 ? p->num_threads : omp_get_max_threads())
  {
    std::vector<T> in(max_width), out(max_width);
#pragma omp for
    for (int64_t b = 0; b < p->batch; ++b) {
      for (int64_t j = 0; j < part->dim_a; ++j)
        in[j] = x[b * p->stride_x_b + pyr_partition_position(part, j, 0) * p->stride_x_d];
      for (int l = 0; l < p->num_layers; ++l) {
        const T* w = static_cast<const T*>(p->weight[l]);
        const T* bias = static_cast<const T*>(p->bias[l]);
        int64_t n_in = p->widths[l], n_out = p->widths[l + 1];
        for (int64_t o = 0; o < n_out; ++o) {
          T acc = bias[o];
          for (int64_t i = 0; i < n_in; ++i) acc += w[o * n_in + i] * in[i];
          out[o] = (l + 1 < p->num_layers) ? std::max(acc, T(0)) : acc;
        }
        if (l + 1 < p->num_layers && p->hidden[l])
          std::memcpy(static_cast<T*>(p->hidden[l]) + b * n_out, out.data(), n_out * sizeof(T));
        std::swap(in, out);
      }
      for (int64_t j = 0; j < part->dim_a; ++j) {
        int64_t k = pyr_partition_position(part, j, 0);
        y[b * p->stride_y_b + k * p->stride_y_d] = x[b * p->stride_x_b + k * p->stride_x_d];
      }
      for (int64_t j = 0; j < part->dim_b; ++j) {
        int64_t k = pyr_partition_position(part, j, 1);
        y[b * p->stride_y_b + k * p->stride_y_d] =
            x[b * p->stride_x_b + k * p->stride_x_d] + T(p->sign) * in[j];
      }
    }
  }
  return PYR_SUCCESS;
}

template <typename T>
pyr_status coupling_mlp_bwd(const pyr_additive_coupling_mlp_bwd_params* p) {
  const pyr_partition* part = &p->partition;
  const int L = p->num_layers;
  const int64_t B = p->batch;
  const T* cond = static_cast<const T*>(p->cond);
  const T* dy = static_cast<const T*>(p->dy);
  T* dx = static_cast<T*>(p->dx);
  // g holds dL/d(pre-activation) of the layer being processed, (B, width).
  std::vector<T> g(B * p->widths[L]), g_prev, xa(B * p->widths[0]);
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t j = 0; j < part->dim_b; ++j)
      g[b * part->dim_b + j] =
          T(p->sign) * dy[b * p->stride_dy_b + pyr_partition_position(part, j, 1) * p->stride_dy_d];
    for (int64_t j = 0; j < part->dim_a; ++j)
      xa[b * part->dim_a + j] =
          cond[b * p->stride_cond_b + pyr_partition_position(part, j, 0) * p->stride_cond_d];
  }
  for (int l = L - 1; l >= 0; --l) {
    int64_t n_in = p->widths[l], n_out = p->widths[l + 1];
    const T* h_in = l == 0 ? xa.data() : static_cast<const T*>(p->hidden[l - 1]);
    const T* w = static_cast<const T*>(p->weight[l]);
    T* dw = static_cast<T*>(p->dweight[l]);
    T* db = static_cast<T*>(p->dbias[l]);
    for (int64_t o = 0; o < n_out; ++o) {
      T acc = 0;
      for (int64_t b = 0; b < B; ++b) acc += g[b * n_out + o];
      db[o] = acc;
      for (int64_t i = 0; i < n_in; ++i) {
        T s = 0;
        for (int64_t b = 0; b < B; ++b) s += g[b * n_out + o] * h_in[b * n_in + i];
        dw[o * n_in + i] = s;
      }
    }
    g_prev.assign(B * n_in, T(0));
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i = 0; i < n_in; ++i) {
        T s = 0;
        for (int64_t o = 0; o < n_out; ++o) s += g[b * n_out + o] * w[o * n_in + i];
        g_prev[b * n_in + i] = (l == 0 || h_in[b * n_in + i] > T(0)) ? s : T(0);
      }
    std::swap(g, g_prev);
  }
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t k = 0; k < p->dim; ++k)
      dx[b * p->stride_dx_b + k * p->stride_dx_d] = dy[b * p->stride_dy_b + k * p->stride_dy_d];
    for (int64_t j = 0; j < part->dim_a; ++j)
      dx[b * p->stride_dx_b + pyr_partition_position(part, j, 0) * p->stride_dx_d] +=
          g[b * part->dim_a + j];
  }
  return PYR_SUCCESS;
}

}  // namespace

extern "C" pyr_status pyr_additive_coupling_fwd_cpu(const pyr_additive_coupling_params* p) {
  if (p->dtype == PYR_FLOAT32) return coupling_fwd<float>(p);
  if (p->dtype == PYR_FLOAT64) return coupling_fwd<double>(p);
  return PYR_ERROR_UNSUPPORTED_DTYPE;
}

extern "C" pyr_status pyr_additive_coupling_mlp_fwd_cpu(const pyr_additive_coupling_mlp_params* p) {
  if (p->dtype == PYR_FLOAT32) return coupling_mlp_fwd<float>(p);
  if (p->dtype == PYR_FLOAT64) return coupling_mlp_fwd<double>(p);
  return PYR_ERROR_UNSUPPORTED_DTYPE;
}

extern "C" pyr_status pyr_additive_coupling_mlp_bwd_cpu(
    const pyr_additive_coupling_mlp_bwd_params* p) {
  if (p->dtype == PYR_FLOAT32) return coupling_mlp_bwd<float>(p);
  if (p->dtype == PYR_FLOAT64) return coupling_mlp_bwd<double>(p);
  return PYR_ERROR_UNSUPPORTED_DTYPE;
}
