/* The file-churn workload of bench/sensor_gates.py, in C so that the loop costs next to nothing and the
 * figures show what tracing adds to each syscall.
 *   gate_loops COMM DIR N   names itself COMM (prctl PR_SET_NAME: the comm the kernel's gates read), then N
 *                           times: mkdir DIR/d, chmod it 0700, rename it to DIR/e, rmdir DIR/e, unlink the
 *                           missing DIR/none (ENOENT, as `rm -f` does); prints wall ns per iteration
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc != 4)
        return 2;
    char d[4096], e[4096], none[4096];
    snprintf(d, sizeof d, "%s/d", argv[2]);
    snprintf(e, sizeof e, "%s/e", argv[2]);
    snprintf(none, sizeof none, "%s/none", argv[2]);
    if (prctl(PR_SET_NAME, argv[1], 0, 0, 0) != 0)
        return 1;
    long n = atol(argv[3]);
    long long t0 = now_ns();
    for (long i = 0; i < n; i++) {
        if (mkdir(d, 0755) != 0 || chmod(d, 0700) != 0 || rename(d, e) != 0 || rmdir(e) != 0)
            return 1;
        unlink(none);
    }
    printf("%.1f\n", (double)(now_ns() - t0) / n);
    return 0;
}
