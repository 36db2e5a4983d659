"""Engine.open_path_prefixes: the sensor's open filter derived from the rules, and proof that it is conservative.

Each case states a rule and what the analysis must answer; the property tests replay random open events
through the engine and check that every event some rule matches would pass the kernel's filter as the
sensor implements it (prefix on the path's first 64 bytes, kinds from the open flags)."""

from __future__ import annotations

import textwrap
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from falconet.rules import DEFAULT_RULES
from falconet.rules.engine import Engine
from falconet.model.event import Container, Event, Fd, Process, User
from falconet.sensor.openfilter import compile_maps, open_need

O_RDONLY, O_WRONLY, O_RDWR = 0, 0o1, 0o2
O_CREAT, O_TRUNC, O_APPEND, O_CLOEXEC = 0o100, 0o1000, 0o2000, 0o2000000


def engine(rules: str) -> Engine:
    return Engine.from_texts([("t.yaml", textwrap.dedent(rules))])


def rule(condition: str, name: str = "r", extra: str = "") -> str:
    return extra + textwrap.dedent(f"""
        - rule: {name}
          desc: d
          condition: {condition}
          output: o %fd.name
          priority: WARNING
        """)


def prefixes(condition: str, extra: str = "") -> dict[str, list[str]] | None:
    return engine(rule(condition, extra=extra)).open_path_prefixes()


def passes(found: dict[str, list[str]] | None, path: str, etype: str, flags: int) -> bool:
    """Would the kernel deliver this open? (sensor/openfilter.py's model of probe_openfilter.h)"""
    if found is None:
        return True
    return compile_maps(found).keeps(path.encode(), open_need(etype, flags))


# --- the forms that bound a rule --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ("evt.type = openat and fd.name startswith /etc/", {"/etc/": ["read", "write", "other"]}),
        ("evt.type = openat and fd.name = /etc/shadow", {"/etc/shadow": ["read", "write", "other"]}),
        (
            "evt.type = openat and fd.name in (/a, /b/c)",
            {"/a": ["read", "write", "other"], "/b/c": ["read", "write", "other"]},
        ),
        ("evt.type = openat and fd.directory = /etc/pam.d", {"/etc/pam.d": ["read", "write", "other"]}),
        ("evt.type = openat and fd.name glob '/home/*/.ssh/*'", {"/home/": ["read", "write", "other"]}),
        (
            "evt.type = openat and fd.name pmatch (/usr/bin, //opt//x/, /srv/[ab]*)",
            {
                "/usr/bin": ["read", "write", "other"],
                "/opt/x": ["read", "write", "other"],
                "/srv/": ["read", "write", "other"],
            },
        ),
        # `and` narrows: either side's bound suffices, both bounded intersect.
        (
            "evt.type = openat and proc.name = cat and fd.name startswith /etc",
            {"/etc": ["read", "write", "other"]},
        ),
        (
            "evt.type = openat and fd.name startswith /etc and fd.name startswith /etc/ssh/",
            {"/etc/ssh/": ["read", "write", "other"]},
        ),
        ("evt.type = openat and fd.name startswith /etc and fd.name startswith /usr", {}),
        # `or` unions when both sides are bounded.
        (
            "evt.type = openat and (fd.name startswith /a or fd.directory = /b)",
            {"/a": ["read", "write", "other"], "/b": ["read", "write", "other"]},
        ),
        # kinds from evt.is_open_read / evt.is_open_write.
        (
            "evt.type = openat and evt.is_open_read = true and fd.name = /etc/shadow",
            {"/etc/shadow": ["read"]},
        ),
        (
            "evt.type in (openat, creat) and evt.is_open_write = true and fd.name startswith /etc/",
            {"/etc/": ["write"]},
        ),
        (
            "evt.type = openat and ((evt.is_open_read = true and fd.name = /r) or "
            "(evt.is_open_write = true and fd.name = /w))",
            {"/r": ["read"], "/w": ["write"]},
        ),
        # a branch for another event type cannot match an open, whatever it tests.
        (
            "(evt.type = unlink and evt.arg.path endswith x) or (evt.type = openat and fd.name = /x)",
            {"/x": ["read", "write", "other"]},
        ),
        # no open-family rule at all: nothing needs to pass.
        ("evt.type = execve and proc.name = sh", {}),
        # opens the kernel never keeps back (open_by_handle_at, openat2) need no bound.
        ("evt.type in (open_by_handle_at, openat2) and proc.name = x", {}),
        # suffixes: the base name, an end of the path, a glob's literal end.
        ("evt.type = openat and fd.filename = id_rsa", {"*/id_rsa": ["read", "write", "other"]}),
        ("evt.type = openat and fd.filename in (a, b/c)", {"*/a": ["read", "write", "other"]}),
        ("evt.type = openat and fd.name endswith release_agent", {"*release_agent": ["read", "write", "other"]}),
        ("evt.type = openat and fd.filename glob '*.log'", {"*.log": ["read", "write", "other"]}),
        ("evt.type = openat and fd.name glob '*/.ssh/id_rsa'", {"*/.ssh/id_rsa": ["read", "write", "other"]}),
        ("evt.type = openat and fd.name glob '*/.ssh/id_*'", {"": ["read", "write", "other"]}),
        # `and` of a prefix and a suffix keeps the prefix (one trie lookup).
        ("evt.type = openat and fd.name startswith /etc/ and fd.filename = x", {"/etc/": ["read", "write", "other"]}),
        # only unclean paths (which the kernel always emits): no atom at all.
        ("evt.type = openat and fd.nameraw contains '../' and fd.name contains id_rsa", {}),
        ("evt.type = openat and fd.nameraw glob '*../*../*'", {}),
        # named flags narrow the kinds: O_TRUNC makes an open "other".
        ("evt.type = openat and evt.arg.flags contains O_TRUNC and fd.name startswith /var/log",
         {"/var/log": ["other"]}),
        ("evt.type = openat and evt.is_open_write = true and evt.arg.flags contains O_TRUNC and fd.filename = syslog",
         {"*/syslog": ["other"]}),
        # an O_RDWR open is both read and write: testing both needs either kind, not none.
        ("evt.type = openat and evt.is_open_read = true and evt.is_open_write = true and fd.name startswith /x",
         {"/x": ["write"]}),
    ],
)
def test_bounded_forms(condition: str, expected: dict[str, list[str]]) -> None:
    assert prefixes(condition) == expected


