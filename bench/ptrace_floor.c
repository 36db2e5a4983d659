/* The floor of a ptrace tracer on this machine: a minimal tracer in C (no records, no engine) that launches
 * a command under a seccomp filter tracing openat (and close) and answers each stop at once, so the loop's own
 * CPU per iteration is what the kernel's stops cost it. Used for bench/RESULTS.md ("ptrace driver"):
 *
 *     gcc -O2 -o /tmp/ptrace_loops bench/ptrace_loops.c && gcc -O2 -o /tmp/ptrace_floor bench/ptrace_floor.c
 *     /tmp/ptrace_floor MODE /tmp/ptrace_loops open 20000
 *
 * MODE, stops per open/read/close iteration: 4 (openat and close each at their seccomp stop and their exit
 * stop), 2c (openat and close at their seccomp stop only), 2 (openat's seccomp and exit stops; close not
 * traced), 1 (openat's seccomp stop only), n (openat at its seccomp stop; close answered by a supervisor thread
 * through SECCOMP_RET_USER_NOTIF with SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP and continued: no ptrace stop, the
 * driver's planned design for close; SYNC=0 in the environment leaves the wake-up flag off; POLL=1 answers the notifications in the tracer's thread, which
 * polls the listener and a SIGCHLD signalfd, instead of a second thread), nn (openat answered by the supervisor too, reading
 * the path with process_vm_readv under READ=1: no ptrace stop at all). READ=1 in the environment adds what the driver reads at a stop
 * (PTRACE_GET_SYSCALL_INFO, the path with process_vm_readv); DELAY=NS holds each stop that long before the
 * answer, spinning (the tracer's core stays busy) or, with SLEEP=1 too, sleeping (its core may idle), to show
 * what a slow tracer costs the tracee. Prints the loop's figures line and the stops on stderr.
 */
#define _GNU_SOURCE
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/ptrace.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <errno.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static long pt(long req, pid_t pid, void *addr, void *data) { return syscall(SYS_ptrace, req, pid, addr, data); }

#ifndef SECCOMP_IOCTL_NOTIF_SET_FLAGS
#define SECCOMP_IOCTL_NOTIF_SET_FLAGS SECCOMP_IOW(4, __u64)
#endif
#ifndef SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP
#define SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP (1UL << 0)
#endif

static long notifs;

static int recv_fd(int sock) {
    char data;
    char ctl[CMSG_SPACE(sizeof(int))];
    struct iovec iov = {&data, 1};
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof ctl};
    if (recvmsg(sock, &m, 0) != 1) return -1;
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    int fd;
    if (!c || c->cmsg_type != SCM_RIGHTS) return -1;
    memcpy(&fd, CMSG_DATA(c), sizeof fd);
    return fd;
}

static int open_listener(int sock) {
    int listener = recv_fd(sock);  /* the child sends it after the seize, from its filter install */
    if (listener >= 0 && (getenv("SYNC") == NULL || strcmp(getenv("SYNC"), "0")))
        if (ioctl(listener, SECCOMP_IOCTL_NOTIF_SET_FLAGS, SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP, 0) < 0)
            perror("SECCOMP_IOCTL_NOTIF_SET_FLAGS");
    return listener;
}

/* One notification: receive it, look at what the driver would (an open's path, a close's fd), continue. */
static int answer(int listener) {
    struct seccomp_notif req;
    struct seccomp_notif_resp resp;
    static volatile long last_fd; /* what a mirror would drop; volatile so the read is kept */
    (void)last_fd;
    memset(&req, 0, sizeof req);
    if (ioctl(listener, SECCOMP_IOCTL_NOTIF_RECV, &req) < 0) return errno == EINTR || errno == ENOENT ? 0 : -1;
    notifs++;
    if (req.data.nr == SYS_openat && getenv("READ")) {
        char path[256];
        struct iovec local = {path, sizeof path}, remote = {(void *)(long)req.data.args[1], sizeof path};
        process_vm_readv(req.pid, &local, 1, &remote, 1, 0);
    } else {
        last_fd = (long)req.data.args[0];
    }
    memset(&resp, 0, sizeof resp);
    resp.id = req.id;
    resp.flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
    ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, &resp);
    return 0;
}

