"""Per-syscall argument plans: `syscalls.Spec.params` (source strings such as "res", "i0", "p0@0", "s1",
"blob.flags") compiled once per syscall into opcodes the Enricher runs per record, instead of re-parsing the
strings for every record; and what an undelivered record of each syscall still owes the fd table."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from falconet.sensor import syscalls as sc
from falconet.sensor.record import SEG_BLOB, SEG_SOCK, SEG_STR0, SEG_STR1, parse_sockaddr
from falconet.sensor.sockets import blob_field, sockaddr_text

RES, I32, U64, I64, PATH, STR, SOCK, TUPLE, DATA, BLOB, NONE = range(11)
# What Enricher._fd_effects reads from a record's arguments or paths (not only from its raw registers): a record of
# these syscalls needs its arguments built even when its event is not delivered.
_ARGS_FOR_STATE = frozenset({"open", "openat", "openat2", "creat", "memfd_create", "pipe", "pipe2", "socketpair",
                             "chdir"})
# ... and the syscalls whose records change the fd table or the cwd at all (the rest of an undelivered
# record's work is only the process's identity, which _update keeps).
_FD_STATE = _ARGS_FOR_STATE | {"userfaultfd", "bpf", "close", "dup", "dup2", "dup3", "fcntl", "fchdir", "socket"}


class Plan(NamedTuple):
    params: tuple[tuple[str, int, int, str], ...]  # (parameter name, opcode, argument or segment index, key)
    paths: tuple[tuple[str, int, int], ...]  # ("p0"/"p1", segment, dirfd argument index or -1)
    state: bool  # the record can change the fd table (so an undelivered one still goes to Enricher._fd_effects)
    args_for_state: bool  # ... and Enricher._fd_effects needs its decoded arguments for that
    close: bool  # close(2): its only effect is forgetting argument 0 when it succeeded
    opens: bool  # the open family: its effect is Enricher._open
    # (result, arguments, payload segments of a record, its paths as Enricher._paths gives them) -> the event's
    # arguments, in `params` order: one
    # generated expression per syscall (see _builder), so a record pays no loop over opcodes
    build: Callable[[int, tuple[int, ...], tuple[bytes, ...], dict[str, tuple[str, str]]], dict[str, Any]]


PLANS: dict[str, Plan] = {}


def plan_of(spec: sc.Spec) -> Plan:
    plan = PLANS.get(spec.name)
    if plan is None:
        plan = PLANS[spec.name] = _compile(spec)
    return plan


def _compile(spec: sc.Spec) -> Plan:
    """Spec.params' source strings ("res", "i0", "p0@0", "s1", "blob.flags", ...) as opcodes."""
    params: list[tuple[str, int, int, str]] = []
    paths: list[tuple[str, int, int]] = []
    for pname, src in spec.params:
        if src == "res":
            params.append((pname, RES, 0, ""))
        elif src[0] in "iul" and src[1:].isdigit():
            params.append((pname, {"i": I32, "u": U64, "l": I64}[src[0]], int(src[1:]), ""))
        elif src in ("s0", "s1"):
            params.append((pname, STR, SEG_STR0 if src == "s0" else SEG_STR1, ""))
        elif src[0] == "p":
            key, _, dirarg = src.partition("@")
            params.append((pname, PATH, 0, key))
            paths.append((key, SEG_STR0 if key == "p0" else SEG_STR1, int(dirarg) if dirarg else -1))
        elif src == "sock":
            params.append((pname, SOCK, 0, ""))
        elif src == "tuple":
            params.append((pname, TUPLE, 0, ""))
        elif src == "data":
            params.append((pname, DATA, 0, ""))
        elif src.startswith("blob."):
            params.append((pname, BLOB, 0, src[5:]))
        else:
            params.append((pname, NONE, 0, ""))
    state = spec.name in _FD_STATE or spec.sockfd != sc.NO_ARG
    return Plan(tuple(params), tuple(paths), state,
                spec.name in _ARGS_FOR_STATE or spec.sockfd != sc.NO_ARG, spec.name == "close",
                spec.name in ("open", "openat", "openat2", "creat"),
                _builder(spec.name, params))


def _sock(raw: bytes) -> str | None:
    sa = parse_sockaddr(raw)
    return sockaddr_text(sa.family, sa.addr, sa.port) if sa else None


def _text(raw: bytes) -> str | None:
    """Record.text of a segment."""
    return raw.split(b"\0", 1)[0].decode("utf-8", "surrogateescape") if raw else None


def _path(paths: dict[str, tuple[str, str]], key: str) -> str | None:
    got = paths.get(key)
    return got[1] if got else None


# Each opcode as an expression over `res`, `a` (the arguments), `segs` (the payload segments) and `paths`. Signed views of the
# unsigned registers by the xor-subtract identity, inline: a helper call per argument is a measurable share of
# a record's cost. (TUPLE is filled from the fd once known; NONE is a source this version does not read.)
_EXPR: dict[int, Callable[[str, int, str], str]] = {
    RES: lambda _n, _i, _k: "res",
    I32: lambda _n, i, _k: f"((a[{i}] & 0xFFFFFFFF) ^ 0x80000000) - 0x80000000",
    U64: lambda _n, i, _k: f"a[{i}]",
    I64: lambda _n, i, _k: f"(a[{i}] ^ 0x8000000000000000) - 0x8000000000000000",
    PATH: lambda _n, _i, k: f"_path(paths, {k!r})",
    STR: lambda _n, i, _k: f"_text(segs[{i}])",
    SOCK: lambda _n, _i, _k: f"_sock(segs[{SEG_SOCK}])",
    DATA: lambda _n, _i, _k: f"(segs[{SEG_STR1}] or None)",  # absent when the kernel was not asked to copy it
    BLOB: lambda n, _i, k: f"_blob({n!r}, {k!r}, segs[{SEG_BLOB}])",
    TUPLE: lambda _n, _i, _k: "None",
    NONE: lambda _n, _i, _k: "None",
}


def _builder(name: str, params: list[tuple[str, int, int, str]]) -> Callable[
        [int, tuple[int, ...], tuple[bytes, ...], dict[str, tuple[str, str]]], dict[str, Any]]:
    """One function per syscall returning its arguments as a dict display. Generated from our own opcode table
    and the syscall table's parameter names (never from anything a record carries)."""
    items = ", ".join(f"{pname!r}: {_EXPR[op](name, i, key)}" for pname, op, i, key in params)
    namespace: dict[str, Any] = {"_path": _path, "_sock": _sock, "_blob": blob_field, "_text": _text,
                                 "__builtins__": {}}
    source = f"def _build(res, a, segs, paths):\n    return {{{items}}}\n"
    exec(compile(source, f"<falconet args {name}>", "exec"), namespace)  # noqa: S102 - see the docstring
    fn: Callable[[int, tuple[int, ...], tuple[bytes, ...], dict[str, tuple[str, str]]], dict[str, Any]] = (
        namespace["_build"])
    return fn