@pytest.mark.parametrize(
    "condition",
    [
        "evt.type = openat",
        "evt.type = openat and fd.filename startswith id_rsa",
        "evt.type = openat and fd.name endswith ''",
        "evt.type = openat and fd.name contains ..",
        "evt.type = openat and fd.name contains /etc/",
        "evt.type = openat and not fd.name startswith /tmp",
        "evt.type = openat and not (not fd.name startswith /etc)",
        "evt.type = openat and (fd.name startswith /etc or proc.name = cat)",
        "evt.type = openat and fd.name iglob /etc/*",
        "evt.type = openat and tolower(fd.name) startswith /etc",
        "evt.type = openat and fd.name = val(proc.exepath)",
        "evt.type = openat and fd.name exists",
        "evt.type = openat and evt.arg.name startswith /etc",
        "evt.type != execve and fd.name startswith /etc and proc.name = x or proc.name = y",
        # no evt.type at all: the rule sees every type, opens included.
        "proc.name = cat",
        # a later event on an fd the filter kept back would find it unknown.
        "evt.type = fchmod and fd.name contains shadow",
        # fd.num too comes from the fd table (an unknown fd has none), found by the prefilter property test.
        "evt.type = fchmod and fd.num >= 0",
        "evt.type = read and evt.args contains shadow",
    ],
)
def test_unbounded_turns_the_filter_off(condition: str) -> None:
    assert prefixes(condition) is None


def test_one_unbounded_rule_among_bounded_ones_turns_it_off() -> None:
    rules = rule("evt.type = openat and fd.name startswith /etc", "a") + rule(
        "evt.type = openat and fd.name contains id_rsa", "b"
    )
    eng = engine(rules)
    assert eng.open_path_prefixes() is None
    assert eng.open_path_blockers() == ["b"]
    # Disabling the unbounded rule brings the filter back with the other rule's prefix only.
    eng.enable_rules("b", False)
    assert eng.open_path_prefixes() == {"/etc": ["read", "write", "other"]}


