/* Session 9's experiment for issue 14 (bench/RESULTS.md, "ptracenotif, session 9"): can a syscall answered
 * through SECCOMP_RET_USER_NOTIF be turned into ptrace stops when the tracer finds, at the notification, that
 * it needs the syscall's result (an open a rule may match)? The tracer leaves the notification unanswered and
 * sends PTRACE_INTERRUPT: the tracee's wait for the answer is interrupted (-ERESTARTSYS, the notification
 * withdrawn), it reports PTRACE_EVENT_STOP, the tracer resumes it with PTRACE_SYSCALL, the restarted openat
 * takes a syscall-entry stop, notifies again (continued this time), runs, and takes its exit stop, where the
 * result is read. One tracer thread polls the listener and a SIGCHLD signalfd (ptrace requests must come from
 * the tracing thread). The child opens, reads and closes /etc/hostname N times; every K-th open is converted.
 *
 *     gcc -O2 -o /tmp/ptrace_notif_convert bench/ptrace_notif_convert.c
 *     taskset -c 0 /tmp/ptrace_notif_convert N K
 *
 * Prints the child's fd and failures, the tracer's counts (every conversion should show one interrupt stop,
 * one entry stop, one renotification and one exit stop whose result is the child's fd) and the wall ns per
 * iteration of the whole run (K=1 against a K larger than N gives a conversion's cost).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/ptrace.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifndef SECCOMP_IOCTL_NOTIF_SET_FLAGS
#define SECCOMP_IOCTL_NOTIF_SET_FLAGS SECCOMP_IOW(4, __u64)
#endif
static long pt(long req, pid_t pid, void *addr, void *data) { return syscall(SYS_ptrace, req, pid, addr, data); }
static void send_fd(int sock, int fd) {
    char data = 0, ctl[CMSG_SPACE(sizeof(int))];
    struct iovec iov = {&data, 1};
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof ctl};
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET; c->cmsg_type = SCM_RIGHTS; c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof fd);
    sendmsg(sock, &m, 0);
}
static int recv_fd(int sock) {
    char data, ctl[CMSG_SPACE(sizeof(int))];
    struct iovec iov = {&data, 1};
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof ctl};
    int fd;
    if (recvmsg(sock, &m, 0) != 1) return -1;
    memcpy(&fd, CMSG_DATA(CMSG_FIRSTHDR(&m)), sizeof fd);
    return fd;
}
int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 1000, k = argc > 2 ? atol(argv[2]) : 10;
    int sv[2];
    socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv);
    pid_t pid = fork();
    if (pid == 0) {
        struct sock_filter f[] = {
            BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
            BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_openat, 1, 0),
            BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_close, 0, 1),
            BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_USER_NOTIF),
            BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        };
        struct sock_fprog prog = {sizeof f / sizeof f[0], f};
        raise(SIGSTOP);
        prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
        int l = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, &prog);
        send_fd(sv[1], l);
        close(l);  /* notified: the tracer must already answer */
        long bad = 0;
        int first = -1;
        for (long i = 0; i < n; i++) {
            int fd = open("/etc/hostname", O_RDONLY);
            if (first < 0) first = fd;
            if (fd != first || fd < 0) bad++;
            char b[64];
            if (read(fd, b, sizeof b) <= 0) bad++;
            close(fd);
        }
        printf("child: %ld opens of fd %d, %ld failed or another fd\n", n, first, bad);
        fflush(stdout);
        _exit(bad != 0);
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    pt(PTRACE_SEIZE, pid, NULL, (void *)(long)(PTRACE_O_TRACESECCOMP | PTRACE_O_TRACESYSGOOD | PTRACE_O_EXITKILL));
    sigset_t chld;
    sigemptyset(&chld); sigaddset(&chld, SIGCHLD);
    sigprocmask(SIG_BLOCK, &chld, NULL);
    int sigfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK), listener = -1;
    long opens = 0, converted = 0, renotified = 0, exits = 0, interrupted_stops = 0, entry_stops = 0;
    long bad_exit = 0, send_enoent = 0, exit_fd = -1;
    pid_t pending = 0;  /* the tid whose open was converted: its next openat notification is continued */
    int status;
    for (;;) {
        pid_t w = waitpid(-1, &status, __WALL | WNOHANG);
        if (w == 0) {
            struct pollfd p[2] = {{sigfd, POLLIN, 0}, {listener >= 0 ? listener : sv[0], POLLIN, 0}};
            struct signalfd_siginfo si;
            if (poll(p, 2, -1) < 0) continue;
            if (p[1].revents & POLLIN) {
                if (listener < 0) {
                    listener = recv_fd(sv[0]);
                    ioctl(listener, SECCOMP_IOCTL_NOTIF_SET_FLAGS, 1UL, 0);
                } else {
                    struct seccomp_notif req;
                    struct seccomp_notif_resp resp;
                    memset(&req, 0, sizeof req);
                    if (ioctl(listener, SECCOMP_IOCTL_NOTIF_RECV, &req) == 0) {
                        int convert = 0;
                        if (req.data.nr == SYS_openat) {
                            if (pending == (pid_t)req.pid) { renotified++; pending = -pending; }
                            else if (++opens % k == 0) convert = 1;
                        }
                        if (convert) {  /* leave it unanswered: the interrupt takes it back */
                            pending = req.pid;
                            converted++;
                            pt(PTRACE_INTERRUPT, req.pid, NULL, NULL);
                        } else {
                            memset(&resp, 0, sizeof resp);
                            resp.id = req.id;
                            resp.flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
                            if (ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, &resp) < 0 && errno == ENOENT) send_enoent++;
                        }
                    }
                }
            }
            if (p[0].revents & POLLIN) while (read(sigfd, &si, sizeof si) > 0) {}
            continue;
        }
        if (w < 0 || WIFEXITED(status) || WIFSIGNALED(status)) break;
        int sig = WSTOPSIG(status), event = status >> 16;
        long req = PTRACE_CONT, deliver = 0;
        if (event == PTRACE_EVENT_STOP) {
            if (pending > 0 && w == pending) { interrupted_stops++; req = PTRACE_SYSCALL; }
        } else if (sig == (SIGTRAP | 0x80)) {
            struct ptrace_syscall_info info;
            pt(PTRACE_GET_SYSCALL_INFO, w, (void *)sizeof info, &info);
            if (info.op == PTRACE_SYSCALL_INFO_ENTRY) { entry_stops++; req = PTRACE_SYSCALL; }
            else if (info.op == PTRACE_SYSCALL_INFO_EXIT) {
                exits++;
                if (exit_fd < 0) exit_fd = (long)info.exit.rval;
                if ((long)info.exit.rval != exit_fd || exit_fd < 0) bad_exit++;
                pending = 0;
            }
        } else if (sig != SIGTRAP && sig != SIGSTOP) {
            deliver = sig;
        }
        pt(req, w, NULL, (void *)deliver);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("wall ns/iter %.0f\n", ((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec)) / n);
    printf("tracer: opens %ld converted %ld interrupted-stops %ld entry-stops %ld renotified %ld exits %ld "
           "exit-result-fd %ld exits-with-another-result %ld send-enoent %ld exit-status %d\n", opens, converted, interrupted_stops, entry_stops,
           renotified, exits, exit_fd, bad_exit, send_enoent, WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    return 0;
}
