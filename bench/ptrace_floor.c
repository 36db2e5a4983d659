/* The floor of a ptrace tracer on this machine: a minimal tracer in C (no records, no engine) that launches
 * a command under a seccomp filter tracing openat (and close) and answers each stop at once, so the loop's own
 * CPU per iteration is what the kernel's stops cost it. Used for bench/RESULTS.md ("ptrace driver"):
 *
 *     gcc -O2 -o /tmp/ptrace_loops bench/ptrace_loops.c && gcc -O2 -o /tmp/ptrace_floor bench/ptrace_floor.c
 *     /tmp/ptrace_floor MODE /tmp/ptrace_loops open 20000
 *
 * MODE, stops per open/read/close iteration: 4 (openat and close each at their seccomp stop and their exit
 * stop), 2c (openat and close at their seccomp stop only), 2 (openat's seccomp and exit stops; close not
 * traced), 1 (openat's seccomp stop only). READ=1 in the environment adds what the driver reads at a stop
 * (PTRACE_GET_SYSCALL_INFO, the path with process_vm_readv); DELAY=NS holds each stop that long before the
 * answer, spinning (the tracer's core stays busy) or, with SLEEP=1 too, sleeping (its core may idle), to show
 * what a slow tracer costs the tracee. Prints the loop's figures line and the stops on stderr.
 */
#define _GNU_SOURCE
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/ptrace.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static long pt(long req, pid_t pid, void *addr, void *data) { return syscall(SYS_ptrace, req, pid, addr, data); }

static void hold(long ns, int sleeping) {
    struct timespec a, b;
    if (ns <= 0) return;
    if (sleeping) {
        struct timespec d = {0, ns};
        nanosleep(&d, NULL);
        return;
    }
    clock_gettime(CLOCK_MONOTONIC, &a);
    do clock_gettime(CLOCK_MONOTONIC, &b);
    while ((b.tv_sec - a.tv_sec) * 1000000000L + (b.tv_nsec - a.tv_nsec) < ns);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: ptrace_floor 4|2c|2|1 COMMAND...\n");
        return 2;
    }
    const char *mode = argv[1];
    int trace_close = !strcmp(mode, "4") || !strcmp(mode, "2c");
    int exit_stops = !strcmp(mode, "4") || !strcmp(mode, "2");
    int rd = getenv("READ") != NULL, sleeping = getenv("SLEEP") != NULL;
    long delay = getenv("DELAY") ? atol(getenv("DELAY")) : 0;
    pid_t pid = fork();
    if (pid == 0) {
        struct sock_filter f[] = {
            BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
            BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_openat, 2, 0),
            BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, trace_close ? SYS_close : 0xffff, 1, 0),
            BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
            BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_TRACE),
        };
        struct sock_fprog prog = {sizeof f / sizeof f[0], f};
        raise(SIGSTOP);  /* until the parent has seized it */
        prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
        if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog)) _exit(126);
        execv(argv[2], argv + 2);
        _exit(127);
    }
    pt(PTRACE_SEIZE, pid, NULL, (void *)(long)(PTRACE_O_TRACESECCOMP | PTRACE_O_TRACESYSGOOD | PTRACE_O_EXITKILL));
    long stops = 0;
    int status;
    char buf[256];
    struct ptrace_syscall_info info;
    for (;;) {
        pid_t w = waitpid(-1, &status, __WALL);
        if (w < 0 || WIFEXITED(status) || WIFSIGNALED(status)) break;
        stops++;
        int sig = WSTOPSIG(status), event = status >> 16;
        long req = PTRACE_CONT, deliver = 0;
        if (sig == SIGTRAP && event == PTRACE_EVENT_SECCOMP) {
            if (rd && pt(PTRACE_GET_SYSCALL_INFO, w, (void *)sizeof info, &info) > 0 && info.seccomp.nr == SYS_openat) {
                struct iovec local = {buf, sizeof buf}, remote = {(void *)(long)info.seccomp.args[1], sizeof buf};
                process_vm_readv(w, &local, 1, &remote, 1, 0);
            }
            if (exit_stops) req = PTRACE_SYSCALL;
        } else if (sig == (SIGTRAP | 0x80)) {
            if (rd) pt(PTRACE_GET_SYSCALL_INFO, w, (void *)sizeof info, &info);
        } else if (event != PTRACE_EVENT_STOP && sig != SIGTRAP && sig != SIGSTOP) {
            deliver = sig;
        }
        hold(delay, sleeping);
        pt(req, w, NULL, (void *)deliver);
    }
    fprintf(stderr, "stops %ld\n", stops);
    return 0;
}
