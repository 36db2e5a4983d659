/* getpid(2) under a seccomp filter and no tracer, for bench/ptrace_filter.py: what an untraced syscall pays for
 * the filter the ptrace driver installs, apart from any stop.
 *
 *     ptrace_filter N [FILTER_HEX]   N getpid calls, after installing FILTER_HEX (struct sock_filter[] as hex)
 *
 * Prints the thread's CPU ns per call.
 */
#define _GNU_SOURCE
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static long long cpu_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: ptrace_filter N [FILTER_HEX]\n");
        return 2;
    }
    long n = atol(argv[1]);
    if (argc > 2) {
        size_t len = strlen(argv[2]) / 2;
        unsigned char *prog = malloc(len);
        if (!prog) return 1;
        for (size_t i = 0; i < len; i++)
            if (sscanf(argv[2] + 2 * i, "%2hhx", &prog[i]) != 1) return 2;
        struct sock_fprog fprog = {(unsigned short)(len / 8), (struct sock_filter *)prog};
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &fprog)) {
            perror("seccomp");
            return 1;
        }
    }
    long long c0 = cpu_ns();
    for (long i = 0; i < n; i++) syscall(SYS_getpid);
    printf("%.2f\n", (double)(cpu_ns() - c0) / n);
    return 0;
}
