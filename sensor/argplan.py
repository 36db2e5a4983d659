"""Per-syscall argument plans: `syscalls.Spec.params` (source strings such as "res", "i0", "p0@0", "s1",
"blob.flags") compiled once per syscall into opcodes the Enricher runs per record, instead of re-parsing the
strings for every record; and what an undelivered record of each syscall still owes the fd table."""

from __future__ import annotations

from typing import NamedTuple

from falconet.sensor import syscalls as sc
from falconet.sensor.record import SEG_STR0, SEG_STR1

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
                 spec.name in _ARGS_FOR_STATE or spec.sockfd != sc.NO_ARG, spec.name == "close")
