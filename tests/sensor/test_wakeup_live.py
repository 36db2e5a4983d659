"""The ring buffer's wake-up policy (sensor/probe_wake.h, the kernel's half; sensor/wakeup.py, the reader's) in
the real kernel.

A test program of its own, so only this test's records reach its ring: this process calls getppid with
(sequence number, size) in the argument registers and the program on raw_syscalls:sys_enter outputs one record
of that size through probe_wake.h, exactly as probe.c's emit() does. Whether the kernel woke the reader for a
record is observed with a fresh edge-triggered epoll on the map whose first readiness is consumed at once: only
a wake-up makes it ready again (the wake-up's irq_work runs before the triggering syscall returns), so `poll(0)`
then says whether the record woke anyone.
"""

from __future__ import annotations

import ctypes
import os
import select
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from falconet.sensor.ringbuf import PAGE, Batch, RingBuffer
from falconet.sensor.sensor import PROBE_C, SensorConfig, SensorError
from falconet.sensor.wakeup import POLLING, SETTLING, WOKEN, WakeControl, fill_threshold

from resources import compile_bpf

pytestmark = pytest.mark.bpf

SYS_GETPPID = 110
PAGES = 4  # 16 KiB
FILL = 4096  # the test's WAKE_FILL_BYTES
RECORD = 1000  # bytes per record (1,008 in the ring with its header)
MAX = 2048
EPOLL_WAITS = {232, 281, 441}  # epoll_wait, epoll_pwait, epoll_pwait2 (x86-64)
DEADLINE = 30.0  # seconds a wait-for-condition gives up after; far below the unbounded waits under test

PROGRAM = r"""
struct blob { u8 b[MAX]; };
BPF_RINGBUF_OUTPUT(events, PAGES);
BPF_ARRAY(pattern, struct blob, 1);
WAKE_H
TRACEPOINT_PROBE(raw_syscalls, sys_enter) {
    if (args->id != 110 || (bpf_get_current_pid_tgid() >> 32) != TARGET)
        return 0;
    u32 seq = args->args[0], size = args->args[1];
    int zero = 0;
    struct blob *p = pattern.lookup(&zero);
    if (!p || size < 8 || size > MAX)
        return 0;
    *(u32 *)p->b = seq;
    events.ringbuf_output(p, size, 0);
    return 0;
}
"""


class Program:
    def __init__(self, interval_ms: int) -> None:
        text = PROGRAM.replace("WAKE_H", PROBE_C.with_name("probe_wake.h").read_text())
        cflags = [f"-DPAGES={PAGES}", f"-DMAX={MAX}", f"-DTARGET={os.getpid()}", f"-DWAKE_FILL_BYTES={FILL}"]
        self.bpf = compile_bpf(text, cflags)
        self.ring = RingBuffer(self.bpf[b"events"].map_fd, PAGES * PAGE)
        self.wake = WakeControl(self.bpf[b"wake_ctl"].map_fd, interval_ms)
        self._libc = ctypes.CDLL(None, use_errno=True)
        self.sent = 0

    def emit(self, size: int = RECORD) -> int:
        seq = self.sent
        self.sent += 1
        self._libc.syscall(SYS_GETPPID, ctypes.c_long(seq), ctypes.c_long(size))
        return seq

    def observer(self) -> select.epoll:
        """An edge-triggered epoll on the map whose first readiness (a non-empty buffer reads as ready when it
        is registered) is consumed at once: from then on it is ready only after a wake-up."""
        ep = select.epoll()
        ep.register(self.bpf[b"events"].map_fd, select.EPOLLIN | select.EPOLLET)
        ep.poll(0)
        return ep

    def kernel_mode(self) -> int:
        return int(self.bpf[b"wake_ctl"][ctypes.c_int(0)].value)

    def close(self) -> None:
        self.wake.close()
        self.ring.close()
        self.bpf.cleanup()


def seqs(batch: Batch) -> list[int]:
    return [int.from_bytes(batch.data[o : o + 4], "little") for o in batch.offsets]


def woke(ep: select.epoll) -> bool:
    try:
        return bool(ep.poll(0))
    finally:
        ep.close()


@pytest.fixture
def prog(request: pytest.FixtureRequest) -> Iterator[Program]:
    p = Program(interval_ms=getattr(request, "param", 500))
    try:
        yield p
    finally:
        p.close()


def make_polling(p: Program) -> list[int]:
    """A first record wakes the reader (nothing was read yet), which then polls on its own."""
    p.emit()
    got = seqs(p.wake.take(p.ring, 0, 1 << 20))
    assert p.wake.state == POLLING and p.kernel_mode() == 1
    return got


class Taker(threading.Thread):
    """One take() with an unbounded wait (10 minutes) in its own thread; `blocked()` says when it is inside
    epoll_wait, so a record emitted after it cannot have been seen before the wait began."""

    def __init__(self, p: Program) -> None:
        super().__init__(daemon=True)
        self.p = p
        self.tid = 0
        self.got: list[int] | None = None
        self._started = threading.Event()

    def run(self) -> None:
        self.tid = threading.get_native_id()
        self._started.set()
        self.got = seqs(self.p.wake.take(self.p.ring, 600_000, 1 << 20))

    def wait_blocked(self) -> None:
        assert self._started.wait(DEADLINE)
        path = Path(f"/proc/self/task/{self.tid}/syscall")
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            fields = path.read_text().split()
            if fields and fields[0].isdigit() and int(fields[0]) in EPOLL_WAITS:
                return
            time.sleep(0.001)  # polls a condition (the thread's current syscall), with the deadline above
        raise AssertionError("the reader never started its wait")


