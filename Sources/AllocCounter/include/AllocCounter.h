#ifndef SAMBENCH_ALLOC_COUNTER_H
#define SAMBENCH_ALLOC_COUNTER_H
#include <stdint.h>
/// Starts counting heap allocations made by any thread (malloc, calloc, realloc,
/// posix_memalign, aligned_alloc, memalign).
void alloc_counter_start(void);
/// Stops counting and returns the number of allocations since the last start.
uint64_t alloc_counter_stop(void);
#endif
