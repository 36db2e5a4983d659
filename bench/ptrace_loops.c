/* Syscall loops for bench/ptrace_overhead.py. Each prints two numbers: wall-clock ns per iteration and CPU ns
 * per iteration (its own user+system time plus its waited-for children's, from getrusage), because the loop
 * may run as a tracee whose parent is not the benchmark (so the benchmark cannot wait4 it).
 *   ptrace_loops open N     open/read/close /etc/hostname N times
 *   ptrace_loops exec N     fork + execve /bin/true + wait, N times
 *   ptrace_loops getpid N   getpid(2) N times (a syscall no rule traces)
 *   ptrace_loops read64 N   read(2) of 64 bytes from /dev/zero N times (untraced, but a syscall doing real
 *                           work: the seccomp entry cost as a share of a typical untraced syscall)
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static long long cpu_ns(void) {
    struct rusage self, kids;
    getrusage(RUSAGE_SELF, &self);
    getrusage(RUSAGE_CHILDREN, &kids);
    long long us = 0;
    us += self.ru_utime.tv_sec * 1000000LL + self.ru_utime.tv_usec + self.ru_stime.tv_sec * 1000000LL + self.ru_stime.tv_usec;
    us += kids.ru_utime.tv_sec * 1000000LL + kids.ru_utime.tv_usec + kids.ru_stime.tv_sec * 1000000LL + kids.ru_stime.tv_usec;
    return us * 1000;
}

int main(int argc, char **argv) {
    char buf[128];
    if (argc != 3) {
        fprintf(stderr, "usage: ptrace_loops open|exec|getpid|read64 N\n");
        return 2;
    }
    long n = atol(argv[2]);
    long long t0 = now_ns(), c0 = cpu_ns();
    if (strcmp(argv[1], "open") == 0) {
        for (long i = 0; i < n; i++) {
            int fd = open("/etc/hostname", O_RDONLY);
            if (fd < 0) return 1;
            if (read(fd, buf, sizeof buf) < 0) return 1;
            close(fd);
        }
    } else if (strcmp(argv[1], "exec") == 0) {
        for (long i = 0; i < n; i++) {
            pid_t pid = fork();
            if (pid == 0) {
                execl("/bin/true", "true", (char *)NULL);
                _exit(127);
            }
            int status;
            waitpid(pid, &status, 0);
        }
    } else if (strcmp(argv[1], "read64") == 0) {
        int fd = open("/dev/zero", O_RDONLY);
        if (fd < 0) return 1;
        t0 = now_ns();
        c0 = cpu_ns();
        for (long i = 0; i < n; i++)
            if (read(fd, buf, 64) != 64) return 1;
    } else if (strcmp(argv[1], "getpid") == 0) {
        for (long i = 0; i < n; i++)
            syscall(SYS_getpid);
    } else {
        return 2;
    }
    printf("loop %.1f %.1f\n", (double)(now_ns() - t0) / n, (double)(cpu_ns() - c0) / n);
    return 0;
}
