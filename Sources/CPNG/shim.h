#ifndef SAMBENCH_CPNG_SHIM_H
#define SAMBENCH_CPNG_SHIM_H
#include <png.h>
#endif