def test_macros_and_lists_are_followed() -> None:
    extra = textwrap.dedent("""
        - list: secrets
          items: [/etc/shadow, /etc/gshadow]
        - macro: opened
          condition: evt.type in (open, openat)
        - macro: secret
          condition: (fd.name in (secrets))
        - macro: loose
          condition: fd.name contains shadow
        """)
    assert prefixes("opened and secret", extra) == {
        "/etc/gshadow": ["read", "write", "other"],
        "/etc/shadow": ["read", "write", "other"],
    }
    assert prefixes("opened and (secret or loose)", extra) is None
    assert prefixes("opened and not secret", extra) is None


def test_exceptions_cannot_widen_a_rule() -> None:
    # Exceptions become `and not (...)`: unbounded on their own, they leave the rule's bound as it was.
    text = textwrap.dedent("""
        - rule: r
          desc: d
          condition: evt.type = openat and fd.name startswith /etc/
          output: o
          priority: WARNING
          exceptions:
            - name: tools
              fields: [proc.name, fd.filename]
              values: [[vim, passwd]]
        """)
    assert engine(text).open_path_prefixes() == {"/etc/": ["read", "write", "other"]}


def test_rules_on_other_types_need_a_bound_only_when_they_read_the_fd_table() -> None:
    assert prefixes("evt.type = fchmod and evt.arg.mode contains S_ISUID") == {}
    assert prefixes("evt.type = fchmod and fd.name startswith /usr/bin") == {
        "/usr/bin": ["read", "write", "other"]
    }
    # A socket-only conjunct means a kept-back file fd could never have matched.
    assert prefixes("evt.type = dup and fd.type in (ipv4, ipv6)") == {}
    assert prefixes("evt.type = dup and not fd.type = file") is None
    # Socket syscalls build their fd from their own socket data.
    assert prefixes("evt.type = connect and fd.sport = 3333") == {}


def test_default_rules_are_bounded() -> None:
    found = Engine.from_files([DEFAULT_RULES]).open_path_prefixes()
    assert found is not None
    # The hot paths of an ordinary system stay in the kernel: reads below /etc and /usr, writes to /dev.
    for path, flags in [("/etc/hostname", O_RDONLY), ("/etc/ld.so.cache", O_RDONLY | O_CLOEXEC),
                        ("/usr/lib/x86_64-linux-gnu/libc.so.6", O_RDONLY), ("/proc/self/stat", O_RDONLY),
                        ("/dev/null", O_WRONLY)]:  # fmt: skip
        assert not passes(found, path, "openat", flags), path
    for path, flags in [("/etc/shadow", O_RDONLY), ("/etc/passwd", O_WRONLY), ("/usr/bin/x", O_WRONLY | O_CREAT),
                        ("/root/.ssh/id_rsa", O_RDONLY), ("/home/a/.bash_history", O_WRONLY | O_TRUNC)]:  # fmt: skip
        assert passes(found, path, "openat", flags), path


# --- property: whatever a rule matches, the kernel would have delivered ----------------------------------

COMPONENTS = ["etc", "shadow", "gshadow", "sudoers", "sudoers.d", "pam.d", "ssh", "ssh_host_rsa_key", "root",
              ".ssh", "id_rsa", "id_ed25519", "authorized_keys", "authorized_keys2", "home", "alice", ".bashrc",
              ".profile", "profile.d", "profile", ".bash_history", ".zsh_history", "var", "log", "syslog", "usr",
              "bin", "lib", "local", "sbin", "tmp", "x", ".aws", "credentials", ".kube", "config", "run",
              "secrets", "kubernetes.io", "serviceaccount", "token", "lib64", "hostname", "opt", "data"]  # fmt: skip
PROCS = ["bash", "cat", "python3", "dpkg", "sshd", "vim", "sed", "logrotate", "kubectl"]
FLAGS = [O_RDONLY, O_RDONLY | O_CLOEXEC, O_WRONLY, O_RDWR, O_WRONLY | O_CREAT | O_TRUNC, O_WRONLY | O_APPEND,
         O_RDWR | O_CREAT, 3, O_RDONLY | O_TRUNC]  # fmt: skip

FIRST = ["etc", "root", "home", "var", "usr", "tmp", "opt", "run", "srv", "lib", "bin", "proc", "dev"]
LAST = ["shadow", "sudoers", "id_rsa", "id_ed25519", "authorized_keys", ".bashrc", ".profile", ".bash_history",
        ".zsh_history", "credentials", "config", "token", "ssh_host_rsa_key", "syslog", "hostname", "x"]  # fmt: skip
