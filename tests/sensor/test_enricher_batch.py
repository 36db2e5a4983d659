"""The batch path (ring buffer batch -> Enricher.feed_batch) against the events the one-record-at-a-time path
made of the same recorded records (replay_records.py): every field of every event, delivered or not."""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from falconet.model.event import Event, Process
from falconet.sensor import record as r
from falconet.sensor import syscalls as sc
from falconet.sensor.enricher import Enricher
from falconet.sensor.openfilter import OPEN_KEEP, open_need
from falconet.sensor.state import NameDb

from . import replay_records as rr


def _enricher(tmp: Path, wanted: set[str] | None = None) -> Enricher:
    (tmp / "passwd").write_text(rr.PASSWD)
    (tmp / "group").write_text(rr.GROUP)
    return Enricher(names=NameDb(tmp / "passwd", tmp / "group"), wanted=wanted, mono_to_epoch_ns=rr.OFFSET_NS)


def _batch(records: list[bytes]) -> tuple[bytes, list[int], list[int]]:
    """The records laid out as a ring buffer batch is: 8-byte headers, 8-byte aligned."""
    data = bytearray()
    offsets, lengths = [], []
    for rec in records:
        data += struct.pack("<II", len(rec), 0)
        offsets.append(len(data))
        lengths.append(len(rec))
        data += rec + b"\0" * (-len(rec) % 8)
    return bytes(data), offsets, lengths


def test_the_fixture_is_a_mixed_workload() -> None:
    types = {e["type"] for e in rr.load_events()}
    assert {"openat", "close", "execve", "connect", "accept4", "sendto", "pipe2", "dup2", "chdir",
            "memfd_create", "setuid"} <= types


def test_batch_path_makes_exactly_the_recorded_events(tmp_path: Path) -> None:
    events, errors = _enricher(tmp_path).feed_batch(*_batch(rr.load_records()))
    assert errors == 0
    got = [rr.event_json(e.to_dict()) for e in events]
    want = [rr.event_json(e) for e in rr.load_events()]
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g == w


def test_batch_path_knows_the_arguments_as_the_record_path_does(tmp_path: Path) -> None:
    """The fields the recording predates (rr.NEWER_PROC_FIELDS): the batch path against today's one-record path."""
    records = rr.load_records()
    events, errors = _enricher(tmp_path).feed_batch(*_batch(records))
    one = _enricher(tmp_path)
    want = [ev for ev in (one.feed(rec) for rec in records) if ev is not None]
    assert errors == 0 and len(events) == len(want)

    def chain(p: Process | None) -> list[tuple[object, ...]]:
        out = []
        while p is not None:
            out.append(tuple(getattr(p, name) for name in rr.NEWER_PROC_FIELDS))
            p = p.parent
        return out

    assert [chain(e.proc) for e in events] == [chain(e.proc) for e in want]
    assert any(not e.proc.args_known for e in want) and any(e.proc.args_known for e in want)


@pytest.mark.parametrize("wanted", [{"openat", "execve"}, {"connect", "sendto", "recvfrom"}, {"unlink"}])
def test_undelivered_records_keep_the_tables_as_before(tmp_path: Path, wanted: set[str]) -> None:
    """With only some types delivered, the others are state-only (their arguments are not built): the delivered
    events must still be the recorded ones, field for field (numbered among themselves)."""
    events, errors = _enricher(tmp_path, wanted).feed_batch(*_batch(rr.load_records()))
    assert errors == 0
    want = [e for e in rr.load_events() if e["type"] in wanted]
    assert want, "the fixture has events of these types"
    for n, e in enumerate(want, 1):
        e["num"] = n
    assert [rr.event_json(e.to_dict()) for e in events] == [rr.event_json(e) for e in want]


def test_batch_and_single_records_agree_and_a_malformed_record_costs_only_itself(tmp_path: Path) -> None:
    records = rr.load_records()[:200]
    (tmp_path / "a").mkdir()
    single = _enricher(tmp_path / "a")
    one = [ev for data in records if (ev := single.feed(data)) is not None]
    broken = records[:100] + [records[100][: r.HDR_SIZE - 1]] + records[100:]
    (tmp_path / "b").mkdir()
    events, errors = _enricher(tmp_path / "b").feed_batch(*_batch(broken))
    assert errors == 1
    assert [e.to_dict() for e in events] == [e.to_dict() for e in one]


def test_decode_at_an_offset_checks_the_records_own_length() -> None:
    rec = rr.load_records()[0]
    data = b"\0" * 8 + rec + b"\0" * 8
    assert r.decode(data, 8, len(rec)) == r.decode(rec)
    with pytest.raises(r.RecordError):
        r.decode(data, 8, r.HDR_SIZE - 1)
    cut = bytearray(rec)
    struct.pack_into("<H", cut, r.HDR_SIZE - 16, len(rec))  # len[0] claims more than the record holds
    with pytest.raises(r.RecordError):
        r.decode(bytes(cut) + b"\0" * 64, 0, len(rec))


