#ifndef SAMBENCH_CDNNL_SHIM_H
#define SAMBENCH_CDNNL_SHIM_H
#include <oneapi/dnnl/dnnl.h>
#include <oneapi/dnnl/dnnl_debug.h>
#include <dlfcn.h>

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
#endif
