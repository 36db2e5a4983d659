"""Who the exec loop waited behind: run-queue waits of bench/daemon_loops.c's processes, charged to the task that
was running on the CPU the waiting task got (bench.daemon_overhead --rqwait).

Why: /proc/PID/schedstat says how long the loop and its children waited in the run queue, not for whom. On a
2-core machine the answer decides the fix: behind the daemon's own threads (wake-up placement, preemption) or
behind other tenants (a loaded machine). Sched tracepoints (not kprobes): a loop task's wait starts at its
wake-up (sched_wakeup, sched_wakeup_new) or when it is preempted (sched_switch away while runnable) and ends
when sched_switch runs it; the wait is charged to the task switched out at that moment (`prev`), which is the
one that held the CPU last. Tasks are recognised by comm: the loop binary's and /bin/true's. The programs run
on every context switch of the machine, for every row alike, while the bench runs with --rqwait.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

PROGRAM = r"""
struct key_t { u32 pid; char comm[16]; };
struct val_t { u64 ns; u64 n; };
BPF_HASH(since, u32, u64, 4096);
BPF_HASH(waits, struct key_t, struct val_t, 4096);

static __always_inline int ours(const char *c) {
    return (c[0] == 'd' && c[1] == 'a' && c[2] == 'e' && c[3] == 'm' && c[4] == 'o' && c[5] == 'n' && c[6] == '_'
            && c[7] == 'l') || (c[0] == 't' && c[1] == 'r' && c[2] == 'u' && c[3] == 'e' && c[4] == 0);
}
static __always_inline void woke(u32 pid, const char *comm) {
    char c[16];
    bpf_probe_read_kernel(c, sizeof c, comm);
    if (!ours(c)) return;
    u64 t = bpf_ktime_get_ns();
    since.update(&pid, &t);
}
TRACEPOINT_PROBE(sched, sched_wakeup) { woke(args->pid, args->comm); return 0; }
TRACEPOINT_PROBE(sched, sched_wakeup_new) { woke(args->pid, args->comm); return 0; }
TRACEPOINT_PROBE(sched, sched_switch) {
    if (args->prev_state == 0) woke(args->prev_pid, args->prev_comm);  /* preempted: waits from now */
    u32 pid = args->next_pid;
    u64 *s = since.lookup(&pid);
    if (!s) return 0;
    struct key_t key = {};
    key.pid = args->prev_pid;
    bpf_probe_read_kernel(key.comm, sizeof key.comm, args->prev_comm);
    struct val_t zero = {};
    struct val_t *v = waits.lookup_or_try_init(&key, &zero);
    if (v) {
        __sync_fetch_and_add(&v->ns, bpf_ktime_get_ns() - *s);
        __sync_fetch_and_add(&v->n, 1);
    }
    since.delete(&pid);
    return 0;
}
"""


class RqBlame:
    """Attached for its lifetime; `reset()` before a loop, `read()` after it: {(pid, comm): (ns, waits)}."""

    def __init__(self) -> None:
        from bcc import BPF

        self._bpf: Any = BPF(text=PROGRAM)

    def reset(self) -> None:
        self._bpf[b"waits"].clear()
        self._bpf[b"since"].clear()

    def read(self) -> dict[tuple[int, str], tuple[int, int]]:
        return {(int(k.pid), bytes(k.comm).rstrip(b"\0").decode(errors="replace")): (int(v.ns), int(v.n))
                for k, v in self._bpf[b"waits"].items()}

    def close(self) -> None:
        self._bpf.cleanup()

    def __enter__(self) -> RqBlame:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
