// The record cuts: records of state syscalls that leave user space's tables as they were and that no loaded
// rule can match, kept in the kernel. Part of Falconet's BPF program: included by probe.c (sensor.py inlines
// it; see probe.c's header).
//
// The event gates (probe_eventgate.h) never touch a syscall with a state role (open, close, dup, fcntl,
// clone, ...), since user space's fd table and process table depend on its records. But many of those records
// change nothing there: a failed call (a build's compiler probes its include path with ~250,000 opens that
// fail with ENOENT), an fcntl that only reads or sets status flags (F_GETFL, F_SETFL, F_GETFD: only F_DUPFD,
// F_DUPFD_CLOEXEC and F_SETFD change the fd table), a fork's record in the parent (the sched_process_fork
// record carries the fork, and the parent's identity as of that moment). User space (sensor/recut.py) decides
// per syscall, from the rules, which of those may stay here and writes `recuts`; it writes nothing for exec
// (its records are joined) or for a syscall whose cut no rule analysis proves. sys_exit asks right after the
// event gate, before anything else is read, so a cut record costs one array lookup (and a register compare).

#define RECUT_FAIL 1   // a failed call (result < 0) is cut
#define RECUT_QUIET 2  // any call is cut unless argument `argidx` (its low 32 bits) is one of vals[0..nvals)
#define RECUT_VALS 4

struct recut {
    u8 how;     // RECUT_* bits; 0: nothing is cut
    u8 argidx;  // 0-5
    u8 nvals;
    u8 pad;
    u32 vals[RECUT_VALS];
};
BPF_ARRAY(recuts, struct recut, NR_SYSCALLS_MAX);
BPF_PERCPU_ARRAY(recut_count, u64, 1);  // records cut (user space reports it in stats().cut)

// 1 when this record of syscall `id` with result `ret` is cut (counted); `regs` as sys_exit read them.
static __always_inline int recut_drops(s64 id, s64 ret, u64 *regs) {
    int key = id;
    struct recut *c = recuts.lookup(&key);
    if (!c || !c->how)
        return 0;
    if (!((c->how & RECUT_FAIL) && ret < 0)) {
        if (!(c->how & RECUT_QUIET))
            return 0;
        u32 v = (u32)gate_reg(regs, c->argidx, 0);
#pragma unroll
        for (int i = 0; i < RECUT_VALS; i++) {
            if (i < c->nvals && c->vals[i] == v)
                return 0;
        }
    }
    int zero = 0;
    u64 *n = recut_count.lookup(&zero);
    if (n)
        (*n)++;
    return 1;
}
