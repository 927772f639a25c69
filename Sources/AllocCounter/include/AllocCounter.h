#ifndef SAMBENCH_ALLOC_COUNTER_H
#define SAMBENCH_ALLOC_COUNTER_H
#include <stdint.h>
/// Allocations made inside oneDNN's dnnl_primitive_execute are counted apart (see the .c file).
/// Starts counting heap allocations made by any thread (malloc, calloc, realloc,
/// posix_memalign, aligned_alloc, memalign) and frees; resets all counters.
void alloc_counter_start(void);
/// Stops counting and returns the number of allocations since the last start.
uint64_t alloc_counter_stop(void);
/// Frees, requested bytes and the largest single request seen while counting.
uint64_t alloc_counter_frees(void);
uint64_t alloc_counter_bytes(void);
uint64_t alloc_counter_largest(void);
/// Allocations, frees and the largest request made inside dnnl_primitive_execute.
uint64_t alloc_counter_dnnl(void);
uint64_t alloc_counter_dnnl_frees(void);
uint64_t alloc_counter_dnnl_largest(void);
#endif
