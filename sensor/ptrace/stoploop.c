/* The ptrace driver's stop loop in C (falconet.sensor.ptrace._stoploop): waits for the tracees' stops and
 * answers the stops that make no record itself, without the interpreter, and hands every other stop to the
 * Python tracer (sensor/ptrace/tracer.py), which stays the one place records are built.
 *
 * Why: a traced syscall costs two stops, and each stop waits for the tracer. The Python tracer spends ~10 us
 * of CPU per stop, during which the tracee's core idles; a stop answered in ~1 us costs the tracee a fraction
 * of that (bench/RESULTS.md, "ptrace driver"). The stops answered here are the open filter's:
 *   - the seccomp stop of an open the filter keeps back (the decision cached by the Python tracer for this
 *     path and open kind): with no rule on close, continued there (no exit stop: stoploop_fds.h); else the
 *     task waits for its exit stop here;
 *   - that exit stop: the fd is marked hidden (or, for a read-only open whose fd is a directory, which the
 *     probe never keeps back, the stop goes to Python with the open's pending state);
 *   - the seccomp stop of a close of a hidden fd, or (no rule on close) of an fd not in its process's set of
 *     fds the engine may know (stoploop_fds.h): continued without an exit stop.
 * Everything else (events, signals, other syscalls, unknown tasks, a cache miss) goes to Python as it came.
 * The hidden-fd sets live here (Python reads and writes them through this module), so both paths share one
 * copy. All state belongs to the thread that calls wait(); only bump_epoch() may be called from another
 * thread (a rules reload replacing the open filter), and it only invalidates the decision cache.
 *
 * Placement (on unless new() is told otherwise): the thread that calls wait() follows its tracees' CPU and a
 * tracee on that CPU is resumed onto it. Why: with the tracer and the tracee on two cores, every stop wakes
 * the tracer's core and every resume wakes the tracee's core, and an idle core of a VM (halt polling off) is a
 * HLT exit each time: a traced open cost 41x bare on a quiet machine, 5x with both on one core
 * (bench/RESULTS.md, "ptraceplace"). Following alone is not enough: at a resume the scheduler puts the woken
 * tracee on the idle core rather than the one the tracer occupies, so the tracee's affinity is narrowed to the
 * tracer's CPU for the resume (the wake-up then lands there) and kept narrowed across the stops answered here,
 * its own mask given back after a pause, before a fork and at a sched_*affinity stop (stoploop_place.h's head
 * comment; see NR_SERIAL for why the workload cannot see the narrowed mask). A tracee's CPU
 * is read from /proc/TID/stat (field 39) at its first stop and every SAMPLE_STOPS of its stops after; the
 * tracer moves to the CPU with the most stops over the last WINDOW_STOPS stops, so with many tracees it serves
 * the busiest CPU and the others are resumed where they are (as without placement).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <sched.h>
#include <linux/audit.h>
#include <linux/ptrace.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>
#include <time.h>

/* STOPLOOP_PROFILE (a build flag, off in every normal build: `CFLAGS=-DSTOPLOOP_PROFILE`): monotonic ns and
 * counts per step of the loop, printed to stderr when the state is freed; how bench/RESULTS.md "ptracewall"
 * found where the tracer's time per stop goes. Monotonic, not thread CPU, time: a step that is preempted by the
 * tracee it just woke counts the tracee's run too (which is itself a finding). */
#ifdef STOPLOOP_PROFILE
enum { P_WAIT, P_INFO, P_PATH, P_DIR, P_AFFINITY, P_RESUME, P_PLACE, P_STEPS };
static const char *const P_NAMES[P_STEPS] = {"waitpid", "get_info", "read_path", "fd_may_be_dir", "affinity",
                                             "resume", "place_stop"};
static long long prof_ns[P_STEPS], prof_n[P_STEPS];
static long long prof_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}
#define TIMED(step, expr) ({ long long prof_t0_ = prof_now(); __typeof__(expr) prof_r_ = (expr); \
                            prof_ns[step] += prof_now() - prof_t0_; prof_n[step]++; prof_r_; })
static void prof_print(void) {
    for (int i = 0; i < P_STEPS; i++)
        if (prof_n[i])
            fprintf(stderr, "stoploop profile %-14s %10lld calls %8.0f ns/call %12lld ns\n", P_NAMES[i], prof_n[i],
                    (double)prof_ns[i] / (double)prof_n[i], prof_ns[i]);
    memset(prof_ns, 0, sizeof prof_ns);
    memset(prof_n, 0, sizeof prof_n);
}
#else
#define TIMED(step, expr) (expr)
static void prof_print(void) {}
#endif

#define DATA_TRACED 1                 /* seccomp.py: SECCOMP_RET_TRACE's data for an x86-64 syscall */
#define OPEN_READ 1                   /* openfilter.py / probe_openfilter.h kinds */
#define OPEN_WRITE 2
#define OPEN_OTHER 4
#define OPEN_KEEP 8
#define PATH_SCAN_MAX 256
#define QUIET_FLAGS (04000 | 0100000 | 0200000 | 0400000 | 0400 | 01000000 | 02000000)
#define O_DIRECTORY_ 0200000
#define O_PATH_ 010000000
#define CACHE_SLOTS 8192              /* decisions; emptied at CACHE_MAX, as the Python cache (SEEN_MAX) */
#define CACHE_MAX 4096
#define NR_MAX 512
#define SAMPLE_STOPS 64               /* a tracee's CPU is read again after this many of its stops */
#define WINDOW_STOPS 64               /* the tracer's CPU is chosen again after this many stops (of tasks whose CPU is known) */
#define CPUS_TRACKED 1024             /* CPU_SETSIZE: CPUs beyond it are not followed */

