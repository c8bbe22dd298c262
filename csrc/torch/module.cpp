// The Python module pyreversible._C. Importing it runs the TORCH_LIBRARY registrations of the
// other files in csrc/torch; the module itself only says how it was built.
#include <Python.h>

static struct PyModuleDef pyr_module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};

extern "C" PyMODINIT_FUNC PyInit__C(void) {
  PyObject* module = PyModule_Create(&pyr_module);
  if (module == nullptr) return nullptr;
#ifdef PYR_WITH_CUDA
  PyModule_AddIntConstant(module, "with_cuda", 1);
#else
  PyModule_AddIntConstant(module, "with_cuda", 0);
#endif
  return module;
}
