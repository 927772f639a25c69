#ifndef SAMBENCH_CCAIRO_SHIM_H
#define SAMBENCH_CCAIRO_SHIM_H
#include <cairo/cairo.h>
#include <cairo/cairo-svg.h>
#endif
