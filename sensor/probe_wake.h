// When a committed record wakes the consumer (Sensor.poll, sensor/wakeup.py): the ring buffer's wake-up policy.
//
// Why: a wake-up is an irq_work (a self-IPI, about 11 us in this VM: more than a sparse record itself), and each
// one makes the engine thread run. A fork+exec loop on 2 cores waited in the run queue behind those runs (its
// wall time 1.32x the no-op floor against 1.16x in CPU: bench/RESULTS.md, execwall and execwake). So while
// records keep coming the consumer is not woken per record at all: it reads on its own at most every
// sensor.poll_interval_ms, and tells the kernel so through `wake_ctl` (an mmapable array: user space writes it
// with a plain store, only when its mode changes). The kernel then commits with BPF_RB_NO_WAKEUP, except for
// the record that takes the unread data past WAKE_FILL_BYTES, which forces a wake-up: a burst is read at once,
// well before it could fill the buffer, and not after the interval. Once a whole interval finds nothing the
// consumer writes 0 and waits without a bound; records then use the ring buffer's adaptive rule (wake the
// consumer only if it has read everything), so a lone record after a quiet spell is read at once.
//
// Only the crossing record forces a wake-up: forcing it for every record above the threshold would cost an
// IPI per record exactly when the consumer is already behind. Two CPUs crossing at once can both miss the
// crossing (their fill reads race); the record is then read within the interval anyway.
#ifndef WAKE_FILL_BYTES
#define WAKE_FILL_BYTES 262144
#endif
BPF_F_TABLE("array", int, u64, wake_ctl, 1, BPF_F_MMAPABLE);  // [0]: 1 while the consumer polls on its own

static __always_inline u64 wake_flags(void *rb, u64 size) {
    int zero = 0;
    u64 *polling = wake_ctl.lookup(&zero);
    if (!polling || !*polling)
        return 0;
    u64 unread = bpf_ringbuf_query(rb, BPF_RB_AVAIL_DATA);
    if (unread < WAKE_FILL_BYTES && unread + size + 8 >= WAKE_FILL_BYTES)
        return BPF_RB_FORCE_WAKEUP;
    return BPF_RB_NO_WAKEUP;
}

// bcc 0.26 has no map method for bpf_ringbuf_query and does not turn `&events` into the map, but it rewrites
// `events.ringbuf_output(data, size, flags)` into a call of the helper with the map as its first argument,
// and compiles that text again: this macro (not re-expanded inside itself) gives the map to wake_flags. The
// `flags` written at the call site are replaced.
#define bpf_ringbuf_output(rb, data, size, flags) bpf_ringbuf_output(rb, data, size, wake_flags((void *)(rb), size))
