// Test support: interposes the C allocator entry points in the test executable and counts
// calls while enabled, forwarding every call to glibc's own implementation (__libc_*).
// Linked only into the test bundle.
#define _GNU_SOURCE
#include "AllocCounter.h"
#include <stddef.h>
#include <errno.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
extern void __libc_free(void *);

static volatile int counting = 0;
static volatile uint64_t count = 0;

static inline void note(void) {
    if (counting) __atomic_fetch_add(&count, 1, __ATOMIC_RELAXED);
}

void alloc_counter_start(void) { __atomic_store_n(&count, 0, __ATOMIC_SEQ_CST); counting = 1; }
uint64_t alloc_counter_stop(void) { counting = 0; return __atomic_load_n(&count, __ATOMIC_SEQ_CST); }

void *malloc(size_t n) { note(); return __libc_malloc(n); }
void *calloc(size_t a, size_t b) { note(); return __libc_calloc(a, b); }
void *realloc(void *p, size_t n) { note(); return __libc_realloc(p, n); }
void free(void *p) { __libc_free(p); }
void *memalign(size_t al, size_t n) { note(); return __libc_memalign(al, n); }
void *aligned_alloc(size_t al, size_t n) { note(); return __libc_memalign(al, n); }
int posix_memalign(void **out, size_t al, size_t n) {
    note();
    void *p = __libc_memalign(al, n);
    if (!p) return ENOMEM;
    *out = p;
    return 0;
}