def test_the_kernel_wakes_a_reader_that_waits_unbounded_and_not_one_that_polls(prog: Program) -> None:
    assert prog.wake.state == WOKEN and prog.kernel_mode() == 0
    ep = prog.observer()
    first = prog.emit()
    assert woke(ep), "a record into an empty buffer must wake a reader that waits to be woken"
    assert seqs(prog.wake.take(prog.ring, 0, 100)) == [first]
    assert prog.wake.state == POLLING and prog.kernel_mode() == 1
    ep = prog.observer()
    second = prog.emit()
    assert not woke(ep), "a polling reader is not woken for a record below the fill threshold"
    assert seqs(prog.wake.take(prog.ring, 0, 100)) == [second]


def test_only_the_record_that_crosses_the_fill_threshold_forces_a_wake_up(prog: Program) -> None:
    make_polling(prog)
    woken = []
    for _ in range(8):  # 1,008 ring bytes each: the fifth takes the unread bytes from 4,032 past 4,096
        ep = prog.observer()
        prog.emit()
        woken.append(woke(ep))
    assert woken == [False, False, False, False, True, False, False, False]
    assert seqs(prog.wake.take(prog.ring, 0, 100)) == list(range(1, 9))


def test_a_lone_record_is_read_within_the_poll_interval_without_a_wake_up(prog: Program) -> None:
    before = make_polling(prog)
    taker = Taker(prog)
    taker.start()
    taker.wait_blocked()
    ep = prog.observer()
    lone = prog.emit()
    assert not woke(ep)
    taker.join(DEADLINE)  # the reader's own bound (500 ms) ends its 10-minute wait
    assert not taker.is_alive(), "a polling reader's wait must be bounded by the poll interval"
    assert before + (taker.got or []) == [0, lone]


@pytest.mark.parametrize("prog", [60_000], indirect=True)
def test_a_burst_past_the_threshold_is_read_without_waiting_for_the_interval(prog: Program) -> None:
    make_polling(prog)
    taker = Taker(prog)
    taker.start()
    taker.wait_blocked()
    burst = [prog.emit() for _ in range(6)]  # 6,048 ring bytes: past the 4,096 threshold
    taker.join(DEADLINE)  # half of the 60-second interval: only the forced wake-up can end the wait in time
    assert not taker.is_alive(), "a burst past the fill threshold must wake the polling reader"
    got = (taker.got or []) + seqs(prog.wake.take(prog.ring, 0, 100))
    assert got == burst  # every record, in order


@pytest.mark.parametrize("prog", [50], indirect=True)
def test_a_quiet_interval_hands_waking_back_to_the_kernel(prog: Program) -> None:
    make_polling(prog)
    assert prog.wake.take(prog.ring, 10_000, 100).consumed == 0  # a whole interval, nothing
    assert prog.wake.state == SETTLING and prog.kernel_mode() == 0
    assert prog.wake.timeout(10_000) == 50  # one more bounded wait: a record committed under the old mode
    assert prog.wake.take(prog.ring, 10_000, 100).consumed == 0
    assert prog.wake.state == WOKEN and prog.wake.timeout(10_000) == 10_000
    ep = prog.observer()
    seq = prog.emit()
    assert woke(ep), "after a quiet spell a lone record wakes the reader at once"
    assert seqs(prog.wake.take(prog.ring, 10_000, 100)) == [seq]
    assert prog.wake.state == POLLING


def test_a_short_wait_that_finds_nothing_keeps_polling(prog: Program) -> None:
    make_polling(prog)
    assert prog.wake.take(prog.ring, 0, 100).consumed == 0  # the caller's own 0 ms: not a quiet interval
    assert prog.wake.state == POLLING and prog.kernel_mode() == 1


def test_the_wake_up_settings_are_checked() -> None:
    assert fill_threshold(8 << 20) == 256 << 10
    for bad in (SensorConfig(poll_interval_ms=-1), SensorConfig(poll_interval_ms=60_001),
                SensorConfig(wake_fill_bytes=0), SensorConfig(ringbuf_bytes=4096, wake_fill_bytes=4097)):
        with pytest.raises(SensorError):
            bad.validate()
    SensorConfig(poll_interval_ms=1, wake_fill_bytes=4096, ringbuf_bytes=4096).validate()
    SensorConfig(poll_interval_ms=0).validate()  # 0: the policy is off


@pytest.mark.parametrize("prog", [0], indirect=True)
def test_an_interval_of_0_leaves_every_wake_up_to_the_kernel(prog: Program) -> None:
    """sensor.poll_interval_ms: 0 is the behaviour before the policy: the reader never polls on its own, so the
    kernel wakes it for a record it commits while the reader waits."""
    prog.emit()
    assert seqs(prog.wake.take(prog.ring, 0, 1 << 20)) == [0]
    assert prog.wake.state == WOKEN and prog.kernel_mode() == 0 and prog.wake.switches == 0
    ep = prog.observer()
    prog.emit()
    assert woke(ep)
