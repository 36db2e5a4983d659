/* Syscall workloads for bench/daemon_*.py, in C so that the loop itself costs next to nothing and the
 * figures show what tracing adds to each syscall.
 *   daemon_loops open N            open/read/close /etc/hostname N times; prints ns per iteration
 *   daemon_loops exec N            fork + execve /bin/true + wait, N times; prints ns per iteration
 *   daemon_loops execsched N       the exec loop, and where its wall time went: prints ns per iteration, then
 *                                  per iteration the loop process's run-queue wait, the children's run-queue
 *                                  wait and run time (each zombie child's /proc/PID/schedstat, read before it
 *                                  is reaped: a diagnostic, its reads cost every row alike), and the loop's
 *                                  involuntary context switches (preemptions) per iteration
 *   daemon_loops paced PATH RATE S [TAG]
 *                                  open/close PATH RATE times a second for S seconds (or as fast as it can);
 *                                  prints the number of opens done (on stderr, how many failed). TAG is ignored: it only marks the process's
 *                                  command line, so a bench can tell this run's alerts from any other's
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* /proc/PID/schedstat: run time, run-queue wait (both ns), timeslices. */
static int schedstat(const char *path, long long *run, long long *wait) {
    char text[128];
    int fd = open(path, O_RDONLY);
    if (fd < 0) return -1;
    ssize_t n = read(fd, text, sizeof text - 1);
    close(fd);
    if (n <= 0) return -1;
    text[n] = 0;
    return sscanf(text, "%lld %lld", run, wait) == 2 ? 0 : -1;
}

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* One fork and exec of /bin/true: the exec loops' unit of work (the parent gets the child's pid). */
static pid_t spawn_true(void) {
    pid_t pid = fork();
    if (pid == 0) {
        execl("/bin/true", "true", (char *)NULL);
        _exit(127);
    }
    return pid;
}

int main(int argc, char **argv) {
    char buf[128];
    if (argc == 3 && strcmp(argv[1], "open") == 0) {
        long n = atol(argv[2]);
        long long t0 = now_ns();
        for (long i = 0; i < n; i++) {
            int fd = open("/etc/hostname", O_RDONLY);
            if (fd < 0) return 1;
            if (read(fd, buf, sizeof buf) < 0) return 1;
            close(fd);
        }
        printf("%.1f\n", (double)(now_ns() - t0) / n);
        return 0;
    }
    if (argc == 3 && strcmp(argv[1], "exec") == 0) {
        long n = atol(argv[2]);
        long long t0 = now_ns();
        for (long i = 0; i < n; i++) {
            pid_t pid = spawn_true();
            int status;
            waitpid(pid, &status, 0);
        }
        printf("%.1f\n", (double)(now_ns() - t0) / n);
        return 0;
    }
    if (argc == 3 && strcmp(argv[1], "execsched") == 0) {
        long n = atol(argv[2]);
        long long run0, wait0, run1, wait1, child_run = 0, child_wait = 0;
        struct rusage ru0, ru1;
        if (schedstat("/proc/self/schedstat", &run0, &wait0) < 0) return 1;
        getrusage(RUSAGE_SELF, &ru0);
        long long t0 = now_ns();
        for (long i = 0; i < n; i++) {
            pid_t pid = spawn_true();
            siginfo_t info;
            if (waitid(P_PID, pid, &info, WEXITED | WNOWAIT) < 0) return 1;
            char path[64];
            long long r, w;
            snprintf(path, sizeof path, "/proc/%d/schedstat", (int)pid);
            if (schedstat(path, &r, &w) == 0) {
                child_run += r;
                child_wait += w;
            }
            int status;
            waitpid(pid, &status, 0);
        }
        long long wall = now_ns() - t0;
        getrusage(RUSAGE_SELF, &ru1);
        if (schedstat("/proc/self/schedstat", &run1, &wait1) < 0) return 1;
        printf("%.1f %.1f %.1f %.1f %.1f %.3f\n", (double)wall / n, (double)(wait1 - wait0) / n,
               (double)child_wait / n, (double)child_run / n, (double)(run1 - run0) / n,
               (double)(ru1.ru_nivcsw - ru0.ru_nivcsw) / n);
        return 0;
    }
    if ((argc == 5 || argc == 6) && strcmp(argv[1], "paced") == 0) {
        const char *path = argv[2];
        double rate = atof(argv[3]);
        double seconds = atof(argv[4]);
        long long start = now_ns(), end = start + (long long)(seconds * 1e9);
        long done = 0, failed = 0;
        int last_errno = 0;
        for (;;) {
            long long t = now_ns();
            if (t >= end) break;
            long due = (long)(rate * (double)(t - start) / 1e9) + 1;
            if (done < due) {
                /* Catch up in small bursts so the deadline is checked often even when the rate is unreachable. */
                for (long k = 0; k < 256 && done < due; k++, done++) {
                    int fd = open(path, O_RDONLY);
                    if (fd >= 0) {
                        close(fd);
                    } else {
                        failed++;
                        last_errno = errno;
                    }
                }
            } else {
                struct timespec ts = {0, 200000}; /* 0.2 ms */
                nanosleep(&ts, NULL);
            }
        }
        printf("%ld\n", done);
        /* A failed open raises no alert: say so, so that a bench counting alerts does not blame the daemon. */
        if (failed) fprintf(stderr, "%ld of the opens failed (last: %s)\n", failed, strerror(last_errno));
        return 0;
    }
    fprintf(stderr, "usage: daemon_loops open N | exec N | execsched N | paced PATH RATE SECONDS [TAG]\n");
    return 2;
}
