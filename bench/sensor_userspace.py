"""Sensor user-space throughput on one core: ring-buffer records -> enriched Events, no kernel involved.

The kernel side can produce far more records than Python can enrich; this measures the ceiling that sets
(past it, the kernel drops and counts). Rows, each over the same pre-encoded records (an openat + close per
"open", and a fork + execargs + execve + exit per "exec", from a process 4 levels deep):
- baseline: struct.unpack of the header alone (the least any decoder must do);
- decode: record.decode (header + payload segments);
- enrich, open/close stream: Enricher.feed, events delivered for openat and close;
- enrich, state only: the same stream with no event type wanted (state kept, no Event built);
- enrich, exec stream: process lifecycle and execve events.

Run: python -m bench.sensor_userspace [--records N]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

from falconet.sensor import record as r
from falconet.sensor import syscalls as sc
from falconet.sensor.sensor import Enricher
from falconet.sensor.state import AT_FDCWD, ProcessTable


def _rec(kind: int, tgid: int, nr: int = -1, res: int = 0, args: tuple[int, ...] = (), comm: str = "app",
         segs: dict[int, bytes] | None = None) -> bytes:
    segments = [b""] * 6
    for k, v in (segs or {}).items():
        segments[k] = v
    full = tuple(a & (2**64 - 1) for a in args) + (0,) * (6 - len(args))
    return r.encode(r.Record(kind, 1, tgid, tgid, 40, 1000, 1000, 1000, 1000, 1000, 0, 0, 0, 34816, 30, tgid, 0,
                             tgid, tgid, tgid, 0, 0, nr, res, full, comm, tuple(segments)))


# What the kernel sends with a successful exec: the exe's inode facts, then the cgroup paths (leaf first) of
# the unified hierarchy and of the v1 controller (a hybrid host's login session).
EXEC_FACTS = {
    r.SEG_BLOB: r.EXECINFO.pack(1234, 1_700_000_000, 1_700_000_000, 0xEF53, 0, 0, 0, 0o100755, 0, 0, 0, 1000, 1000,
                                r.EXE_KNOWN, 0),
    r.SEG_EXTRA: b"session-1.scope\0user-1000.slice\0user.slice\0",
    r.SEG_EXTRA2: b"session-1.scope\0user-1000.slice\0user.slice\0",
}


def _table() -> ProcessTable:
    t = ProcessTable()
    for pid, ppid, comm in ((1, 0, "systemd"), (20, 1, "sshd"), (30, 20, "bash"), (40, 30, "make"),
                            (50, 40, "app")):
        p = t.ensure(pid)
        p.ppid, p.comm, p.exe, p.exepath, p.cwd = ppid, comm, comm, f"/usr/bin/{comm}", "/home/u/src"
    return t


def open_stream(n: int) -> list[bytes]:
    openat, close = sc.BY_NAME["openat"].nr, sc.BY_NAME["close"].nr
    one = [_rec(r.REC_SYSCALL, 50, openat, 3, (AT_FDCWD, 0, 0, 0), segs={r.SEG_STR0: b"include/stdio.h\0"}),
           _rec(r.REC_SYSCALL, 50, close, 0, (3,))]
    return one * (n // 2)


def exec_stream(n: int) -> list[bytes]:
    out: list[bytes] = []
    for i in range(n // 4):
        child = 1000 + i
        out += [
            _rec(r.REC_FORK, 40, args=(child, 17), comm="make"),
            _rec(r.REC_EXECARGS, child, 59, comm="make", segs={
                r.SEG_STR0: b"/usr/bin/cc\0", r.SEG_EXTRA: b"cc\0-O2\0-c\0x.c\0", r.SEG_EXTRA2: b"PATH=/usr/bin\0"}),
            _rec(r.REC_SYSCALL, child, 59, 0, comm="cc", segs=EXEC_FACTS),
            _rec(r.REC_EXIT, child, args=(1,), comm="cc"),
        ]
    return out


def rate(fn: Callable[[bytes], object], data: list[bytes]) -> float:
    t0 = time.perf_counter()
    for d in data:
        fn(d)
    return len(data) / (time.perf_counter() - t0)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=200_000)
    args = ap.parse_args(argv)
    opens, execs = open_stream(args.records), exec_stream(args.records)
    rows = [
        ("baseline: header unpack", rate(lambda d: r.HDR.unpack_from(d, 0), opens)),
        ("decode", rate(r.decode, opens)),
        ("enrich, open/close stream", rate(Enricher(_table(), wanted={"openat", "close"}).feed, opens)),
        ("enrich, state only", rate(Enricher(_table(), wanted=set()).feed, opens)),
        ("enrich, exec stream", rate(Enricher(_table(), wanted={"execve"}).feed, execs)),
    ]
    base = rows[0][1]
    print(f"sensor user space, one core, {args.records} records per row")
    print(f"{'row':28} {'records/s':>12} {'vs baseline':>12}")
    for name, v in rows:
        print(f"{name:28} {v:12,.0f} {v / base:12.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