/* What a syscall number is to this loop: not its (exec, credentials read before: Python's at entry), a close,
 * an open judged by the filter (flags in an argument, or creat's fixed kinds), or one that needs nothing at its
 * seccomp stop but its arguments (its exit stop, which makes the record, is Python's). */
enum { NR_OTHER, NR_CLOSE, NR_OPEN_FLAGS, NR_OPEN_WRITE, NR_PLAIN, NR_SERIAL };
/* NR_SERIAL: sched_getaffinity and sched_setaffinity, traced only for placement: at their seccomp stop every
 * narrowed tracee's mask is given back, and (with tracees kept narrowed) nothing is narrowed again until the
 * syscall has run (its exit stop, answered here), so the workload never reads a narrowed mask, of its own thread
 * or of another, and a mask it sets is never overwritten by one given back. */

struct fdset;

typedef struct {
    uint64_t key;   /* tid, tgid (procs), or tgid << 32 | fd (hidden) */
    struct fdset *fds;  /* procs: the fds the engine may know (stoploop_fds.h) */
    uint8_t used, pending, hide, may_be_dir;
    uint8_t countdown;  /* stops until this task's CPU is read again */
    uint8_t kept;       /* left narrowed to the stop thread's CPU after its last resume (stoploop_place.h) */
    uint8_t serial;     /* in a sched_*affinity syscall, to be stopped at its exit (NR_SERIAL) */
    uint8_t own_mask;   /* at the seccomp stop of a fork-family syscall handed to Python: resumed unnarrowed */
    int32_t fd_dir;     /* an open /proc/TID/fd for its directory checks; -1: none (DIR_FDS_MAX reached) */
    int16_t cpu;        /* where it was last seen stopped; -1: not known */
    int32_t tgid;
    int32_t nr;
    uint64_t args[6];
} slot_t;

typedef struct {  /* open addressing, linear probing, backward-shift deletion */
    slot_t *slots;
    size_t cap, count;
} table_t;

typedef struct {
    uint32_t hash;
    uint8_t need, used, drop;
    uint16_t len;
    char path[PATH_SCAN_MAX];
} decision_t;

typedef struct {  /* a tracee kept narrowed (stoploop_place.h) */
    pid_t tid;
    int cpu;            /* the CPU it is narrowed to */
    long long since;    /* its last resume, CLOCK_MONOTONIC ns */
    cpu_set_t saved;    /* its own mask, given back */
} narrowed_t;

#define NARROW_MAX 64   /* tracees kept narrowed at once; more: narrowed for the wake-up only */
#define DIR_FDS_MAX 256 /* /proc/TID/fd directories held open at once */

typedef struct {
    table_t tasks;   /* tid -> tgid, and a kept-back open waiting for its exit stop */
    table_t hidden;  /* tgid << 32 | fd of the fds of kept-back opens (when they take their exit stop) */
    table_t procs;   /* tgid -> the fds the engine may know (stoploop_fds.h); no entry: everything known */
    table_t closing; /* tid -> a close entered here, its exit stop not handed over yet (stoploop_fds.h) */
    int skip;        /* closes are state-only: kept-back opens skip their exit stop (atomic: set_skip) */
    int learn;       /* closes became events after being state-only: unknown fds learned (atomic: set_learn) */
    decision_t *cache;
    size_t cached;
    unsigned cache_epoch;
    unsigned epoch;  /* bumped (atomically) when the open filter is replaced */
    uint8_t kind[NR_MAX];
    uint8_t flags_arg[NR_MAX];
    long long stops, filtered, answered;
    int place;                      /* placement on */
    int keep;                       /* tracees stay narrowed across stops (stoploop_place.h); 0: per wake-up */
    int serial;                     /* tracees in a sched_*affinity syscall: nothing is narrowed meanwhile */
    int cpu;                        /* the CPU this thread is pinned to; -1: none yet */
    unsigned window;                /* sampled stops in the current window */
    uint32_t *seen;                 /* stops per CPU in the current window (CPUS_TRACKED) */
    long long moves, held;          /* times this thread moved; resumes made onto its CPU */
    /* The busy-CPU guard (stoploop_place.h guard_busy): this thread's run_delay and stops at its last check. */
    int sched_fd;                   /* /proc/thread-self/schedstat of the stop thread; -1: none (yet) */
    long long guard_ns;             /* run_delay per stop above which placement backs off (0: guard off) */
    long long delay0, stops0;       /* run_delay (ns) and stops at the last check */
    long long backoff_ns, backoff_until;  /* the current back-off and when it ends (CLOCK_MONOTONIC) */
    long long backoffs;             /* times the guard unpinned this thread */
    int busy_windows;               /* consecutive windows over guard_ns per stop (GUARD_WINDOWS back off) */
    int home_saved;
    cpu_set_t home;                 /* this thread's mask before its first pin, given back by the guard */
    int dir_fds;                    /* /proc/TID/fd directories held open (tasks' fd_dir) */
    /* Shared with the give-back thread (stoploop_place.h), under lock. */
    pthread_mutex_t lock;
    pthread_cond_t wake;
    pthread_t giver;
    int sync_ready, giver_running, stopping;
    int n_narrowed;
    narrowed_t narrowed[NARROW_MAX];
    long long given_back;           /* masks the give-back thread gave back */
} state_t;

static uint64_t mix(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return x;
}

static int table_init(table_t *t, size_t cap) {
    t->slots = calloc(cap, sizeof(slot_t));
    t->cap = cap;
    t->count = 0;
    return t->slots ? 0 : -1;
}

