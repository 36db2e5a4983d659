"""The open prefilter is conservative: for random rules built from every predicate kind the analysis knows
(prefixes, base names, suffixes, globs, `..` tests, open kinds, named flags, and things it cannot bound, under
and/or/not) and random open events, an event the kernel's model drops (sensor/openfilter.py, the decision
probe_openfilter.h makes with the maps filled from the rules) never matches any rule, and a later event
(fchmod, read) on the fd such an open made matches the same rules whether user space knows the fd or not.

tests/sensor/test_openfilter_live.py checks that the live kernel decides as this model does."""

from __future__ import annotations

import posixpath
import textwrap
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from rule_strategies import conditions
from rule_strategies import quote as _q

from falconet.model.event import Container, Event, Fd, Process, User
from falconet.rules.engine import Engine
from falconet.rules.errors import RulesLoadError
from falconet.sensor.openfilter import compile_maps, open_need

O_RDONLY, O_WRONLY, O_RDWR, O_CREAT, O_TRUNC, O_APPEND = 0, 0o1, 0o2, 0o100, 0o1000, 0o2000
O_CLOEXEC, O_NONBLOCK, O_EXCL, O_DIRECTORY = 0o2000000, 0o4000, 0o200, 0o200000

WORDS = ["etc", "shadow", "var", "log", "syslog", "auth.log", "home", "a", ".ssh", "id_rsa", "x.log", "tmp",
         "release_agent", "cgroup", "usr", "bin", "ab", "b", "a..", "log.1"]  # fmt: skip
# Path components, the unclean ones included (the kernel must keep those whatever the rules say).
PARTS = [*WORDS, "..", ".", ""]
FLAG_NAMES = ["O_TRUNC", "O_CREAT", "O_RDWR", "O_WRONLY", "O_RDONLY", "O_APPEND", "O_CLOEXEC", "O_NONBLOCK",
              "O_EXCL", "RDONLY", "O_"]  # fmt: skip
FLAGS = [O_RDONLY, O_WRONLY, O_RDWR, 3, O_RDONLY | O_CLOEXEC, O_WRONLY | O_CREAT | O_TRUNC, O_WRONLY | O_APPEND,
         O_RDWR | O_CREAT, O_RDONLY | O_TRUNC, O_WRONLY | O_NONBLOCK, O_RDWR | O_EXCL | O_CREAT,
         O_RDONLY | O_DIRECTORY]  # fmt: skip

word = st.sampled_from(WORDS)
abs_path = st.lists(word, min_size=1, max_size=3).map(lambda ws: "/" + "/".join(ws))
path_value = abs_path | abs_path.map(lambda p: p + "/") | word


# One check of each kind the analysis handles (and a few it must treat as unbounded).
check = st.one_of(
    st.builds(lambda v: f"fd.name startswith {_q(v)}", path_value),
    st.builds(lambda v: f"fd.name = {_q(v)}", abs_path),
    st.builds(lambda a, b: f"fd.name in ({_q(a)}, {_q(b)})", abs_path, abs_path),
    st.builds(lambda v: f"fd.directory = {_q(v)}", abs_path),
    st.builds(lambda v: f"fd.directory in ({_q(v)})", abs_path),
    st.builds(lambda v: f"fd.filename = {_q(v)}", word),
    st.builds(lambda a, b: f"fd.filename in ({_q(a)}, {_q(b)})", word, word),
    st.builds(lambda v: f"fd.filename endswith {_q(v)}", word),
    st.builds(lambda v: f"fd.name endswith {_q(v)}", word | abs_path),
    st.builds(lambda v: f"fd.nameraw endswith {_q(v)}", word),
    st.builds(lambda g: f"fd.name glob {_q(g)}", st.sampled_from(
        ["/var/log/*", "*/shadow", "*.log", "/home/*/.ssh/*", "*", "*/a..*", "/etc/[ab]*", "*[.]log"])),
    st.builds(lambda g: f"fd.filename glob {_q(g)}", st.sampled_from(["*.log", "sys*", "*", "a?"])),
    st.builds(lambda p: f"fd.name pmatch ({_q(p)})", st.sampled_from(["/var/log", "//etc//", "/home/*"])),
    st.builds(lambda c: f"fd.nameraw contains {_q(c)}", st.sampled_from(["../", "/./", "//", "..", "log"])),
    st.builds(lambda g: f"fd.nameraw glob {_q(g)}", st.sampled_from(["*../*", "*../*../*", "*..*"])),
    st.builds(lambda c: f"fd.name contains {_q(c)}", st.sampled_from(["../", "id_rsa", "/etc/"])),
    st.sampled_from(["evt.is_open_read = true", "evt.is_open_write = true", "evt.is_open_read = false"]),
    st.builds(lambda f: f"evt.arg.flags contains {f}", st.sampled_from(FLAG_NAMES)),
    st.sampled_from(["proc.name = cat", "proc.name in (cat, bash)", "fd.typechar = f", "fd.num >= 0",
                     "evt.res startswith E", "user.uid = 0", "container.id = host"]),
)


condition = conditions(check)
types = st.sets(st.sampled_from(["open", "openat", "creat", "openat2", "fchmod", "read"]), min_size=1)


def _rule(i: int, etypes: set[str], cond: str) -> str:
    return textwrap.dedent(f"""
        - rule: r{i}
          desc: d
          condition: evt.type in ({", ".join(sorted(etypes))}) and {cond}
          output: o %fd.name
          priority: WARNING
        """)


