"""bench.userspace_profile's file format and its selection of the workload's records (no timing: the bench runs
by hand; see bench/RESULTS.md)."""

from __future__ import annotations

from pathlib import Path

from bench import userspace_profile as up
from falconet.sensor import record as r
from falconet.sensor import syscalls as sc


def _rec(kind: int, tgid: int, args: tuple[int, ...] = ()) -> bytes:
    return r.encode(r.Record(kind=kind, ts=1, tgid=tgid, tid=tgid, ppid=1, loginuid=-1, uid=0, gid=0, euid=0, egid=0,
                             cap_inheritable=0, cap_permitted=0, cap_effective=0, tty=0, sid=0, pgid=0, cpu=0,
                             vtid=tgid, vpid=tgid, vpgid=0, pidns_level=0, pidns_init_ts=0,
                             nr=sc.BY_NAME["openat"].nr, res=0, args=args + (0,) * (6 - len(args)), comm="x",
                             segments=(b"",) * 6))


def test_records_survive_the_file(tmp_path: Path) -> None:
    records = [_rec(r.REC_SYSCALL, 5), _rec(r.REC_EXIT, 6), b"\x00" * 3]
    up.save(records, tmp_path / "f.rec")
    assert up.load(tmp_path / "f.rec") == records


def test_only_the_workloads_process_tree_is_kept() -> None:
    """Other processes' records (the sensor sees the whole machine) are dropped; children forked by the tree,
    and their children, are kept from their fork on."""
    records = [_rec(r.REC_SYSCALL, 99), _rec(r.REC_SYSCALL, 10), _rec(r.REC_FORK, 10, (11, 17)),
               _rec(r.REC_SYSCALL, 11), _rec(r.REC_FORK, 11, (12, 17)), _rec(r.REC_SYSCALL, 12),
               _rec(r.REC_SYSCALL, 98), _rec(r.REC_EXIT, 12)]
    kept = up._tree_only(records, {10})
    assert [r.decode(k).tgid for k in kept] == [10, 10, 11, 11, 12, 12]


def test_kinds_are_named_for_the_table() -> None:
    assert up._kind_of(_rec(r.REC_SYSCALL, 1)) == "openat"
    assert up._kind_of(_rec(r.REC_FORK, 1)) == "(fork)"