static slot_t *table_find(const table_t *t, uint64_t key) {
    size_t mask = t->cap - 1;
    for (size_t i = mix(key) & mask;; i = (i + 1) & mask) {
        slot_t *s = &t->slots[i];
        if (!s->used) return NULL;
        if (s->key == key) return s;
    }
}

static int table_grow(table_t *t);

static slot_t *table_put(table_t *t, uint64_t key) {
    if ((t->count + 1) * 2 > t->cap && table_grow(t) < 0) return NULL;
    size_t mask = t->cap - 1;
    for (size_t i = mix(key) & mask;; i = (i + 1) & mask) {
        slot_t *s = &t->slots[i];
        if (!s->used) {
            memset(s, 0, sizeof *s);
            s->used = 1;
            s->key = key;
            t->count++;
            return s;
        }
        if (s->key == key) return s;
    }
}

static int table_grow(table_t *t) {
    table_t bigger;
    if (table_init(&bigger, t->cap * 2) < 0) return -1;
    for (size_t i = 0; i < t->cap; i++) {
        if (t->slots[i].used) {
            slot_t *s = table_put(&bigger, t->slots[i].key);
            *s = t->slots[i];
        }
    }
    free(t->slots);
    *t = bigger;
    return 0;
}

static int table_del(table_t *t, uint64_t key) {
    size_t mask = t->cap - 1, i = mix(key) & mask;
    for (;; i = (i + 1) & mask) {
        if (!t->slots[i].used) return 0;
        if (t->slots[i].key == key) break;
    }
    t->slots[i].used = 0;
    t->count--;
    for (size_t j = (i + 1) & mask; t->slots[j].used; j = (j + 1) & mask) {  /* backward shift */
        size_t home = mix(t->slots[j].key) & mask;
        if (((j - home) & mask) >= ((j - i) & mask)) {
            t->slots[i] = t->slots[j];
            t->slots[j].used = 0;
            i = j;
        }
    }
    return 1;
}

static uint64_t fd_key(int tgid, int fd) { return ((uint64_t)(uint32_t)tgid << 32) | (uint32_t)fd; }

#include "stoploop_fds.h"

static uint32_t path_hash(const char *p, size_t len, int need) {
    uint32_t h = 2166136261u ^ (uint32_t)need;
    for (size_t i = 0; i < len; i++) h = (h ^ (uint8_t)p[i]) * 16777619u;
    return h;
}

static decision_t *cache_slot(state_t *st, const char *p, size_t len, int need, uint32_t h) {
    for (size_t i = h & (CACHE_SLOTS - 1);; i = (i + 1) & (CACHE_SLOTS - 1)) {
        decision_t *d = &st->cache[i];
        if (!d->used || (d->hash == h && d->need == need && d->len == len && memcmp(d->path, p, len) == 0))
            return d;
    }
}

static void cache_sync(state_t *st) {
    unsigned now = __atomic_load_n(&st->epoch, __ATOMIC_ACQUIRE);
    if (now != st->cache_epoch) {
        memset(st->cache, 0, CACHE_SLOTS * sizeof(decision_t));
        st->cached = 0;
        st->cache_epoch = now;
    }
}

/* 1: the filter keeps this open back, 0: it lets it through, -1: not decided yet (Python decides). */
static int cache_decision(state_t *st, const char *p, size_t len, int need) {
    cache_sync(st);
    decision_t *d = cache_slot(st, p, len, need, path_hash(p, len, need));
    return d->used ? d->drop : -1;
}

/* probe_openfilter.h's open_need (sensor/openfilter.py open_need) for open/openat. */
static int open_need(uint64_t flags) {
    if (flags & (O_DIRECTORY_ | O_PATH_)) return OPEN_KEEP;
    uint64_t acc = flags & 3;
    int need = (acc == 0 || acc == 2 ? OPEN_READ : 0) | (acc == 1 || acc == 2 ? OPEN_WRITE : 0)
               | (flags & ~(uint64_t)(3 | QUIET_FLAGS) ? OPEN_OTHER : 0);
    return need ? need : OPEN_OTHER;
}

#define PATH_UNREADABLE (-1)  /* nothing readable: kernel.read_str's None, never kept back */
#define PATH_PYTHON (-2)      /* cut short or no NUL within PATH_SCAN_MAX: left to the Python tracer */

/* The path argument without its NUL, as kernel.read_str reads it (page by page): its length, or one of the
 * two above. */
static ssize_t read_path(pid_t pid, uint64_t addr, char *buf) {
    size_t have = 0;
    if (!addr) return PATH_UNREADABLE;
    while (have < PATH_SCAN_MAX) {
        size_t chunk = 4096 - ((addr + have) % 4096);
        if (chunk > PATH_SCAN_MAX - have) chunk = PATH_SCAN_MAX - have;
        struct iovec local = {buf + have, chunk}, remote = {(void *)(uintptr_t)(addr + have), chunk};
        ssize_t n = process_vm_readv(pid, &local, 1, &remote, 1, 0);
        if (n <= 0) return have ? PATH_PYTHON : PATH_UNREADABLE;
        char *nul = memchr(buf + have, 0, (size_t)n);
        if (nul) return nul - buf;
        if ((size_t)n < chunk) return PATH_PYTHON;
        have += (size_t)n;
    }
    return PATH_PYTHON;
}

/* probe_openfilter.h's fd_may_be_dir (tracer.py _fd_may_be_dir). The task's /proc/TID/fd directory is kept
 * open (task->fd_dir), so a check walks one path component, not four (~1.0 against ~1.4 us, bench/RESULTS.md
 * "ptracewall"); a task's directory goes with its slot (forget), and a tid reused after that gets a new one. */
