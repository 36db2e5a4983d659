"""Output formats: %field substitution, <NA>, transformers, widths, typed output_fields, errors, extras."""

from __future__ import annotations

import json

import pytest

from falconet.rules.errors import OutputFormatError
from falconet.model.event import Container, Event, Fd, Process, User
from falconet.rules.output import CONTAINER_INFO_DEPRECATED, compile_output

NS = 1_000_000_000


def sample() -> Event:
    parent = Process(pid=1, name="bash", exe="bash", exepath="/usr/bin/bash", args=["-i"])
    proc = Process(pid=42, ppid=1, name="cat", exe="cat", exepath="/usr/bin/cat", args=["/etc/shadow"], tty=34816,
                   user=User(uid=0, name="root"), parent=parent)  # fmt: skip
    return Event(num=9, ts=1685022245 * NS + 478445995, type="openat", tid=42, res=3, proc=proc,
                 args={"flags": 0o2000000, "name": "/etc/shadow", "dirfd": -100},
                 fd=Fd(num=3, name="/etc/shadow"), container=Container(id="ee97d9c4186f", name="web"))  # fmt: skip


def test_fields_text_and_typed_values() -> None:
    fmt = compile_output(
        "Sensitive read (file=%fd.name flags=%evt.arg.flags user=%user.name uid=%user.uid tty=%proc.tty "
        "parent=%proc.pname gp=%proc.aname[2] container=%container.id image=%container.image.repository)"
    )
    text, fields = fmt.render(sample())
    assert text == (
        "Sensitive read (file=/etc/shadow flags=O_RDONLY|O_CLOEXEC user=root uid=0 tty=34816 parent=bash "
        "gp=<NA> container=ee97d9c4186f image=<NA>)"
    )
    assert fields == {
        "fd.name": "/etc/shadow", "evt.arg.flags": "O_RDONLY|O_CLOEXEC", "user.name": "root", "user.uid": 0,
        "proc.tty": 34816, "proc.pname": "bash", "proc.aname[2]": None, "container.id": "ee97d9c4186f",
        "container.image.repository": None,
    }  # fmt: skip
    json.dumps(fields)  # every value is JSON-ready
    assert fmt.field_keys == list(fields)


def test_times_bools_and_trailing_punctuation() -> None:
    text, fields = compile_output("at %evt.time read=%evt.is_open_read file %fd.name.").render(sample())
    assert text == "at 13:44:05.478445995 read=true file /etc/shadow."
    assert fields == {"evt.time": 1685022245478445995, "evt.is_open_read": True, "fd.name": "/etc/shadow"}


def test_transformers_and_width() -> None:
    text, fields = compile_output(
        "%toupper(user.name) %basename(proc.exepath) [%6proc.name] [%2proc.pname]"
    ).render(sample())
    assert text == "ROOT cat [cat   ] [ba]"
    assert fields["toupper(user.name)"] == "ROOT" and fields["basename(proc.exepath)"] == "cat"
    assert compile_output("%len(proc.args)").render(sample())[1] == {"len(proc.args)": 11}


def test_container_info_is_deprecated() -> None:
    fmt = compile_output("shell (id=%container.id) %container.info")
    assert fmt.render(sample())[0] == "shell (id=ee97d9c4186f) "
    assert fmt.warnings == [CONTAINER_INFO_DEPRECATED]
    old = compile_output("x %container.info", container_info="container=%container.name (id=%container.id)")
    assert old.render(sample()) == (
        "x container=web (id=ee97d9c4186f)",
        {"container.name": "web", "container.id": "ee97d9c4186f"},
    )


def test_append_output_hooks() -> None:
    fmt = compile_output("read %fd.name").with_extra(
        "k8s_ns=%k8s.ns.name", ["proc.pid", {"where": "%container.name/%proc.name"}]
    )
    text, fields = fmt.render(sample())
    assert text == "read /etc/shadow k8s_ns=<NA>"
    assert fields == {"fd.name": "/etc/shadow", "k8s.ns.name": None, "proc.pid": 42, "where": "web/cat"}


@pytest.mark.parametrize(
    ("fmt", "message", "offset"),
    [
        ("bad %", "cannot end with a %", 4),
        ("x %proc.nam y", "unknown field 'proc.nam'", 2),
        ("50% done", "invalid formatting token", 2),
        ("%toupper(proc.name", "expected ')'", 18),
        ("%proc.aname[1", "']'", 11),
    ],
)
def test_errors_have_offsets(fmt: str, message: str, offset: int) -> None:
    with pytest.raises(OutputFormatError) as info:
        compile_output(fmt)
    assert message in str(info.value)
    assert info.value.offset == offset
