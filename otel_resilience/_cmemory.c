/* placeholder: filled in by the accelerator's commit */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "otel_resilience._cmemory", NULL, 0, NULL};

PyMODINIT_FUNC PyInit__cmemory(void) { return PyModule_Create(&module); }
