// Test support: interposes the C allocator entry points in the test executable and counts
// calls while enabled, forwarding every call to glibc's own implementation (__libc_*).
// Linked only into the test bundle.
#define _GNU_SOURCE
#include "AllocCounter.h"
#include <stddef.h>
#include <errno.h>
#include <dlfcn.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
extern void __libc_free(void *);

static volatile int counting = 0;
static volatile uint64_t count = 0, frees = 0, bytes = 0, largest = 0;

// oneDNN 2.6's dnnl_primitive_execute builds a std::unordered_map of its arguments on every
// call (a few small allocations, freed before it returns). The test binary interposes that
// function to attribute those allocations to oneDNN and keep them apart from the project's.
// The flag is process-wide, not per thread: oneDNN's OpenMP workers allocate too, and the
// project's own code never runs while an execute call is in flight (it waits for it).
static volatile int inside_dnnl = 0;
static volatile uint64_t dnnl_count = 0, dnnl_frees = 0, dnnl_largest = 0;

typedef int (*execute_fn)(const void *, void *, int, const void *);
int dnnl_primitive_execute(const void *primitive, void *stream, int nargs, const void *args) {
    static execute_fn real = 0;
    if (!real) real = (execute_fn)dlsym(RTLD_NEXT, "dnnl_primitive_execute");
    inside_dnnl++;
    int status = real(primitive, stream, nargs, args);
    inside_dnnl--;
    return status;
}

uint64_t alloc_counter_dnnl(void) { return dnnl_count; }
uint64_t alloc_counter_dnnl_frees(void) { return dnnl_frees; }
uint64_t alloc_counter_dnnl_largest(void) { return dnnl_largest; }

static inline void note(size_t n) {
    if (!counting) return;
    if (inside_dnnl) {
        __atomic_fetch_add(&dnnl_count, 1, __ATOMIC_RELAXED);
        if (n > dnnl_largest) dnnl_largest = n;
        return;
    }
    __atomic_fetch_add(&count, 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&bytes, n, __ATOMIC_RELAXED);
    uint64_t cur = __atomic_load_n(&largest, __ATOMIC_RELAXED);
    while (n > cur && !__atomic_compare_exchange_n(&largest, &cur, n, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {}
}

void alloc_counter_start(void) {
    __atomic_store_n(&count, 0, __ATOMIC_SEQ_CST);
    __atomic_store_n(&frees, 0, __ATOMIC_SEQ_CST);
    __atomic_store_n(&bytes, 0, __ATOMIC_SEQ_CST);
    __atomic_store_n(&largest, 0, __ATOMIC_SEQ_CST);
    __atomic_store_n(&dnnl_count, 0, __ATOMIC_SEQ_CST);
    __atomic_store_n(&dnnl_frees, 0, __ATOMIC_SEQ_CST);
    __atomic_store_n(&dnnl_largest, 0, __ATOMIC_SEQ_CST);
    counting = 1;
}
uint64_t alloc_counter_stop(void) { counting = 0; return __atomic_load_n(&count, __ATOMIC_SEQ_CST); }
uint64_t alloc_counter_frees(void) { return frees; }
uint64_t alloc_counter_bytes(void) { return bytes; }
uint64_t alloc_counter_largest(void) { return largest; }

void *malloc(size_t n) { note(n); return __libc_malloc(n); }
void *calloc(size_t a, size_t b) { note(a * b); return __libc_calloc(a, b); }
void *realloc(void *p, size_t n) { note(n); return __libc_realloc(p, n); }
void free(void *p) {
    if (counting && p) __atomic_fetch_add(inside_dnnl ? &dnnl_frees : &frees, 1, __ATOMIC_RELAXED);
    __libc_free(p);
}
void *memalign(size_t al, size_t n) { note(n); return __libc_memalign(al, n); }
void *aligned_alloc(size_t al, size_t n) { note(n); return __libc_memalign(al, n); }
int posix_memalign(void **out, size_t al, size_t n) {
    note(n);
    void *p = __libc_memalign(al, n);
    if (!p) return ENOMEM;
    *out = p;
    return 0;
}
