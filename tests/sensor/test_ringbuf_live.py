"""sensor.ringbuf against a real BPF ring buffer in the real kernel.

A test program of its own (not the probe), so the test decides each record: this process calls getppid (which
ignores its arguments) with (sequence number, size, mode) in the argument registers, and the program on
raw_syscalls:sys_enter turns that into one record of exactly that size (bpf_ringbuf_output of a pattern the
test wrote into a map), a reserved-then-discarded record, or a record it reserves and holds uncommitted while it
spins (BUSY). Its own counter says how many outputs failed for lack of room, as the probe counts drops.
"""

from __future__ import annotations

import ctypes
import os
import threading
import time
from collections.abc import Iterator

import pytest
from falconet.sensor.ringbuf import PAGE, Batch, RingBuffer, RingBufferError

from resources import compile_bpf, missing

pytestmark = pytest.mark.bpf

SYS_GETPPID = 110
OUTPUT, DISCARD, SUBMIT, HOLD = 0, 1, 2, 3
MAX = 8192
RESERVED = 64  # size of the records the reserve modes make

PROGRAM = r"""
struct blob { u8 b[MAX]; };
BPF_RINGBUF_OUTPUT(rb, PAGES);
BPF_ARRAY(pattern, struct blob, 1);
BPF_ARRAY(fails, u64, 1);
BPF_ARRAY(scratch, struct blob, 1);

TRACEPOINT_PROBE(raw_syscalls, sys_enter) {
    if (args->id != 110 || (bpf_get_current_pid_tgid() >> 32) != TARGET)
        return 0;
    u32 seq = args->args[0], size = args->args[1], mode = args->args[2];
    int zero = 0;
    if (mode == 0) {
        struct blob *p = pattern.lookup(&zero);
        if (!p || size < 8 || size > MAX)
            return 0;
        *(u32 *)p->b = seq;
        *(u32 *)(p->b + 4) = size;
        if (rb.ringbuf_output(p, size, 0) != 0) {
            u64 *f = fails.lookup(&zero);
            if (f) __sync_fetch_and_add(f, 1);
        }
        return 0;
    }
    u32 *r = rb.ringbuf_reserve(RESERVED);
    if (!r) {
        u64 *f = fails.lookup(&zero);
        if (f) __sync_fetch_and_add(f, 1);
        return 0;
    }
    r[0] = seq;
    r[1] = RESERVED;
    if (mode == 1) {
        rb.ringbuf_discard(r, 0);
        return 0;
    }
    if (mode == 3) {  // hold the reservation uncommitted (BUSY) for tens of ms: 40,000 copies of 8 KiB
        struct blob *p = pattern.lookup(&zero), *s = scratch.lookup(&zero);
        if (p && s)
            for (u32 i = 0; i < 40000; i++)
                bpf_probe_read_kernel(s->b, MAX, p->b);
    }
    rb.ringbuf_submit(r, 0);
    return 0;
}
"""


class Program:
    def __init__(self, pages: int) -> None:
        cflags = [f"-DPAGES={pages}", f"-DMAX={MAX}", f"-DTARGET={os.getpid()}", f"-DRESERVED={RESERVED}"]
        self.bpf = compile_bpf(PROGRAM, cflags)
        table = self.bpf[b"pattern"]
        leaf = table.Leaf()
        for i in range(MAX):
            leaf.b[i] = i & 0xFF
        table[ctypes.c_int(0)] = leaf
        self.ring = RingBuffer(self.bpf[b"rb"].map_fd, pages * PAGE)
        self._libc = ctypes.CDLL(None, use_errno=True)

    def emit(self, seq: int, size: int, mode: int = OUTPUT) -> None:
        self._libc.syscall(SYS_GETPPID, ctypes.c_long(seq), ctypes.c_long(size), ctypes.c_long(mode))

    def fails(self) -> int:
        return int(self.bpf[b"fails"][ctypes.c_int(0)].value)

    def close(self) -> None:
        self.ring.close()
        self.bpf.cleanup()


@pytest.fixture
def small() -> Iterator[Program]:
    prog = Program(pages=4)  # 16 KiB: records wrap around its end every few dozen
    try:
        yield prog
    finally:
        prog.close()


def _check(batch: Batch) -> list[tuple[int, int]]:
    """(seq, size) of each record, after checking its bytes are exactly what the program output."""
    out = []
    for off, n in zip(batch.offsets, batch.lengths, strict=True):
        rec = batch.data[off : off + n]
        seq, size = int.from_bytes(rec[:4], "little"), int.from_bytes(rec[4:8], "little")
        assert size == n, f"record {seq}: length {n}, the program output {size}"
        if size != RESERVED or rec[8:] == bytes(i & 0xFF for i in range(8, size)):
            assert rec[8:] == bytes(i & 0xFF for i in range(8, size)), f"record {seq} of {size} bytes is damaged"
        out.append((seq, size))
    return out


