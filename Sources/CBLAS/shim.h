#ifndef SAMBENCH_CBLAS_SHIM_H
#define SAMBENCH_CBLAS_SHIM_H
#include <cblas.h>
#endif