static int fd_may_be_dir(state_t *st, slot_t *task, pid_t tid, long fd) {
    char name[64];
    struct stat sb;
    if (task->fd_dir < 0 && st->dir_fds < DIR_FDS_MAX) {
        snprintf(name, sizeof name, "/proc/%d/fd", (int)tid);
        task->fd_dir = open(name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (task->fd_dir >= 0) st->dir_fds++;
    }
    if (task->fd_dir >= 0) {
        snprintf(name, sizeof name, "%ld", fd);
        if (fstatat(task->fd_dir, name, &sb, 0) != 0) return 1;
        return S_ISDIR(sb.st_mode);
    }
    snprintf(name, sizeof name, "/proc/%d/fd/%ld", (int)tid, fd);
    if (stat(name, &sb) != 0) return 1;
    return S_ISDIR(sb.st_mode);
}

/* Closes a task's /proc/TID/fd (its slot is going). */
static void task_release(state_t *st, slot_t *task) {
    if (task->fd_dir >= 0) {
        close(task->fd_dir);
        st->dir_fds--;
        task->fd_dir = -1;
    }
}

/* ptrace(2) as the kernel takes it (glibc's <sys/ptrace.h> and <linux/ptrace.h> cannot both be included). */
static long ptrace(long request, pid_t pid, void *addr, void *data) {
    return syscall(SYS_ptrace, request, pid, addr, data);
}

static int get_info(pid_t pid, struct ptrace_syscall_info *info) {
    return TIMED(P_INFO, ptrace(PTRACE_GET_SYSCALL_INFO, pid, (void *)sizeof *info, info)) > 0 ? 0 : -1;
}

/* resume()'s keep: stay narrowed after the wake-up, narrowed for the wake-up only, never narrowed. */
enum { KEEP, WAKE_ONLY, OWN_MASK };

/* clone, fork, vfork, clone3 (x86-64): the child starts with the parent's affinity. */
static int forks(int nr) { return nr == 56 || nr == 57 || nr == 58 || nr == 435; }

#include "stoploop_place.h"

/* A task's sched_*affinity syscall is over (its exit stop, its death, its slot going): narrowing may resume. */
static void serial_done(state_t *st, slot_t *task) {
    if (task->serial) {
        task->serial = 0;
        st->serial--;
    }
}

/* A seccomp stop: 1 when answered here (the task then waits for its exit stop, kept back or not). */
static int on_seccomp(state_t *st, pid_t pid, slot_t *task) {
    struct ptrace_syscall_info info;
    if (get_info(pid, &info) < 0 || info.op != PTRACE_SYSCALL_INFO_SECCOMP || info.arch != AUDIT_ARCH_X86_64
        || info.seccomp.ret_data != DATA_TRACED || info.seccomp.nr >= NR_MAX)
        return 0;
    int nr = (int)info.seccomp.nr, kind = st->kind[nr], hide = 0, need = 0;
    task->own_mask = (uint8_t)forks(nr);  /* for Python's resume if the stop goes there */
    if (kind == NR_OTHER) return 0;
    if (kind == NR_SERIAL) {  /* every mask given back first; not resumed onto this CPU (it would narrow again) */
        give_back_all(st);
        task->kept = 0;
        if (st->keep && ptrace(PTRACE_SYSCALL, pid, NULL, NULL) == 0) {  /* no narrowing until it has run */
            task->serial = 1;
            st->serial++;
        } else if (!st->keep) {
            ptrace(PTRACE_CONT, pid, NULL, NULL);
        }
        return 1;
    }
    if (kind == NR_CLOSE && (table_del(&st->hidden, fd_key(task->tgid, (int)info.seccomp.args[0]))
                             || close_unknown(st, task->tgid, (long)(int)info.seccomp.args[0]))) {
        st->filtered++;
        resume(st, task, pid, PTRACE_CONT, 0, KEEP);  /* a tracee killed meanwhile: its exit comes next */
        return 1;
    }
    if (kind == NR_CLOSE && close_learns(st, task->tgid, (long)(int)info.seccomp.args[0]))
        return 0;  /* its fd is learned by Python from /proc before the close runs */
    if (kind == NR_OPEN_FLAGS || kind == NR_OPEN_WRITE) {
        need = kind == NR_OPEN_WRITE ? OPEN_WRITE | OPEN_OTHER : open_need(info.seccomp.args[st->flags_arg[nr]]);
        if (!(need & OPEN_KEEP)) {  /* tracer.py _judge_open: an unreadable or too long path is never kept back */
            char path[PATH_SCAN_MAX];
            uint64_t addr = info.seccomp.args[kind == NR_OPEN_WRITE ? 0 : st->flags_arg[nr] - 1];
            ssize_t len = TIMED(P_PATH, read_path(pid, addr, path));
            if (len == PATH_PYTHON) return 0;
            if (len >= 0) {
                hide = cache_decision(st, path, (size_t)len, need);
                if (hide < 0) return 0;
            }
        }
        if (hide && open_skips_exit(st, task->tgid)) {  /* no record, and its fd matters to no close (above) */
            st->filtered++;
            resume(st, task, pid, PTRACE_CONT, 0, KEEP);
            return 1;
        }
    }
    task->pending = 1;
    task->hide = (uint8_t)hide;
    task->nr = nr;
    memcpy(task->args, info.seccomp.args, sizeof task->args);
    task->may_be_dir = hide && (need & OPEN_READ) && !(need & OPEN_WRITE);
    if (kind == NR_CLOSE) closing_put(st, pid, task);
    /* a child inherits its parent's mask: a fork-family syscall runs with the tracee's own */
    if (resume(st, task, pid, PTRACE_SYSCALL, 0, forks(nr) ? OWN_MASK : KEEP) != 0) {
        task->pending = 0;
        if (kind == NR_CLOSE) table_del(&st->closing, (uint64_t)pid);
    }
    return 1;
}

/* The exit stop of a kept-back open: 1 when answered here. */
static int on_exit_stop(state_t *st, pid_t pid, slot_t *task) {
    struct ptrace_syscall_info info;
    if (!task->hide || get_info(pid, &info) < 0 || info.op != PTRACE_SYSCALL_INFO_EXIT) return 0;
    long long res = info.exit.rval;
    if (res >= 0 && task->may_be_dir && TIMED(P_DIR, fd_may_be_dir(st, task, pid, (long)res)))
        return 0;  /* a record: Python's */
    task->pending = 0;
    if (res >= 0 && !table_put(&st->hidden, fd_key(task->tgid, (int)res))) {
        task->pending = 1;
        return 0;
    }
    st->filtered++;
    resume(st, task, pid, PTRACE_CONT, 0, KEEP);
    return 1;
}

typedef struct {
    pid_t pid;
    int status;
    int nr;  /* a kept-back open's pending state handed over with its task's stop; -1: none */
    uint64_t args[6];
    int hide, may_be_dir;
} handed_t;

/* Waits until a stop Python must handle; -1 with errno (ECHILD: no tracee left). Runs without the GIL. */
static int loop(state_t *st, handed_t *out) {
    for (;;) {
        int status;
        pid_t pid = TIMED(P_WAIT, waitpid(-1, &status, __WALL | __WNOTHREAD));
        if (pid < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        st->stops++;
        if (WIFEXITED(status) || WIFSIGNALED(status)) {
            give_back(st, pid, 0);  /* gone: nothing to give back */
            slot_t *gone = table_find(&st->tasks, (uint64_t)pid);
            if (gone) serial_done(st, gone);
        }
        slot_t *task = WIFSTOPPED(status) ? table_find(&st->tasks, (uint64_t)pid) : NULL;
        if (task && task->serial) {  /* its sched_*affinity syscall has run (or it stopped for another reason) */
            serial_done(st, task);
            if (WSTOPSIG(status) == (SIGTRAP | 0x80)) {
                ptrace(PTRACE_CONT, pid, NULL, NULL);
                st->answered++;
                continue;
            }
        }
        if (task) {
            (void)TIMED(P_PLACE, (place_stop(st, pid, task), 1));
            int sig = WSTOPSIG(status), event = status >> 16;
            int done = 0;
            if (!task->pending && sig == SIGTRAP && event == PTRACE_EVENT_SECCOMP)
                done = on_seccomp(st, pid, task);
            else if (task->pending && sig == (SIGTRAP | 0x80))
                done = on_exit_stop(st, pid, task);
            if (done) {
                st->answered++;
                continue;
            }
        }
        memset(out, 0, sizeof *out);
        out->pid = pid;
        out->status = status;
        out->nr = -1;
        if (task && task->pending) {
            task->pending = 0;
            if (st->kind[task->nr] == NR_CLOSE && st->closing.count) table_del(&st->closing, (uint64_t)pid);
            out->nr = task->nr;
            memcpy(out->args, task->args, sizeof out->args);
            out->hide = task->hide;
            out->may_be_dir = task->may_be_dir;
        }
        return 0;
    }
}

/* --- the Python interface ------------------------------------------------------------------------------ */

static const char CAPSULE[] = "falconet.sensor.ptrace._stoploop.state";

static void state_release(state_t *st) {
    place_release(st);
    for (size_t i = 0; st->tasks.slots && i < st->tasks.cap; i++)
        if (st->tasks.slots[i].used) task_release(st, &st->tasks.slots[i]);
    free(st->tasks.slots);
    free(st->hidden.slots);
    free(st->closing.slots);
    procs_release(st);
    free(st->cache);
    free(st->seen);
    free(st);
}

static void state_free(PyObject *capsule) {
    state_t *st = PyCapsule_GetPointer(capsule, CAPSULE);
    if (st) state_release(st);
    prof_print();
}

static state_t *get_state(PyObject *capsule) { return PyCapsule_GetPointer(capsule, CAPSULE); }

static PyObject *py_new(PyObject *self, PyObject *args) {
    PyObject *kinds;
    int place = 1, keep = 1;
    long long guard_ns = GUARD_NS;
    if (!PyArg_ParseTuple(args, "O!|ppL", &PyDict_Type, &kinds, &place, &keep, &guard_ns)) return NULL;
    state_t *st = calloc(1, sizeof *st);
    if (!st) return PyErr_NoMemory();
    st->place = place;
    st->keep = keep;
    st->cpu = -1;
    st->sched_fd = -1;
    st->guard_ns = guard_ns;
    if (place_init(st) < 0) {
        state_release(st);
        return PyErr_NoMemory();
    }
    if (table_init(&st->tasks, 64) < 0 || table_init(&st->hidden, 64) < 0 || table_init(&st->procs, 64) < 0
        || table_init(&st->closing, 16) < 0
        || !(st->cache = calloc(CACHE_SLOTS, sizeof(decision_t)))
        || !(st->seen = calloc(CPUS_TRACKED, sizeof *st->seen))) {
        state_release(st);
        return PyErr_NoMemory();
    }
    PyObject *key, *value;
    Py_ssize_t pos = 0;
    while (PyDict_Next(kinds, &pos, &key, &value)) {  /* nr -> (kind, flags argument index) */
        long nr = PyLong_AsLong(key);
        int kind, flags_arg;
        if (nr < 0 || nr >= NR_MAX || !PyArg_ParseTuple(value, "ii", &kind, &flags_arg)) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "syscall number out of range");
            state_release(st);
            return NULL;
        }
        st->kind[nr] = (uint8_t)kind;
        st->flags_arg[nr] = (uint8_t)flags_arg;
    }
    return PyCapsule_New(st, CAPSULE, state_free);
}