def test_records_of_every_size_across_many_wrap_arounds(small: Program) -> None:
    sizes = list(range(8, 600)) + [1021, 1024, 2047, 4095, 4096, 4097, 8000, MAX]
    got: list[tuple[int, int]] = []
    sent: list[tuple[int, int]] = []
    used = 0
    for seq, size in enumerate(sizes):
        room = (size + 8 + 7) & ~7
        if used + room >= small.ring.size:  # consume before the producer runs out of room (it never fills it whole)
            got += _check(small.ring.read(1 << 20))
            used = 0
        small.emit(seq, size)
        sent.append((seq, size))
        used += room
    got += _check(small.ring.read(1 << 20))
    assert small.fails() == 0
    assert got == sent
    assert small.ring.available() == 0
    assert sum(sizes) > 10 * small.ring.size  # the positions went round the ring many times


def test_a_record_straddling_the_end_of_the_ring_reads_whole(small: Program) -> None:
    # 3000-byte records in a 16 KiB ring: the sixth starts at 15,040 and ends past 16,384.
    for round_ in range(4):
        for i in range(5):
            small.emit(round_ * 10 + i, 3000)
        batch = small.ring.read(100)
        assert _check(batch) == [(round_ * 10 + i, 3000) for i in range(5)]
    assert small.fails() == 0


def test_a_batch_limit_leaves_the_rest_in_the_ring(small: Program) -> None:
    for seq in range(10):
        small.emit(seq, 100)
    first = small.ring.read(4)
    assert [s for s, _ in _check(first)] == [0, 1, 2, 3]
    assert small.ring.available() == 6 * 112  # 100 bytes + 8 header, padded to 8
    assert [s for s, _ in _check(small.ring.read(100))] == [4, 5, 6, 7, 8, 9]


def test_discarded_records_are_skipped_and_their_space_returned(small: Program) -> None:
    modes = [OUTPUT, DISCARD, DISCARD, SUBMIT, OUTPUT, DISCARD, SUBMIT, DISCARD]
    for seq, mode in enumerate(modes):
        small.emit(seq, 50, mode)
    batch = small.ring.read(100)
    assert [s for s, _ in _check(batch)] == [0, 3, 4, 6]
    assert batch.consumed == 2 * 64 + 6 * (RESERVED + 8)  # 50 bytes + header padded to 64; discarded space too
    assert small.ring.available() == 0
    # a ring made only of discarded records reads as nothing, and still frees the space
    for seq in range(200):
        small.emit(seq, 0, DISCARD)
    empty = small.ring.read(100)
    assert len(empty) == 0 and empty.consumed == 200 * (RESERVED + 8) and small.ring.available() == 0


def test_a_producer_faster_than_the_consumer_loses_only_what_it_counts(small: Program) -> None:
    sent = 200
    for seq in range(sent):
        small.emit(seq, 1000)  # 16 of these fill the ring; nobody reads meanwhile
    drops = small.fails()
    got = _check(small.ring.read(1 << 20))
    assert drops > 0 and len(got) + drops == sent
    assert [s for s, _ in got] == list(range(len(got)))  # the first ones, whole, in order
    small.emit(sent, 1000)  # room again once the consumer moved on
    assert _check(small.ring.read(10)) == [(sent, 1000)] and small.fails() == drops


def test_wait_wakes_on_a_commit_and_times_out_on_an_empty_ring(small: Program) -> None:
    t0 = time.monotonic()
    assert small.ring.wait(50) is False
    assert time.monotonic() - t0 >= 0.04
    timer = threading.Timer(0.05, small.emit, (1, 64))
    timer.start()
    try:
        assert small.ring.wait(5000) is True
    finally:
        timer.join()
    assert _check(small.ring.read(10)) == [(1, 64)]


def test_a_record_still_being_written_stops_the_batch_until_it_is_committed(small: Program) -> None:
    """BUSY: another thread's program holds a reserved record uncommitted (spinning); a record committed after it
    must wait behind it, and nothing is consumed past it. The order is checked every attempt; a loaded machine
    may deschedule this thread for the whole hold, so the BUSY state must be seen in one of a few attempts."""
    cpus = os.sched_getaffinity(0)
    if len(cpus) < 2:
        missing("the BUSY test needs two CPUs (the holding program spins on one)")
    first, second = sorted(cpus)[:2]

    def hold(seq: int) -> None:
        os.sched_setaffinity(0, {first})  # this thread only: the spin must not stall the consumer's CPU
        small.emit(seq, 0, HOLD)

    os.sched_setaffinity(0, {second})
    seen_busy = 0
    try:
        for attempt in range(5):
            seq = 10 * attempt
            holder = threading.Thread(target=hold, args=(seq,))
            holder.start()
            try:
                deadline = time.monotonic() + 5
                while small.ring.available() == 0:  # the reservation moved the producer position
                    assert time.monotonic() < deadline, "the holding program never reserved"
                small.emit(seq + 1, 64)
                got: list[tuple[int, int]] = []
                while holder.is_alive() or small.ring.available():
                    batch = small.ring.read(10)
                    if not batch.consumed and small.ring.available():
                        seen_busy += 1  # records waiting, none taken: the first one is still BUSY
                    got += _check(batch)
                    assert time.monotonic() < deadline + 5
                assert got == [(seq, RESERVED), (seq + 1, 64)]
            finally:
                holder.join()
            if seen_busy:
                break
    finally:
        os.sched_setaffinity(0, cpus)
    assert seen_busy, "in 5 attempts the reservation was always committed before the consumer looked"


def test_a_size_that_is_not_a_ring_buffer_is_refused() -> None:
    with pytest.raises(RingBufferError):
        RingBuffer(0, 3 * PAGE)
