#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>
#include "cprocess.h"

int sambench_pipe(int fds[2], int extra_flags) { return pipe2(fds, O_CLOEXEC | extra_flags); }

int sambench_die_with_parent(void) { return prctl(PR_SET_PDEATHSIG, SIGKILL); }
