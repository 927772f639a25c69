#ifndef SAMBENCH_CDNNL_SHIM_H
#define SAMBENCH_CDNNL_SHIM_H
#include <oneapi/dnnl/dnnl.h>
#include <oneapi/dnnl/dnnl_debug.h>
#include <dlfcn.h>
#include <malloc.h>

/// Sets the OpenMP thread count that oneDNN uses. libdnnl links libgomp, so the symbol is
/// resolved at run time rather than linking libgomp (whose unversioned .so is not on the
/// default linker path). Returns 0 when the runtime has no such symbol.
static inline int sambench_set_omp_threads(int n) {
    void (*f)(int) = (void (*)(int))dlsym(RTLD_DEFAULT, "omp_set_num_threads");
    if (!f) return 0;
    f(n);
    return 1;
}

static inline int sambench_get_omp_max_threads(void) {
    int (*f)(void) = (int (*)(void))dlsym(RTLD_DEFAULT, "omp_get_max_threads");
    return f ? f() : 1;
}

/// Runs fn(data) on a team of `threads` threads of oneDNN's OpenMP runtime (libgomp's
/// GOMP_parallel, what `#pragma omp parallel` compiles to), the calling thread among them, so
/// that sambench's own kernels run on the threads oneDNN's primitives have just used (still
/// spinning, not competing with other threads for the cores). Returns 0 when the runtime has no
/// such symbol (nothing ran).
static inline int sambench_omp_parallel(void (*fn)(void *), void *data, unsigned threads) {
    static void (*parallel)(void (*)(void *), void *, unsigned, unsigned) = 0;
    if (!parallel) parallel = (void (*)(void (*)(void *), void *, unsigned, unsigned))dlsym(RTLD_DEFAULT, "GOMP_parallel");
    if (!parallel) return 0;
    parallel(fn, data, threads, 0);
    return 1;
}

/// This thread's number in the current team, and the team's size (0 and 1 outside one).
static inline int sambench_omp_thread_num(void) {
    static int (*f)(void) = 0;
    if (!f) f = (int (*)(void))dlsym(RTLD_DEFAULT, "omp_get_thread_num");
    return f ? f() : 0;
}

static inline int sambench_omp_num_threads(void) {
    static int (*f)(void) = 0;
    if (!f) f = (int (*)(void))dlsym(RTLD_DEFAULT, "omp_get_num_threads");
    return f ? f() : 1;
}

/// Hands the heap's free memory back to the system (glibc's malloc_trim, which also releases
/// whole free pages inside the heap); returns 0 where there is none to hand back or no glibc.
static inline int sambench_release_free_memory(void) {
#ifdef __GLIBC__
    return malloc_trim(0);
#else
    return 0;
#endif
}
#endif