# Paths from a root through some components to a name rules look for, so the rules do get matched.
paths = st.builds(
    lambda first, middle, last: "/" + "/".join([first, *middle, last]),
    st.sampled_from(FIRST),
    st.lists(st.sampled_from(COMPONENTS), max_size=3),
    st.sampled_from(LAST),
) | st.lists(st.sampled_from(COMPONENTS), min_size=1, max_size=5).map(lambda cs: "/" + "/".join(cs))


def open_event(etype: str, path: str, flags: int, comm: str) -> Event:
    parent = Process(pid=10, ppid=1, name="node", exe="node", exepath="/usr/bin/node", args=[], cwd="/",
                     user=User(uid=0, name="root"))  # fmt: skip
    proc = Process(pid=100, ppid=10, name=comm, exe=comm, exepath=f"/usr/bin/{comm}", args=["-x"], cwd="/root",
                   tty=34816, user=User(uid=0, name="root"), parent=parent)  # fmt: skip
    args: dict[str, Any] = {"name": path, "flags": flags, "mode": 0o644}
    if etype == "openat":
        args["dirfd"] = -100
    fd = Fd(num=3, type="file", name=path, nameraw=path, flags=flags)
    return Event(num=1, ts=1, type=etype, tid=100, res=3, proc=proc, args=args, fd=fd, container=Container())


DEFAULT = Engine.from_files([DEFAULT_RULES], rule_matching="all")
DEFAULT_FOUND = DEFAULT.open_path_prefixes()


@settings(max_examples=1000, deadline=None)
@given(etype=st.sampled_from(["open", "openat", "creat"]), path=paths, flags=st.sampled_from(FLAGS),
       comm=st.sampled_from(PROCS))  # fmt: skip
def test_default_rules_match_only_what_passes(etype: str, path: str, flags: int, comm: str) -> None:
    event = open_event(etype, path, flags, comm)
    if DEFAULT.matching_rules(event):
        assert passes(DEFAULT_FOUND, path, etype, flags), (DEFAULT.matching_rules(event), path, oct(flags))


def _synthetic() -> Engine:
    macro = textwrap.dedent("""
        - macro: open_read_like
          condition: evt.type in (open, openat) and evt.is_open_read = true
        """)
    text = (
        rule("open_read_like and fd.name pmatch (/etc/ssh, /root) and not proc.name = sshd", "a", extra=macro)
        + rule(
            "evt.type in (openat, creat) and evt.is_open_write = true and (fd.directory in (/var/log, /tmp)"
            " or fd.name glob '/home/*/.bash*')",
            "b",
        )
        + rule("evt.type = openat and fd.name startswith /usr and fd.filename in (bin, lib)", "c")
    )
    return Engine.from_texts([("t.yaml", text)], rule_matching="all")


SYNTH = _synthetic()
SYNTH_FOUND = SYNTH.open_path_prefixes()


@settings(max_examples=300, deadline=None)
@given(etype=st.sampled_from(["open", "openat", "creat"]), path=paths, flags=st.sampled_from(FLAGS),
       comm=st.sampled_from(PROCS))  # fmt: skip
def test_synthetic_rules_match_only_what_passes(etype: str, path: str, flags: int, comm: str) -> None:
    assert SYNTH_FOUND is not None
    event = open_event(etype, path, flags, comm)
    if SYNTH.matching_rules(event):
        assert passes(SYNTH_FOUND, path, etype, flags)


def test_the_property_space_reaches_the_rules() -> None:
    """The random events above can match: otherwise the property tests could not fail."""
    hits = [
        open_event("openat", "/etc/shadow", O_RDONLY, "cat"),
        open_event("creat", "/usr/bin/x", O_WRONLY, "bash"),
        open_event("openat", "/root/.ssh/id_rsa", O_RDONLY, "python3"),
        open_event("open", "/home/alice/.bash_history", O_WRONLY | O_TRUNC, "bash"),
    ]
    for event in hits:
        assert DEFAULT.matching_rules(event), event.fd
    assert SYNTH.matching_rules(open_event("openat", "/root/x", O_RDONLY, "cat")) == ["a"]
    assert SYNTH.matching_rules(open_event("creat", "/tmp/x", O_WRONLY, "cat")) == ["b"]