def _syscall(name: str, res: int, args: tuple[int, ...], path: bytes = b"") -> bytes:
    segments = (path, b"", b"", b"", b"", b"")
    return r.encode(r.Record(kind=r.REC_SYSCALL, ts=1000, tgid=70, tid=70, ppid=1, loginuid=-1, uid=0, gid=0, euid=0,
                             egid=0, cap_inheritable=0, cap_permitted=0, cap_effective=0, tty=0, sid=70, pgid=70,
                             cpu=0, vtid=70, vpid=70, vpgid=70, pidns_level=0, pidns_init_ts=0,
                             nr=sc.BY_NAME[name].nr, res=res, args=args + (0,) * (6 - len(args)), comm="x",
                             segments=segments))


def test_an_event_keeps_its_fd_flags_when_a_later_record_of_the_batch_changes_them(tmp_path: Path) -> None:
    """fcntl(F_SETFD) used to change the table's Fd in place, and the open's event shares that object: an
    event made earlier in the same batch (or still queued) showed the later flags."""
    f_setfd, fd_cloexec = 2, 1
    events, _ = _enricher(tmp_path).feed_batch(*_batch([
        _syscall("openat", 3, (0xFFFFFF9C, 0, 0), b"/tmp/a\0"),
        _syscall("fcntl", 0, (3, f_setfd, fd_cloexec)),
        _syscall("fcntl", 0, (3, f_setfd, 0)),
        _syscall("close", 0, (3,)),
    ]))
    assert [(e.type, e.fd.flags if e.fd else None) for e in events] == [
        ("openat", 0), ("fcntl", 0o2000000), ("fcntl", 0), ("close", 0)]


@pytest.mark.parametrize("wanted", [None, {"openat"}, {"close"}, {"execve", "connect"}])
def test_the_header_fast_paths_keep_events_and_tables_as_the_record_path(
        tmp_path: Path, wanted: set[str] | None, monkeypatch: pytest.MonkeyPatch) -> None:
    """feed_batch handles an undelivered close and an open of a path seen before straight from the header (no
    Record) when the task's identity is unchanged; `feed` (one Record per record, through handle) never does.
    Over the whole recorded workload both must give the same events and leave the same process and fd tables."""
    records = rr.load_records()
    (tmp_path / "a").mkdir()
    single = _enricher(tmp_path / "a", wanted)
    one = [ev for data in records if (ev := single.feed(data)) is not None]
    taken = [0]
    real = Enricher._open_record

    def counted(self: Enricher, *args: Any) -> Event | None:
        taken[0] += 1
        return real(self, *args)

    monkeypatch.setattr(Enricher, "_open_record", counted)
    (tmp_path / "b").mkdir()
    batch = _enricher(tmp_path / "b", wanted)
    events, errors = batch.feed_batch(*_batch(records))
    assert errors == 0
    assert taken[0] >= 250, "the recorded open loop went through the header fast path"
    assert [e.to_dict() for e in events] == [e.to_dict() for e in one]
    assert batch.table.procs.keys() == single.table.procs.keys()
    for pid, p in single.table.procs.items():
        q = batch.table.procs[pid]
        assert dataclasses.asdict(q) == dataclasses.asdict(p), pid


AT_FDCWD_U64 = 0xFFFFFFFFFFFFFF9C  # AT_FDCWD (-100) as a register holds it
O_DIRECTORY = 0o200000