static PyObject *py_wait(PyObject *self, PyObject *args) {
    PyObject *capsule;
    if (!PyArg_ParseTuple(args, "O", &capsule)) return NULL;
    state_t *st = get_state(capsule);
    if (!st) return NULL;
    handed_t out;
    int rc, err;
    Py_BEGIN_ALLOW_THREADS
    rc = loop(st, &out);
    err = errno;
    Py_END_ALLOW_THREADS
    if (rc < 0) {
        if (err == ECHILD) Py_RETURN_NONE;
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return Py_BuildValue("(iii(KKKKKK)OO)", out.pid, out.status, out.nr,
                         (unsigned long long)out.args[0], (unsigned long long)out.args[1],
                         (unsigned long long)out.args[2], (unsigned long long)out.args[3],
                         (unsigned long long)out.args[4], (unsigned long long)out.args[5],
                         out.hide ? Py_True : Py_False, out.may_be_dir ? Py_True : Py_False);
}

static PyObject *py_task(PyObject *self, PyObject *args) {
    PyObject *capsule;
    int tid, tgid;
    if (!PyArg_ParseTuple(args, "Oii", &capsule, &tid, &tgid)) return NULL;
    state_t *st = get_state(capsule);
    if (!st) return NULL;
    slot_t *s = table_find(&st->tasks, (uint64_t)tid);
    if (s) {
        task_release(st, s);
        serial_done(st, s);
    } else if (!(s = table_put(&st->tasks, (uint64_t)tid))) return PyErr_NoMemory();
    table_del(&st->closing, (uint64_t)tid);
    s->fd_dir = -1;
    s->kept = 0;
    give_back(st, tid, 1);
    s->tgid = tgid;
    s->pending = 0;
    s->cpu = -1;
    s->countdown = 0;
    Py_RETURN_NONE;
}

static PyObject *py_forget(PyObject *self, PyObject *args) {
    PyObject *capsule;
    int tid;
    if (!PyArg_ParseTuple(args, "Oi", &capsule, &tid)) return NULL;
    state_t *st = get_state(capsule);
    if (!st) return NULL;
    slot_t *s = table_find(&st->tasks, (uint64_t)tid);
    if (s) {
        task_release(st, s);
        serial_done(st, s);
    }
    give_back(st, tid, 0);
    table_del(&st->tasks, (uint64_t)tid);
    table_del(&st->closing, (uint64_t)tid);
    Py_RETURN_NONE;
}

static PyObject *py_hide(PyObject *self, PyObject *args) {
    PyObject *capsule;
    int tgid, fd;
    if (!PyArg_ParseTuple(args, "Oii", &capsule, &tgid, &fd)) return NULL;
    state_t *st = get_state(capsule);
    if (!st) return NULL;
    if (!table_put(&st->hidden, fd_key(tgid, fd))) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static PyObject *py_unhide(PyObject *self, PyObject *args) {
    PyObject *capsule;
    int tgid, fd;
    if (!PyArg_ParseTuple(args, "Oii", &capsule, &tgid, &fd)) return NULL;
    state_t *st = get_state(capsule);
    if (!st) return NULL;
    return PyBool_FromLong(table_del(&st->hidden, fd_key(tgid, fd)));
}

static PyObject *py_forget_process(PyObject *self, PyObject *args) {
    PyObject *capsule;
    int tgid;
    if (!PyArg_ParseTuple(args, "Oi", &capsule, &tgid)) return NULL;
    state_t *st = get_state(capsule);
    if (!st) return NULL;
    table_t *t = &st->hidden;
    for (size_t i = 0; i < t->cap;) {  /* a deletion may shift a later entry into slot i: look again */
        if (t->slots[i].used && (int32_t)(t->slots[i].key >> 32) == tgid)
            table_del(t, t->slots[i].key);
        else
            i++;
    }
    proc_set(st, tgid, NULL);
    Py_RETURN_NONE;
}

/* --- the fds the engine may know (stoploop_fds.h), kept by the Python tracer ------------------------------ */

static PyObject *py_fds_track(PyObject *self, PyObject *args) {
    PyObject *capsule;
    int tgid;
    if (!PyArg_ParseTuple(args, "Oi", &capsule, &tgid)) return NULL;
    state_t *st = get_state(capsule);
    if (!st) return NULL;
    fdset_t *set = fdset_new();
    if (!set || proc_set(st, tgid, set) < 0) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static PyObject *py_fds_learn(PyObject *self, PyObject *args) {
    PyObject *capsule;
    int tgid, fd, learn;
    if (!PyArg_ParseTuple(args, "Oiip", &capsule, &tgid, &fd, &learn)) return NULL;
    state_t *st = get_state(capsule);
    if (!st) return NULL;
    fdset_t *set = proc_fds(st, tgid);
    if (set && learn && fdset_add(set, fd) < 0) {
        proc_set(st, tgid, NULL);  /* cannot grow: everything known from now on (still a superset) */
        return PyErr_NoMemory();
    }
    if (set && !learn) fdset_del(set, fd);
    Py_RETURN_NONE;
}

static PyObject *py_fds_known(PyObject *self, PyObject *args) {
    PyObject *capsule;
    int tgid, fd;
    if (!PyArg_ParseTuple(args, "Oii", &capsule, &tgid, &fd)) return NULL;
    state_t *st = get_state(capsule);
    if (!st) return NULL;
    fdset_t *set = proc_fds(st, tgid);
    if (!set) Py_RETURN_NONE;
    return PyBool_FromLong(fdset_has(set, fd));
}

static PyObject *py_fds_fork(PyObject *self, PyObject *args) {
    PyObject *capsule;
    int parent, child, share;
    if (!PyArg_ParseTuple(args, "Oiip", &capsule, &parent, &child, &share)) return NULL;
    state_t *st = get_state(capsule);
    if (!st) return NULL;
    fdset_t *from = proc_fds(st, parent), *set = NULL;
    if (from && share) {
        set = from;
        set->refs++;
    } else if (from && !(set = fdset_copy(from))) {
        proc_set(st, child, NULL);
        return PyErr_NoMemory();
    }
    if (proc_set(st, child, set) < 0) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static PyObject *py_fds_unshare(PyObject *self, PyObject *args) {
    PyObject *capsule;
    int tgid;
    if (!PyArg_ParseTuple(args, "Oi", &capsule, &tgid)) return NULL;
    state_t *st = get_state(capsule);
    if (!st) return NULL;
    fdset_t *set = proc_fds(st, tgid);
    if (set && set->refs > 1) {
        fdset_t *own = fdset_copy(set);
        if (!own) {
            proc_set(st, tgid, NULL);  /* everything known from now on */
            return PyErr_NoMemory();
        }
        if (proc_set(st, tgid, own) < 0) return PyErr_NoMemory();
    }
    Py_RETURN_NONE;
}

static PyObject *py_closing(PyObject *self, PyObject *args) {
    PyObject *capsule;
    int tgid;
    if (!PyArg_ParseTuple(args, "Oi", &capsule, &tgid)) return NULL;
    state_t *st = get_state(capsule);
    if (!st) return NULL;
    PyObject *out = PyList_New(0);
    if (!out || !st->closing.count) return out;
    fdset_t *set = proc_fds(st, tgid);
    for (size_t i = 0; i < st->closing.cap; i++) {
        const slot_t *c = &st->closing.slots[i];
        if (!c->used || !(c->tgid == tgid || (set && proc_fds(st, c->tgid) == set))) continue;
        PyObject *item = Py_BuildValue("(i(KKKKKK))", (int)c->key, (unsigned long long)c->args[0],
                                       (unsigned long long)c->args[1], (unsigned long long)c->args[2],
                                       (unsigned long long)c->args[3], (unsigned long long)c->args[4],
                                       (unsigned long long)c->args[5]);
        if (!item || PyList_Append(out, item) < 0) {
            Py_XDECREF(item);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(item);
    }
    return out;
}

static PyObject *py_closed_early(PyObject *self, PyObject *args) {
    PyObject *capsule;
    int tid;
    if (!PyArg_ParseTuple(args, "Oi", &capsule, &tid)) return NULL;
    state_t *st = get_state(capsule);
    if (!st) return NULL;
    table_del(&st->closing, (uint64_t)tid);
    Py_RETURN_NONE;
}

static PyObject *py_fds_same(PyObject *self, PyObject *args) {
    PyObject *capsule;
    int a, b;
    if (!PyArg_ParseTuple(args, "Oii", &capsule, &a, &b)) return NULL;
    state_t *st = get_state(capsule);
    if (!st) return NULL;
    fdset_t *set = proc_fds(st, a);
    return PyBool_FromLong(a == b || (set != NULL && set == proc_fds(st, b)));
}

static PyObject *py_set_skip(PyObject *self, PyObject *args) {
    PyObject *capsule;
    int skip;
    if (!PyArg_ParseTuple(args, "Op", &capsule, &skip)) return NULL;
    state_t *st = get_state(capsule);
    if (!st) return NULL;
    __atomic_store_n(&st->skip, skip, __ATOMIC_RELEASE);
    Py_RETURN_NONE;
}

static PyObject *py_set_learn(PyObject *self, PyObject *args) {
    PyObject *capsule;
    int learn;
    if (!PyArg_ParseTuple(args, "Op", &capsule, &learn)) return NULL;
    state_t *st = get_state(capsule);
    if (!st) return NULL;
    __atomic_store_n(&st->learn, learn, __ATOMIC_RELEASE);
    Py_RETURN_NONE;
}

static PyObject *py_decide(PyObject *self, PyObject *args) {
    PyObject *capsule;
    const char *path;
    Py_ssize_t len;
    int need, drop;
    unsigned epoch;
    if (!PyArg_ParseTuple(args, "Oy#iIp", &capsule, &path, &len, &need, &epoch, &drop)) return NULL;
    state_t *st = get_state(capsule);
    if (!st) return NULL;
    cache_sync(st);
    if (epoch != st->cache_epoch || len >= PATH_SCAN_MAX || need < 0 || need >= OPEN_KEEP) Py_RETURN_NONE;
    if (st->cached >= CACHE_MAX) {
        memset(st->cache, 0, CACHE_SLOTS * sizeof(decision_t));
        st->cached = 0;
    }
    uint32_t h = path_hash(path, (size_t)len, need);
    decision_t *d = cache_slot(st, path, (size_t)len, need, h);
    if (!d->used) {
        d->used = 1;
        d->hash = h;
        d->need = (uint8_t)need;
        d->len = (uint16_t)len;
        memcpy(d->path, path, (size_t)len);
        st->cached++;
    }
    d->drop = (uint8_t)drop;
    Py_RETURN_NONE;
}

static PyObject *py_epoch(PyObject *self, PyObject *args) {
    PyObject *capsule;
    if (!PyArg_ParseTuple(args, "O", &capsule)) return NULL;
    state_t *st = get_state(capsule);
    if (!st) return NULL;
    return PyLong_FromUnsignedLong(__atomic_load_n(&st->epoch, __ATOMIC_ACQUIRE));
}

static PyObject *py_bump_epoch(PyObject *self, PyObject *args) {
    PyObject *capsule;
    if (!PyArg_ParseTuple(args, "O", &capsule)) return NULL;
    state_t *st = get_state(capsule);
    if (!st) return NULL;
    __atomic_add_fetch(&st->epoch, 1, __ATOMIC_RELEASE);
    Py_RETURN_NONE;
}

static PyObject *py_counters(PyObject *self, PyObject *args) {
    PyObject *capsule;
    if (!PyArg_ParseTuple(args, "O", &capsule)) return NULL;
    state_t *st = get_state(capsule);
    if (!st) return NULL;
    return Py_BuildValue("(LLL)", st->stops, st->answered, st->filtered);
}

static PyObject *py_resume(PyObject *self, PyObject *args) {
    PyObject *capsule;
    int pid, sig;
    long request;
    if (!PyArg_ParseTuple(args, "Oili", &capsule, &pid, &request, &sig)) return NULL;
    state_t *st = get_state(capsule);
    if (!st) return NULL;
    if (request != PTRACE_CONT && request != PTRACE_SYSCALL) {
        PyErr_SetString(PyExc_ValueError, "resume takes PTRACE_CONT or PTRACE_SYSCALL");
        return NULL;
    }
    return PyBool_FromLong(resume(st, table_find(&st->tasks, (uint64_t)pid), pid, request, sig, WAKE_ONLY) == 0);
}

static PyObject *py_placement(PyObject *self, PyObject *args) {
    PyObject *capsule;
    if (!PyArg_ParseTuple(args, "O", &capsule)) return NULL;
    state_t *st = get_state(capsule);
    if (!st) return NULL;
    pthread_mutex_lock(&st->lock);
    long long given_back = st->given_back;
    int narrowed = st->n_narrowed;
    pthread_mutex_unlock(&st->lock);
    return Py_BuildValue("(iLLLiL)", st->cpu, st->moves, st->held, given_back, narrowed, st->backoffs);
}

static PyObject *py_open_need(PyObject *self, PyObject *args) {
    unsigned long long flags;
    if (!PyArg_ParseTuple(args, "K", &flags)) return NULL;
    return PyLong_FromLong(open_need(flags));
}

static PyMethodDef methods[] = {
    {"new", py_new, METH_VARARGS,
     "new({nr: (kind, flags_arg)}, place=True, keep=True, guard_ns=GUARD_NS) -> state"},
    {"resume", py_resume, METH_VARARGS, "resume(state, pid, PTRACE_CONT|PTRACE_SYSCALL, sig) -> whether it resumed"},
    {"placement", py_placement, METH_VARARGS,
     "placement(state) -> (this thread's CPU or -1, moves, held resumes, masks given back late, narrowed now, "
     "busy-CPU back-offs)"},
    {"wait", py_wait, METH_VARARGS, "wait(state) -> (pid, status, nr, args, hide, may_be_dir) | None"},
    {"task", py_task, METH_VARARGS, "task(state, tid, tgid)"},
    {"forget", py_forget, METH_VARARGS, "forget(state, tid)"},
    {"hide", py_hide, METH_VARARGS, "hide(state, tgid, fd)"},
    {"unhide", py_unhide, METH_VARARGS, "unhide(state, tgid, fd) -> whether it was hidden"},
    {"forget_process", py_forget_process, METH_VARARGS, "forget_process(state, tgid)"},
    {"fds_track", py_fds_track, METH_VARARGS, "fds_track(state, tgid): an empty set of fds the engine may know"},
    {"fds_learn", py_fds_learn, METH_VARARGS, "fds_learn(state, tgid, fd, learn): add (learn) or remove fd"},
    {"fds_known", py_fds_known, METH_VARARGS, "fds_known(state, tgid, fd) -> bool | None (None: no set)"},
    {"fds_fork", py_fds_fork, METH_VARARGS, "fds_fork(state, parent, child, share): copy or share the set"},
    {"fds_unshare", py_fds_unshare, METH_VARARGS, "fds_unshare(state, tgid): a shared set becomes its own"},
    {"closing", py_closing, METH_VARARGS, "closing(state, tgid) -> [(tid, args)] of the closes of tgid's fd table "
     "entered here whose exit stops were not handed over yet"},
    {"closed_early", py_closed_early, METH_VARARGS, "closed_early(state, tid): its pending close was recorded"},
    {"fds_same", py_fds_same, METH_VARARGS, "fds_same(state, a, b) -> whether the two processes share one set"},
    {"set_skip", py_set_skip, METH_VARARGS, "set_skip(state, skip): closes are state-only (kept-back opens skip "
     "their exit stop)"},
    {"set_learn", py_set_learn, METH_VARARGS, "set_learn(state, learn): the seccomp stop of a close of an fd not in "
     "its process's set goes to Python (its fd is learned from /proc)"},
    {"decide", py_decide, METH_VARARGS, "decide(state, path, need, epoch, drop): the filter's decision on this open"},
    {"epoch", py_epoch, METH_VARARGS, "epoch(state) -> the decision cache's current epoch"},
    {"bump_epoch", py_bump_epoch, METH_VARARGS, "bump_epoch(state): the open filter was replaced"},
    {"open_need", py_open_need, METH_VARARGS, "open_need(flags) -> the kinds an open/openat needs (for tests)"},
    {"counters", py_counters, METH_VARARGS, "counters(state) -> (stops, answered here, kept back here)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_stoploop", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__stoploop(void) { return PyModule_Create(&module); }
