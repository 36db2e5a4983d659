/* The fds the engine may know, per process: a conservative mirror of the Enricher's fd tables for the C stop
 * loop (stoploop.c, which includes this once, after its tables).
 *
 * Why: an open the open filter keeps back makes no record, but the fd number it returns exists only at its exit
 * stop, so until session 7 that exit stop was taken just to mark the fd hidden, for its close to be recognised
 * and dropped (3 stops per open/read/close instead of 2). With this mirror a kept-back open is continued at its
 * seccomp stop (PTRACE_CONT) and a close is dropped here when its fd is not in the mirror: the engine cannot
 * know that fd, so the close record would change nothing (closes must be state-only: with a rule on close the
 * loop keeps the exit stops and the hidden-fd sets, st->skip 0).
 *
 * The mirror must hold every fd the engine may know (a superset is safe: an extra close handed to Python costs
 * time only; a missing one would leave a stale fd in the engine). The Python tracer fills it from every record
 * it hands the engine that can add an fd (the open family, dup family, fcntl, socket/accept, pipe/socketpair,
 * memfd_create, userfaultfd, bpf, io_uring_setup: their result; socket syscalls: their fd argument) and from the
 * /proc seeding of the launched or attached processes; a successful close removes. Nothing else removes: exec's
 * close-on-exec, close_range and other untraced closes leave entries behind (superset). A fork copies the
 * parent's set; CLONE_FILES shares it (refs), and an exec unshares it (the engine's exec makes a new table too).
 * A process without a set (none was made for it) is "everything known": the exit stops and hidden-fd sets serve
 * it as before. Sets grow by 64-fd words, so every fd number is tracked exactly.
 */

typedef struct fdset {
    int refs;
    uint32_t words;
    uint64_t *bits;
} fdset_t;

#define FDS_MAX_WORDS (1u << 15) /* fds up to 2^21: above, treated as known (the process set is not grown) */

static fdset_t *fdset_new(void) {
    fdset_t *s = calloc(1, sizeof *s);
    if (s) s->refs = 1;
    return s;
}

static void fdset_unref(fdset_t *s) {
    if (s && --s->refs == 0) {
        free(s->bits);
        free(s);
    }
}

static fdset_t *fdset_copy(const fdset_t *from) {
    fdset_t *s = fdset_new();
    if (!s || !from->words) return s;
    s->bits = malloc(from->words * sizeof *s->bits);
    if (!s->bits) {
        free(s);
        return NULL;
    }
    memcpy(s->bits, from->bits, from->words * sizeof *s->bits);
    s->words = from->words;
    return s;
}

/* 1 when fd may be known (beyond what the set can hold counts as known). */
static int fdset_has(const fdset_t *s, long fd) {
    if (fd < 0) return 0;
    uint64_t w = (uint64_t)fd / 64;
    if (w >= FDS_MAX_WORDS) return 1;
    return w < s->words && (s->bits[w] >> (fd % 64) & 1);
}

static int fdset_add(fdset_t *s, long fd) {
    if (fd < 0) return 0;
    uint64_t w = (uint64_t)fd / 64;
    if (w >= FDS_MAX_WORDS) return 0;
    if (w >= s->words) {
        uint32_t words = s->words ? s->words : 1;
        while (words <= w) words *= 2;
        uint64_t *bits = realloc(s->bits, words * sizeof *bits);
        if (!bits) return -1;
        memset(bits + s->words, 0, (words - s->words) * sizeof *bits);
        s->bits = bits;
        s->words = words;
    }
    s->bits[w] |= 1ULL << (fd % 64);
    return 0;
}

static void fdset_del(fdset_t *s, long fd) {
    uint64_t w = (uint64_t)fd / 64;
    if (fd >= 0 && w < s->words) s->bits[w] &= ~(1ULL << (fd % 64));
}

/* The process's set, or NULL: everything known. */
static fdset_t *proc_fds(state_t *st, int tgid) {
    slot_t *s = table_find(&st->procs, (uint64_t)(uint32_t)tgid);
    return s ? s->fds : NULL;
}

/* Gives tgid the set `set` (taking the reference), dropping any it had; set NULL: everything known. */
static int proc_set(state_t *st, int tgid, fdset_t *set) {
    slot_t *s = table_find(&st->procs, (uint64_t)(uint32_t)tgid);
    if (s) {
        fdset_unref(s->fds);
        s->fds = NULL;
    }
    if (!set) {
        if (s) table_del(&st->procs, (uint64_t)(uint32_t)tgid);
        return 0;
    }
    if (!s && !(s = table_put(&st->procs, (uint64_t)(uint32_t)tgid))) {
        fdset_unref(set);
        return -1;
    }
    s->fds = set;
    return 0;
}

/* Whether the close of fd by a process needs no record: closes are state-only (st->skip), the process has a
 * set and fd is not in it. */
static int close_unknown(state_t *st, int tgid, long fd) {
    if (!__atomic_load_n(&st->skip, __ATOMIC_ACQUIRE)) return 0;
    fdset_t *s = proc_fds(st, tgid);
    return s && !fdset_has(s, fd);
}

/* Whether the seccomp stop of this close goes to Python for its fd to be learned from /proc before it runs:
 * closes are events again after a reload turned a close rule on (st->learn), and its fd is not in the set, so
 * it may be one a kept-back open made with no exit stop, which the engine never saw (fdbook.py _learn_fd). */
static int close_learns(state_t *st, int tgid, long fd) {
    if (!__atomic_load_n(&st->learn, __ATOMIC_ACQUIRE) || __atomic_load_n(&st->skip, __ATOMIC_ACQUIRE)) return 0;
    fdset_t *s = proc_fds(st, tgid);
    return s && !fdset_has(s, fd);
}

/* Whether a kept-back open of this process may skip its exit stop (closes state-only, the process has a set). */
static int open_skips_exit(state_t *st, int tgid) {
    return __atomic_load_n(&st->skip, __ATOMIC_ACQUIRE) && proc_fds(st, tgid) != NULL;
}

/* Closes in flight: a close whose seccomp stop was answered here (its fd in the engine's view) and whose exit
 * stop has not been handed to Python. Why: records follow the order the tracer reaps stops, and waitpid(-1)
 * reports a stopped tracee by its place in the tracer's list of tracees (the newest first), not by when it
 * stopped. So when thread A closes fd N and thread B of the same fd table gets N back at once (an open), B's
 * exit stop can be reaped, and its record built, before A's: the engine then adds N and removes it, and loses
 * B's fd (or B's kept-back open of N makes no record, and B's fcntl of N or its fork is reaped first: a
 * stale name). The Python tracer asks this table for the closes in flight of a record's fd table and records
 * first those already over (their thread waits at its exit stop) and those of an fd number the record gives
 * anew (a close cannot free N before A is resumed from its seccomp stop, so N's reuse proves it came first):
 * fdbook.py _closes_first. */
static void closing_put(state_t *st, pid_t tid, const slot_t *task) {
    slot_t *c = table_put(&st->closing, (uint64_t)tid);
    if (!c) return;  /* no memory: the close is recorded at its exit stop, as before */
    c->tgid = task->tgid;
    memcpy(c->args, task->args, sizeof c->args);
}

static void procs_release(state_t *st) {
    for (size_t i = 0; st->procs.slots && i < st->procs.cap; i++)
        if (st->procs.slots[i].used) fdset_unref(st->procs.slots[i].fds);
    free(st->procs.slots);
}