def test_relative_opens_resolve_against_the_directory_of_the_moment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A relative path seen before is taken from a cache keyed by the directory it resolves against (the cwd,
    or the dirfd's path) and its bytes, in the Record path and in the header fast path: a chdir, or a dirfd
    number reused for another directory, must give the new directory's path, and both paths the same events."""
    records = [
        _syscall("chdir", 0, (), b"/a\0"),
        _syscall("openat", 3, (AT_FDCWD_U64, 0, 0), b"x.h\0"),  # /a/x.h, made by the Record path
        _syscall("close", 0, (3,)),
        _syscall("openat", 3, (AT_FDCWD_U64, 0, 0), b"x.h\0"),  # /a/x.h again: the fast path
        _syscall("chdir", 0, (), b"/b\0"),
        _syscall("openat", 4, (AT_FDCWD_U64, 0, 0), b"x.h\0"),  # the same bytes, another cwd
        _syscall("open", 6, (0, 0), b"x.h\0"),  # open(2) has no dirfd: the cwd
        _syscall("openat", 5, (AT_FDCWD_U64, O_DIRECTORY, 0), b"/c\0"),
        _syscall("openat", 7, (5, 0, 0), b"x.h\0"),  # against the dirfd
        _syscall("openat", 8, (5, 0, 0), b"x.h\0"),
        _syscall("close", 0, (5,)),
        _syscall("openat", 5, (AT_FDCWD_U64, O_DIRECTORY, 0), b"/d/e\0"),  # fd 5 again, another directory
        _syscall("openat", 9, (5, 0, 0), b"x.h\0"),
        _syscall("openat", 10, (5, 0, 0), b"../x.h\0"),
        _syscall("openat", 11, (AT_FDCWD_U64, 0, 0), b"x.h\0"),
        _syscall("open", 12, (0, 0), b"x.h\0"),
    ]
    want = ["/a/x.h", "/a/x.h", "/b/x.h", "/b/x.h", "/c", "/c/x.h", "/c/x.h", "/d/e", "/d/e/x.h", "/d/x.h",
            "/b/x.h", "/b/x.h"]
    hits = [0]
    real = Enricher._relative_seen

    def counted(self: Enricher, *args: Any) -> tuple[str, str] | None:
        got = real(self, *args)
        hits[0] += got is not None
        return got

    monkeypatch.setattr(Enricher, "_relative_seen", counted)
    (tmp_path / "a").mkdir()
    events, errors = _enricher(tmp_path / "a", {"openat", "open"}).feed_batch(*_batch(records))
    assert errors == 0
    assert [e.fd.name if e.fd else None for e in events] == want
    assert [e.args["name"] for e in events] == want
    assert hits[0] == 4, "the header fast path answered the repeated relative opens"
    (tmp_path / "b").mkdir()
    single = _enricher(tmp_path / "b", {"openat", "open"})
    one = [ev for data in records if (ev := single.feed(data)) is not None]
    assert [e.to_dict() for e in events] == [e.to_dict() for e in one]


def _fed(work: Path, records: list[bytes], batched: bool,
         configure: Callable[[Enricher], None]) -> tuple[Enricher, list[Event]]:
    """A fresh enricher, set up by `configure` (a gate or none), fed every record in one batch or one by one."""
    work.mkdir()
    enricher = _enricher(work)
    configure(enricher)
    if batched:
        events, errors = enricher.feed_batch(*_batch(records))
        assert errors == 0
        return enricher, events
    return enricher, [ev for data in records if (ev := enricher.feed(data)) is not None]


def _assert_only_skipped(plain: Enricher, want: list[Event], gated: Enricher, got: list[Event],
                         skipped: set[int]) -> None:
    """The gated run made every event of the plain run but those in `skipped` (ids), numbered without them, and
    its process table is the plain run's."""
    kept = [e.to_dict() for e in want if id(e) not in skipped]
    for n, e in enumerate(kept, 1):
        e["num"] = n
    assert [e.to_dict() for e in got] == kept
    assert gated.table.procs.keys() == plain.table.procs.keys()
    for pid, p in plain.table.procs.items():
        assert dataclasses.asdict(gated.table.procs[pid]) == dataclasses.asdict(p), pid


@pytest.mark.parametrize("batched", [True, False], ids=["feed_batch", "feed"])
def test_the_open_gate_skips_only_the_events_it_rules_out(tmp_path: Path, batched: bool) -> None:
    """An open the gate (rules/open_gate.py) rules out still goes into the fd table, so every other event and
    both tables stay as without the gate; only the ruled-out opens' events are missing (numbered without
    them). An open the kernel filter always keeps (O_DIRECTORY, O_PATH: open_need's OPEN_KEEP) is never ruled
    out."""
    records = rr.load_records()
    asked: list[tuple[str, str, int]] = []

    def gate(etype: str, path: str, need: int) -> bool:
        asked.append((etype, path, need))
        return hash(path) % 3 == 0  # a third of the paths may match: the others are ruled out

    plain, want = _fed(tmp_path / "plain", records, batched, lambda e: None)
    gated, got = _fed(tmp_path / "gated", records, batched, lambda e: setattr(e, "open_gate", gate))
    assert asked, "the fixture's opens were put to the gate"
    assert all(etype in ("open", "openat", "creat") for etype, _p, _n in asked)
    ruled_out = [e for e in want if e.type in ("open", "openat", "creat") and e.fd is not None
                 and e.fd.name is not None and e.fd.name.startswith("/") and hash(e.fd.name) % 3 != 0
                 and not open_need(e.type, int(e.args.get("flags") or 0)) & OPEN_KEEP]
    assert ruled_out and gated.gated_opens == len(ruled_out)
    _assert_only_skipped(plain, want, gated, got, {id(e) for e in ruled_out})


@pytest.mark.parametrize("batched", [True, False], ids=["feed_batch", "feed"])
def test_the_fd_type_gate_skips_only_the_events_it_rules_out(tmp_path: Path, batched: bool) -> None:
    """An event the fd-type gate (rules/fd_type_gate.py) rules out has had its effect on the fd table: every
    other event and both tables are as without the gate. Opens and execs are never put to it."""
    records = rr.load_records()
    asked: list[str] = []

    def gate(etype: str, fd_type: str) -> bool:
        asked.append(etype)
        return fd_type not in ("pipe", "unix")

    plain, want = _fed(tmp_path / "plain", records, batched, lambda e: None)
    gated, got = _fed(tmp_path / "gated", records, batched, lambda e: setattr(e, "fd_type_gate", gate))
    assert asked and not {"open", "openat", "creat", "execve"} & set(asked)
    ruled_out = {id(e) for e in want if e.type in asked and e.fd is not None and e.fd.type in ("pipe", "unix")}
    assert ruled_out and gated.gated_fd_events == len(ruled_out)
    _assert_only_skipped(plain, want, gated, got, ruled_out)