/* The supervisor thread: answers every notification while the main thread answers the ptrace stops. */
static void *supervise(void *arg) {
    int listener = open_listener((int)(long)arg);
    while (listener >= 0 && answer(listener) == 0) {
    }
    return NULL;
}

static void send_fd(int sock, int fd) {
    char data = 0;
    char ctl[CMSG_SPACE(sizeof(int))];
    struct iovec iov = {&data, 1};
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof ctl};
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof fd);
    sendmsg(sock, &m, 0);
}

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
        fprintf(stderr, "usage: ptrace_floor 4|2c|2|1|n|nn COMMAND...\n");
        return 2;
    }
    const char *mode = argv[1];
    int trace_close = !strcmp(mode, "4") || !strcmp(mode, "2c");
    int exit_stops = !strcmp(mode, "4") || !strcmp(mode, "2");
    int notif = !strcmp(mode, "n") || !strcmp(mode, "nn"), notif_open = !strcmp(mode, "nn");
    int sv[2];
    if (notif && socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv)) return 1;
    int rd = getenv("READ") != NULL, sleeping = getenv("SLEEP") != NULL;
    long delay = getenv("DELAY") ? atol(getenv("DELAY")) : 0;
    pid_t pid = fork();
    if (pid == 0) {
        struct sock_filter f[] = {
            BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
            BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_openat, notif_open ? 2 : 3, 0),
            BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (trace_close || notif) ? SYS_close : 0xffff, 1, 0),
            BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
            BPF_STMT(BPF_RET | BPF_K, notif ? SECCOMP_RET_USER_NOTIF : SECCOMP_RET_TRACE),
            BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_TRACE),
        };
        struct sock_fprog prog = {sizeof f / sizeof f[0], f};
        raise(SIGSTOP);  /* until the parent has seized it */
        prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
        if (notif) {  /* the listener is close-on-exec: the exec drops the child's copy without a close */
            int l = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, &prog);
            if (l < 0) _exit(126);
            send_fd(sv[1], l);
        } else if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog)) _exit(126);
        execv(argv[2], argv + 2);
        _exit(127);
    }
    pt(PTRACE_SEIZE, pid, NULL, (void *)(long)(PTRACE_O_TRACESECCOMP | PTRACE_O_TRACESYSGOOD | PTRACE_O_EXITKILL));
    int polling = notif && getenv("POLL") != NULL, sigfd = -1, listener = -1;
    if (polling) {  /* one thread: poll the listener and a SIGCHLD signalfd, then wait4 without blocking */
        sigset_t chld;
        sigemptyset(&chld);
        sigaddset(&chld, SIGCHLD);
        sigprocmask(SIG_BLOCK, &chld, NULL);
        sigfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
    } else if (notif) {
        pthread_t t;
        pthread_create(&t, NULL, supervise, (void *)(long)sv[0]);
    }
    long stops = 0;
    int status;
    char buf[256];
    struct ptrace_syscall_info info;
    for (;;) {
        pid_t w;
        if (polling) {
            struct pollfd p[2] = {{sigfd, POLLIN, 0}, {listener >= 0 ? listener : sv[0], POLLIN, 0}};
            w = waitpid(-1, &status, __WALL | WNOHANG);
            if (w == 0) {
                struct signalfd_siginfo si;
                if (poll(p, 2, -1) < 0) continue;
                if (p[1].revents & POLLIN) {
                    if (listener < 0) listener = open_listener(sv[0]);
                    else answer(listener);
                }
                if (p[0].revents & POLLIN) while (read(sigfd, &si, sizeof si) > 0) {}
                continue;
            }
        } else {
            w = waitpid(-1, &status, __WALL);
        }
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
    fprintf(stderr, "stops %ld notifications %ld\n", stops, notifs);
    return 0;
}
