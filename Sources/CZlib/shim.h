#ifndef SAMBENCH_CZLIB_SHIM_H
#define SAMBENCH_CZLIB_SHIM_H
#include <zlib.h>
#endif
