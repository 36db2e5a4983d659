"""The consumer's half of the ring buffer's wake-up policy (the kernel's half: sensor/probe_wake.h).

Why: every wake-up of the reader costs an IPI in the traced syscall and a run of the engine thread, and on a
small machine the workload waits in the run queue behind those runs (bench/RESULTS.md, "execwake (session 7)").
So while records keep coming the reader is not woken per record: it reads on its own every `interval_ms` at
most (POLLING), and the kernel commits without a wake-up unless a record takes the unread data past the fill
threshold (a burst is read at once). Once a whole bounded wait finds nothing the reader goes back to being
woken (WOKEN): an idle daemon does not spin, and a lone record after a quiet spell is read at once.
An interval of 0 turns the policy off: the reader stays WOKEN, and the kernel wakes it by the ring buffer's own
rule (whenever it had read everything): for comparing, or where no record may wait an interval.

The hand-over from POLLING to WOKEN has a race: a record whose program read the old mode (just before the
reader's store) is committed without a wake-up. So the reader, after telling the kernel, keeps ONE more wait
bounded by the interval (SETTLING): anything committed under the old mode is in the buffer by its end (a BPF
program commits within microseconds of reading the mode) and read then. Every record is thus read within about
one interval of its commit, or at once after a quiet spell or a burst; nothing is skipped or reordered (the
reader reads the buffer in order whatever woke it). The one way past that bound: a program preempted between
reading the mode and reserving its record for longer than the settling wait; its record is then read at the
end of the caller's own timeout (the daemon's 100 ms), or sooner with any later record that wakes the reader.

The mode lives in an mmapable BPF array (`wake_ctl`), written with a plain aligned 8-byte store: a store is
release on x86-64 (sensor/ringbuf.py says why that is the only architecture), and it is written only when the
mode changes, not per poll.
"""

from __future__ import annotations

import mmap

from falconet.sensor.ringbuf import Batch, RingBuffer

WOKEN, POLLING, SETTLING = 0, 1, 2

DEFAULT_INTERVAL_MS = 1
"""How long a record may wait to be read while records keep coming (sensor.poll_interval_ms). 1 ms, as the old
wake gap: the engine then runs once per interval instead of up to twice (kernel wake-up and its own timeout,
unsynchronised), and no wake-up IPI is paid. Longer intervals cut the runs further but made each run, and so
each wait of the workload behind it, longer: an exec loop waited more in total behind the daemon at 2 ms than
at 1 ms in each of three loaded runs (bench/RESULTS.md, execwake)."""
FILL_FRACTION = 32
"""The fill threshold is 1/32 of the ring buffer (256 KiB of the default 8 MiB): far from a drop, and a burst
that large is worth a wake-up at once."""


def fill_threshold(ringbuf_bytes: int) -> int:
    """The unread bytes past which a record forces a wake-up (probe_wake.h's WAKE_FILL_BYTES)."""
    return max(ringbuf_bytes // FILL_FRACTION, 64)


class WakeControl:
    """The reader's mode and the wait it may make. Single consumer: not thread-safe (as RingBuffer)."""

    def __init__(self, ctl_fd: int, interval_ms: int) -> None:
        if interval_ms < 0:
            raise ValueError(f"the poll interval is at least 0 ms (0: off), not {interval_ms}")
        self.interval_ms = interval_ms
        self._map = mmap.mmap(ctl_fd, mmap.PAGESIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self._word = memoryview(self._map).cast("Q")
        self.state = WOKEN
        self._word[0] = 0
        self.switches = 0  # how many times the kernel's mode changed (a cost-free figure for benches and tests)

    def timeout(self, requested_ms: int) -> int:
        """The wait to make for a caller that asked for `requested_ms` (negative: forever)."""
        if self.state == WOKEN:
            return requested_ms
        if requested_ms < 0 or requested_ms > self.interval_ms:
            return self.interval_ms
        return requested_ms

    def after_read(self, got: bool, waited_ms: int) -> None:
        """After each read: `got` whether it took anything, `waited_ms` the bound of the wait before it."""
        if self.interval_ms == 0:  # the policy is off: the kernel wakes the reader for every record
            return
        if got:
            if self.state != POLLING:
                self._set(POLLING)
        elif waited_ms >= self.interval_ms:  # a whole interval, nothing: the stream has gone quiet
            if self.state == POLLING:
                self._set(SETTLING)
            elif self.state == SETTLING:
                self.state = WOKEN  # the kernel already wakes us (see the module's docstring)

    def _set(self, state: int) -> None:
        kernel = 1 if state == POLLING else 0
        if kernel != self._word[0]:
            self._word[0] = kernel
            self.switches += 1
        self.state = state

    def take(self, rb: RingBuffer, timeout_ms: int, limit: int) -> Batch:
        """One wait (bounded as the mode says) and one read of up to `limit` records: Sensor.poll's step."""
        bound = self.timeout(timeout_ms)
        rb.wait(bound)
        batch = rb.read(limit)
        self.after_read(batch.consumed > 0, bound)
        return batch

    def close(self) -> None:
        if self._map.closed:
            return
        self._word.release()
        self._map.close()
