"""Joining an exec to its argument record (EXECARGS), and what an exec whose arguments were lost shows.

Without EXECARGS (the kernel's EXECARGS_LOST stand-in, or no record at all) the arguments are unknown: the
process says so (args_known) and the fields built from them render `<NA>`, never a bare name that reads as an
exec without arguments. The live proof that the kernel sends the stand-in is test_execargs_drop_live.py.
"""

from __future__ import annotations

from pathlib import Path

from falconet.model.event import Event
from falconet.rules.output import compile_output
from falconet.sensor import record as r

from .test_enricher import _enricher, _rec

EXECVE = 59
OUTPUT = "%proc.cmdline|%proc.args|%proc.cmdnargs|%proc.pcmdline|%evt.arg.args|%proc.exepath|%proc.env"


def _exec(tmp_path: Path, *before: bytes) -> tuple[list[Event | None], Event]:
    e = _enricher(tmp_path)
    e.feed(_rec(r.REC_FORK, 50, args=(60, 17), comm="nginx", ppid=1))
    got = [e.feed(b) for b in before]
    ev = e.feed(_rec(r.REC_SYSCALL, 60, nr=EXECVE, res=0, comm="sh", segs={r.SEG_STR0: b"bin\0sh\0"}))
    assert ev is not None and ev.type == "execve"
    return got, ev


def _args(argv: bytes) -> bytes:
    return _rec(r.REC_EXECARGS, 60, nr=EXECVE, segs={r.SEG_STR0: b"/bin/sh\0", r.SEG_EXTRA: argv})


def test_an_exec_with_its_argument_record_is_known(tmp_path: Path) -> None:
    _, ev = _exec(tmp_path, _args(b"sh\0-c\0id\0"))
    assert ev.proc.args_known and ev.proc.args == ["-c", "id"]
    text, _ = compile_output(OUTPUT).render(ev)
    assert text == "sh -c id|-c id|2|nginx|-c id|/bin/sh|"


def test_the_lost_stand_in_makes_the_arguments_unknown(tmp_path: Path) -> None:
    lost = _rec(r.REC_EXECARGS, 60, nr=EXECVE, args=(r.EXECARGS_LOST,))
    _, ev = _exec(tmp_path, lost)
    # (no exe path walked in the kernel here, and no filename: that is unknown too, not the parent's)
    assert not ev.proc.args_known and ev.proc.exepath == ""
    assert ev.args["args"] is None and ev.args["env"] is None and ev.args["filename"] is None
    text, fields = compile_output(OUTPUT).render(ev)
    assert text == "<NA>|<NA>|<NA>|nginx|<NA>|<NA>|<NA>"
    assert fields["proc.cmdline"] is None


def test_an_exec_without_any_argument_record_is_unknown(tmp_path: Path) -> None:
    _, ev = _exec(tmp_path)
    assert not ev.proc.args_known
    assert compile_output("%proc.cmdline").render(ev)[0] == "<NA>"


def test_a_stale_record_of_an_earlier_exec_is_not_taken_for_a_lost_one(tmp_path: Path) -> None:
    """The stand-in replaces whatever an earlier exec left pending: its arguments are not this exec's."""
    lost = _rec(r.REC_EXECARGS, 60, nr=EXECVE, args=(r.EXECARGS_LOST,))
    _, ev = _exec(tmp_path, _args(b"sh\0old\0"), lost)
    assert not ev.proc.args_known and ev.proc.args == []


def test_unknown_arguments_are_inherited_and_the_next_exec_knows_again(tmp_path: Path) -> None:
    e = _enricher(tmp_path)
    e.feed(_rec(r.REC_FORK, 50, args=(60, 17), comm="nginx", ppid=1))
    e.feed(_rec(r.REC_SYSCALL, 60, nr=EXECVE, res=0, comm="sh"))  # no EXECARGS
    e.feed(_rec(r.REC_FORK, 60, args=(61, 17), comm="sh", ppid=50))
    close = 3
    child = e.feed(_rec(r.REC_SYSCALL, 61, nr=close, res=0, args=(9,), comm="sh", ppid=60))
    assert child is not None and not child.proc.args_known
    assert compile_output("%proc.cmdline %proc.pcmdline %proc.acmdline[1]").render(child)[0] == "<NA> <NA> <NA>"
    e.feed(_rec(r.REC_EXECARGS, 61, nr=EXECVE, segs={r.SEG_STR0: b"/bin/cat\0", r.SEG_EXTRA: b"cat\0x\0"}))
    ev = e.feed(_rec(r.REC_SYSCALL, 61, nr=EXECVE, res=0, comm="cat", ppid=60))
    assert ev is not None and ev.proc.args_known and ev.proc.cmdline == "cat x"


def test_a_failed_exec_without_its_arguments_shows_them_unknown(tmp_path: Path) -> None:
    e = _enricher(tmp_path)
    e.feed(_rec(r.REC_FORK, 50, args=(60, 17), comm="nginx", ppid=1))
    e.feed(_rec(r.REC_EXECARGS, 60, nr=EXECVE, args=(r.EXECARGS_LOST,)))
    ev = e.feed(_rec(r.REC_SYSCALL, 60, nr=EXECVE, res=-2, comm="nginx"))
    assert ev is not None and ev.args["args"] is None and ev.args["exe"] is None
    assert ev.proc.args_known  # a failed exec changes no image


def test_a_process_the_tables_never_saw_has_unknown_arguments(tmp_path: Path) -> None:
    """Its fork and exec records were dropped (or it ran before seeding): the first event naming it makes an
    empty entry, whose image is unknown; `python3` alone would read as a python3 run without arguments."""
    e = _enricher(tmp_path)
    close = 3
    ev = e.feed(_rec(r.REC_SYSCALL, 77, nr=close, res=0, args=(9,), comm="python3", ppid=50))
    assert ev is not None and not ev.proc.args_known
    assert compile_output("%proc.cmdline|%proc.exepath|%proc.pcmdline").render(ev)[0] == "<NA>|<NA>|nginx"
