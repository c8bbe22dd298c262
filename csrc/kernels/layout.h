// Checks of the tensor layouts that the entry points are given, shared by the CPU kernels and
// the host code of the CUDA kernels (plain C++: no OpenMP, no CUDA).
#pragma once

#include <cstdint>
#include <initializer_list>

namespace pyr_layout {

// Element counts past this cannot be allocated anyway; bounding sizes and reaches by it keeps
// the index arithmetic of the kernels far from overflow.
constexpr int64_t kMaxElements = int64_t(1) << 50;

// One dimension of a tensor: its size and its stride, in elements.
struct Dim {
  int64_t size, stride;
};

// Whether the kernels may address a tensor laid out as `dims` (sizes checked before, >= 1). The
// C ABI carries no buffer lengths, so that the elements lie inside the caller's buffer is the
// caller's promise; what is refused is a layout that no buffer can have: a negative stride, or a
// furthest element, sum of (size - 1) * stride, more than kMaxElements past the first. An
// output may in addition have no stride 0 along a dimension of more than one element: two of
// its elements would be one place, written by two threads.
inline bool strides_ok(std::initializer_list<Dim> dims, bool output = false) {
  int64_t reach = 0;
  for (const Dim& d : dims) {
    if (d.stride < 0) return false;
    if (d.size <= 1) continue;
    if (output && d.stride == 0) return false;
    if (d.stride > kMaxElements / (d.size - 1)) return false;
    reach += (d.size - 1) * d.stride;
    if (reach > kMaxElements) return false;
  }
  return true;
}

}  // namespace pyr_layout