def later(open_event: Event, etype: str, known: bool) -> Event:
    """A later syscall on the fd the open made (fchmod, read): fd.* come from the fd table, where the fd is
    unknown (no Fd) when the kernel kept its open back."""
    return Event(num=2, ts=2, type=etype, tid=100, res=0, proc=open_event.proc,
                 args={"fd": open_event.res, "mode": 0o600, "size": 10}, fd=open_event.fd if known else None,
                 container=Container())  # fmt: skip


def event(etype: str, raw: str, flags: int, res: int) -> Event:
    """An open as the sensor makes it: fd.name the path made absolute and normalised, fd.nameraw as given."""
    proc = Process(pid=100, ppid=10, name="cat", exe="cat", exepath="/usr/bin/cat", args=[], cwd="/root",
                   user=User(uid=0, name="root"))  # fmt: skip
    name = posixpath.normpath(posixpath.join("/root", raw)) if raw else "/root"
    if name.startswith("//"):
        name = name[1:]
    args: dict[str, Any] = {"name": raw, "flags": flags, "mode": 0o644}
    if etype == "openat":
        args["dirfd"] = -100
    fd = Fd(num=res if res >= 0 else -1, type="file", name=name, nameraw=raw, flags=flags)
    return Event(num=1, ts=1, type=etype, tid=100, res=res, proc=proc, args=args, fd=fd, container=Container())


raw_path = st.builds(
    lambda lead, parts, trail: lead + "/".join(parts) + trail,
    st.sampled_from(["/", "/", "/", ""]),
    st.lists(st.sampled_from(PARTS), min_size=1, max_size=4),
    st.sampled_from(["", "", "", "/"]),
)


@settings(max_examples=400, deadline=None)
@given(
    rules=st.lists(st.tuples(types, condition), min_size=1, max_size=3),
    events=st.lists(st.tuples(st.sampled_from(["open", "openat", "creat"]), raw_path, st.sampled_from(FLAGS),
                              st.sampled_from([3, -2])), min_size=1, max_size=8),  # fmt: skip
)
def test_an_event_the_filter_drops_matches_no_rule(
    rules: list[tuple[set[str], str]], events: list[tuple[str, str, int, int]]
) -> None:
    text = "".join(_rule(i, etypes, cond) for i, (etypes, cond) in enumerate(rules))
    try:
        eng = Engine.from_texts([("t.yaml", text)], rule_matching="all")
    except RulesLoadError:
        return  # a combination the engine refuses (a check that does not apply to a field): no rule to test
    found = eng.open_path_prefixes()
    if found is None:
        return  # the filter stays off
    maps = compile_maps(found)
    for etype, raw, flags, res in events:
        if maps.keeps(raw.encode(), open_need(etype, flags)):
            continue
        ev = event(etype, raw, flags, res)
        assert not eng.matching_rules(ev), (text, found, etype, raw, oct(flags))
        if res >= 0:  # the fd stays unknown to user space: that may change no later event's alerts
            for other in ("fchmod", "read"):
                seen, unseen = later(ev, other, True), later(ev, other, False)
                assert eng.matching_rules(unseen) == eng.matching_rules(seen), (text, found, other, raw, oct(flags))


def test_the_generated_space_is_not_empty() -> None:
    """Bounded rules with dropped events and matching events both occur (else the property is vacuous)."""
    eng = Engine.from_texts([("t.yaml", _rule(0, {"openat"}, "fd.filename = shadow and evt.is_open_read = true"))])
    found = eng.open_path_prefixes()
    assert found == {"*/shadow": ["read"]}
    maps = compile_maps(found)
    assert not maps.keeps(b"/etc/passwd", open_need("openat", O_RDONLY))
    assert not maps.keeps(b"/etc/shadow", open_need("openat", O_WRONLY))
    assert maps.keeps(b"/etc/shadow", open_need("openat", O_RDONLY))
    assert eng.matching_rules(event("openat", "/etc/shadow", O_RDONLY, 3))
    # unclean paths are always kept, whatever the rules
    for raw in (b"/etc/../shadow", b"/etc//x", b"/etc/./x", b"/a../x", b"/etc/", b"etc/x", b"/x/.", b"/x/.."):
        assert maps.keeps(raw, open_need("openat", O_RDONLY)), raw


def test_suffixes_fit_the_kernel_by_cutting_them_shorter() -> None:
    """More distinct suffix lengths than the kernel tries: each is cut to a kept length, which only widens."""
    atoms = {"*" + "x" * n: ["write"] for n in range(1, 12)} | {"*" + "y" * 40: ["read"]}
    maps = compile_maps(atoms)
    assert len(maps.lengths) <= 8
    assert max(length for length, _ in maps.lengths) <= 32
    for n in range(1, 12):
        assert maps.keeps(b"/a/" + b"x" * n, open_need("openat", O_WRONLY))
    assert maps.keeps(b"/a/" + b"y" * 40, open_need("openat", O_RDONLY))
    assert not maps.keeps(b"/a/" + b"y" * 40, open_need("openat", O_WRONLY))


def test_prefix_entries_include_shorter_prefixes() -> None:
    import pytest

    maps = compile_maps({"/etc/": ["write", "other"], "/etc/shadow": ["read"], "/var/log/": ["write"]})
    assert maps.prefixes == {b"/etc/": 6, b"/etc/shadow": 7, b"/var/log/": 2}
    assert compile_maps(["/a/" + "x" * 100]).prefixes == {("/a/" + "x" * 61).encode(): 7}
    with pytest.raises(ValueError, match="unknown open kind 'exec'"):
        compile_maps({"/bin/": ["exec"]})
