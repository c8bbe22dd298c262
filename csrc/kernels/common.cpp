// Library-wide entry points of the C ABI: version, build and status messages.
#include "pyreversible/kernels.h"

#define PYR_STR2(x) #x
#define PYR_STR(x) PYR_STR2(x)

extern "C" const char* pyr_version(void) {
  return PYR_STR(PYR_VERSION_MAJOR) "." PYR_STR(PYR_VERSION_MINOR) "." PYR_STR(PYR_VERSION_PATCH);
}

extern "C" int pyr_built_with_cuda(void) {
#ifdef PYR_WITH_CUDA
  return 1;
#else
  return 0;
#endif
}

extern "C" const char* pyr_status_string(pyr_status status) {
  switch (status) {
    case PYR_SUCCESS:
      return "success";
    case PYR_ERROR_NULL_POINTER:
      return "a required pointer is null";
    case PYR_ERROR_INVALID_SIZE:
      return "a size is zero, negative or inconsistent";
    case PYR_ERROR_INVALID_STRIDE:
      return "a stride is negative or would reach outside its tensor";
    case PYR_ERROR_UNSUPPORTED_DTYPE:
      return "the dtype is not supported by this kernel";
    case PYR_ERROR_INVALID_ARGUMENT:
      return "an argument is out of its range";
    case PYR_ERROR_OUT_OF_MEMORY:
      return "out of memory";
    case PYR_ERROR_CUDA:
      return "a CUDA call failed";
    case PYR_ERROR_NOT_BUILT:
      return "this kernel was not built into the library";
  }
  return "unknown status";
}
