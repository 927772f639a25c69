#ifndef SAMBENCH_CPROCESS_H
#define SAMBENCH_CPROCESS_H

/// pipe2(fds, O_CLOEXEC | extra_flags): Glibc's Swift module does not export pipe2.
int sambench_pipe(int fds[2], int extra_flags);

/// prctl(PR_SET_PDEATHSIG, SIGKILL): the kernel kills the caller when its parent thread exits.
int sambench_die_with_parent(void);

#endif
