"""The record cuts (sensor/probe_recut.h): which records of syscalls with a state role the kernel may keep, and a
model of what it decides with them.

The event gates (sensor/eventgate.py) never apply to a syscall with a state role, since the fd and process
tables depend on its records. But many such records change nothing there, and when no loaded rule can match
them either, the kernel need not send them. A record of a real build (bench/build_workload.py, the xz-utils
tree under the default rules) is 68% failed opens (the compiler's include-path search); fcntl's F_GETFL and
F_SETFL and the parent's side of each fork add another 6%. The cuts, per syscall:

- FAIL (a result < 0 is cut): for the syscalls in FAIL_INERT, whose failure the Enricher turns into no change
  of any table (sensor/enricher.py: an open adds an fd only for a result >= 0, close forgets one only for 0, a
  dup, fcntl, pipe, socket, accept, bind, chdir or fork changes something only when it succeeded). Allowed when
  the type is not delivered (its record only keeps the tables), or when the rules' gate for the type
  (rules/event_gates.py, the union over the type's candidate rules) has no negative result class.
- QUIET (any record is cut unless an argument has one of a few values): only for a type that is not delivered,
  for the syscalls in QUIET_KEEP: fcntl unless its command is F_DUPFD, F_DUPFD_CLOEXEC or F_SETFD (the only ones
  the Enricher's fd table applies), and the fork family's record in the parent (its child's record is the
  kernel's REC_FORK, which the Enricher applies, with the parent's identity of that moment, before it).

What such a record still did in user space is refresh its process's identity (comm, credentials: the Enricher
takes them from every record); as with the event gates, the next record of the process brings them. Exec
records are never cut (EXECARGS and the exec's record are joined). The cuts are on only with the event gates
(the daemon's `sensor.open_path_filter` switch): `compute` returns nothing without gates.
"""

from __future__ import annotations

import ctypes
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from falconet.model.prefilter import RES_NEG, EventGate
from falconet.sensor import syscalls as sc

CUT_FAIL = 1  # probe_recut.h RECUT_FAIL
CUT_QUIET = 2  # RECUT_QUIET
VALS_MAX = 4  # RECUT_VALS

F_DUPFD, F_SETFD, F_DUPFD_CLOEXEC = 0, 2, 1030

# A failed call of these leaves the Enricher's tables as they were (checked against _fd_effects and _open by
# tests/sensor/test_recut.py). Not connect: a non-blocking connect's EINPROGRESS is a failure that names the fd.
FAIL_INERT = frozenset({
    "open", "openat", "openat2", "creat", "close", "dup", "dup2", "dup3", "fcntl", "socket", "accept", "accept4",
    "bind", "pipe", "pipe2", "socketpair", "memfd_create", "userfaultfd", "bpf", "chdir", "fchdir", "clone",
    "clone3", "fork", "vfork",
})
# syscall -> (argument index, the values whose records are kept) when its type is not delivered.
QUIET_KEEP: dict[str, tuple[int, tuple[int, ...]]] = {
    "fcntl": (1, (F_DUPFD, F_SETFD, F_DUPFD_CLOEXEC)),
    "clone": (0, ()),
    "clone3": (0, ()),
    "fork": (0, ()),
    "vfork": (0, ()),
}


@dataclass(frozen=True, slots=True)
class Cut:
    """One syscall's entry of `recuts`."""

    how: int
    argidx: int = 0
    vals: tuple[int, ...] = ()

    def keeps(self, res: int, args: tuple[int, ...]) -> bool:
        """The kernel's decision for a record with this result and these argument registers."""
        if self.how & CUT_FAIL and res < 0:
            return False
        if not self.how & CUT_QUIET:
            return True
        return (args[self.argidx] & 0xFFFFFFFF) in self.vals


def compute(wanted: frozenset[str] | None, gates: Mapping[str, EventGate] | None) -> dict[int, Cut]:
    """syscall number -> its cut, for these delivered types (None: every type) and the rules' gates (None: the
    filters are off, so nothing is cut)."""
    if gates is None or wanted is None:
        return {}
    out: dict[int, Cut] = {}
    for name in sorted(FAIL_INERT):
        spec = sc.BY_NAME.get(name)
        if spec is None or spec.exec:
            continue
        if name not in wanted:
            quiet = QUIET_KEEP.get(name)
            if quiet is None:
                out[spec.nr] = Cut(CUT_FAIL)
            else:
                out[spec.nr] = Cut(CUT_FAIL | CUT_QUIET, quiet[0], quiet[1])
            continue
        gate = gates.get(name)
        if gate is not None and not gate.result & RES_NEG:
            out[spec.nr] = Cut(CUT_FAIL)
    return out


def write(table: Any, cuts: Mapping[int, Cut]) -> None:
    """Writes `recuts` (bcc's array of probe_recut.h's struct recut): every syscall's entry, the cut ones set.
    A syscall whose cut goes away is cleared in the same pass; the caller orders it with the sysconf write."""
    for spec in sc.BY_NAME.values():
        leaf = table.Leaf()
        cut = cuts.get(spec.nr)
        if cut is not None:
            if len(cut.vals) > VALS_MAX:
                raise ValueError(f"{spec.name}: at most {VALS_MAX} kept values")
            leaf.how, leaf.argidx, leaf.nvals = cut.how, cut.argidx, len(cut.vals)
            for i, v in enumerate(cut.vals):
                leaf.vals[i] = v
        table[ctypes.c_int(spec.nr)] = leaf
