"""The event gates' maps (sensor/probe_eventgate.h), which syscalls they may apply to, and a model of what the
kernel decides with them.

The rules side (rules/event_gates.py) says, per event type, the result classes, uids and comms of the events
some rule may match (model/prefilter.py's EventGate). Only a syscall with no state role may be kept back on
that ground: an exec, fork, chdir or any syscall that changes the fd table (opens, closes, dups, sockets...)
always reaches user space, whose tables must stay right whatever the rules say (the open family has its own
path filter, sensor/openfilter.py). A gate becomes an entry of the `gates` array (per syscall: the result
classes kept, and for uid and comm whether the value must be in the syscall's set, out of it, or anything)
and entries of the `gate_values` hash ((syscall, kind, value) -> 1). One string argument per syscall (a path or
string the kernel reads from a register's pointer) may be bounded by atoms: prefixes in the `gate_prefixes` LPM
trie and suffixes in the `gate_suffixes` hash, keyed by the syscall, with the suffix lengths to try in the
syscall's entry; the kernel judges only a string that is absolute and lexically clean (model/prefilter.py's
path_clean) and passes any other. One numeric argument per syscall may be bounded by a bit mask it must share a
bit with (`bitsmask`, from `evt.arg.mode contains S_ISUID`). A rule reload rewrites the maps, never the program.

`GateMaps.keeps` is the kernel's decision in Python; the tests prove it conservative against the rule engine
and check it against the live kernel.
"""

from __future__ import annotations

import ctypes
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from falconet.model.prefilter import (
    PREFIX_MAX,
    RES_ANY,
    SUFFIX_MAX,
    EventGate,
    ValueSet,
    path_clean,
    result_class,
)
from falconet.sensor import syscalls as sc
from falconet.sensor.argplan import plan_of
from falconet.sensor.openfilter import fit_suffixes

KIND_UID = 1  # probe_eventgate.h GATE_UID
KIND_COMM = 2  # GATE_COMM
KIND_ARG = 3  # GATE_ARG
CONV_U64, CONV_I32, CONV_I64 = 0, 1, 2  # how user space reads the argument's register (sensor/argplan.py)
_CONVS = {"u": CONV_U64, "i": CONV_I32, "l": CONV_I64}
MODE_ANY, MODE_IN, MODE_OUT = 0, 1, 2  # the value must be: anything, in the set, out of it
COMM_LEN = 16  # the kernel's comm buffer (TASK_COMM_LEN), NUL-padded
VALUES_MAX = 4096  # probe_eventgate.h: entries of gate_values
ARG_VALUES_MAX = 64  # an argument bound with more values is not checked (all gateable syscalls' fit the hash)
PATH_SUFFIX_LENS = 4  # probe_eventgate.h GATE_SUFFIX_LENS: suffix lengths tried per syscall
PATH_ATOMS_MAX = 1024  # probe_eventgate.h: entries of gate_prefixes, and of gate_suffixes


def gateable(name: str) -> bool:
    """May the kernel keep back events of this syscall on the rules' say-so alone (it has no state role)?"""
    spec = sc.BY_NAME.get(name)
    if spec is None or name in sc.PROCESS_STATE or name in sc.FD_STATE:
        return False
    return not (spec.exec or spec.forks or spec.pathfilter or spec.fdeffect or plan_of(spec).state)


def comm_key(name: str) -> bytes:
    """The kernel's comm bytes for a proc.name (the analysis only passes names that fit)."""
    return name.encode("utf-8")[: COMM_LEN - 1].ljust(COMM_LEN, b"\0")


def register_params(name: str) -> dict[str, tuple[int, int]]:
    """The syscall's parameters whose value is one argument register: name -> (argument index, CONV_*)."""
    out: dict[str, tuple[int, int]] = {}
    for pname, src in sc.BY_NAME[name].params:
        if len(src) == 2 and src[0] in _CONVS and src[1].isdigit():
            out[pname] = (int(src[1]), _CONVS[src[0]])
    return out


def string_params(name: str) -> dict[str, int]:
    """The syscall's string parameters the kernel reads (sources s0/s1/p0/p1): name -> argument index of the
    pointer (sysconf's str0/str1)."""
    spec = sc.BY_NAME[name]
    out: dict[str, int] = {}
    for pname, src in spec.params:
        index = {"s0": spec.str0, "p0": spec.str0, "s1": spec.str1, "p1": spec.str1}.get(src.partition("@")[0])
        if index is not None and index < 4:  # (probe_eventgate.h reads the pointer from arguments 0-3)
            out[pname] = index
    return out


def arg_value(conv: int, raw: int) -> int:
    """A register's value as user space reads it (Event.args): sensor/enricher.py's I32, U64, I64."""
    raw &= (1 << 64) - 1
    if conv == CONV_I32:
        raw &= 0xFFFFFFFF
        return raw - (1 << 32) if raw & 0x80000000 else raw
    if conv == CONV_I64:
        return raw - (1 << 64) if raw & (1 << 63) else raw
    return raw


def arg_key(value: int) -> bytes:
    """The gate_values data of an argument's value (as the kernel converts it: 8 bytes, two's complement)."""
    return (value & ((1 << 64) - 1)).to_bytes(8, "little").ljust(COMM_LEN, b"\0")


def _representable(conv: int, value: int) -> bool:
    if conv == CONV_I32:
        return -(1 << 31) <= value < 1 << 31
    if conv == CONV_I64:
        return -(1 << 63) <= value < 1 << 63
    return 0 <= value < 1 << 64


@dataclass(frozen=True, slots=True)
class GateEntry:
    """One syscall's `gates` entry: result classes kept, the uid and comm modes, and one argument's bound
    (its mode, argument index and conversion)."""

    result: int
    uid: int
    comm: int
    arg: int = MODE_ANY
    argidx: int = 0
    argconv: int = CONV_U64
    path: int = MODE_ANY  # MODE_IN: a clean string at argument `pathidx` must hold a prefix or suffix atom
    pathidx: int = 0
    lens: tuple[int, ...] = ()  # the suffix lengths tried, at most PATH_SUFFIX_LENS
    bitsmask: int = 0  # not 0: argument `bitsidx`, read as `bitsconv` says, must have one of these bits
    bitsidx: int = 0
    bitsconv: int = CONV_U64


@dataclass(frozen=True, slots=True)
class GateMaps:
    """What Sensor.set_event_gates writes: per syscall number its entry, the (nr, kind, value) set, and the
    path atoms ((nr, prefix bytes) and (nr, suffix bytes))."""

    entries: dict[int, GateEntry]
    values: frozenset[tuple[int, int, bytes]]
    prefixes: frozenset[tuple[int, bytes]] = frozenset()
    suffixes: frozenset[tuple[int, bytes]] = frozenset()

    def keeps(self, nr: int, res: int, uid: int, comm: bytes, args: tuple[int, ...] = (0,) * 6,
              strings: Mapping[int, bytes | None] | None = None) -> bool:
        """Would the kernel emit this syscall's record (result, the caller's uid, its 16 comm bytes, the six
        argument registers, and the strings the argument pointers point to by argument index: None or
        missing when unreadable)?"""
        e = self.entries.get(nr)
        if e is None:
            return True
        if not e.result & result_class(res):
            return False
        for mode, kind, raw in ((e.uid, KIND_UID, uid.to_bytes(4, "little").ljust(COMM_LEN, b"\0")),
                                (e.comm, KIND_COMM, comm),
                                (e.arg, KIND_ARG, arg_key(arg_value(e.argconv, args[e.argidx])))):
            if mode != MODE_ANY and ((nr, kind, raw) in self.values) != (mode == MODE_IN):
                return False
        if e.bitsmask and not arg_value(e.bitsconv, args[e.bitsidx]) & e.bitsmask:
            return False
        if e.path != MODE_ANY:
            text = (strings or {}).get(e.pathidx)
            if text is not None and path_clean(text) and not self._covered(nr, e.lens, text):
                return False
        return True

    def _covered(self, nr: int, lens: tuple[int, ...], path: bytes) -> bool:
        head = path[:PREFIX_MAX]
        if any(n == nr and head.startswith(p) for n, p in self.prefixes):
            return True
        return any(n <= len(path) and (nr, path[-n:]) in self.suffixes for n in lens)


def _one_arg(name: str, gate: EventGate) -> tuple[int, int, ValueSet[int]] | None:
    """The argument bound the kernel checks (it has room for one): the smallest finite set, else the first
    (index, conversion, values); None when the gate bounds no register parameter. A bound on a value no
    register holds can be left out: it only keeps more."""
    params = register_params(name)
    bounds = [(v.cofinite, len(v.items), n, v) for n, v in gate.args if n in params and not v.is_any]
    if not bounds:
        return None
    _, _, pname, values = min(bounds, key=lambda b: (b[0], b[1], b[2]))
    if len(values.items) > ARG_VALUES_MAX:
        return None
    index, conv = params[pname]
    return index, conv, values


def _mode(values: ValueSet[int] | ValueSet[str]) -> int:
    return MODE_ANY if values.is_any else MODE_OUT if values.cofinite else MODE_IN


def compile_gates(gates: Mapping[str, EventGate]) -> GateMaps:
    """The maps for these gates; a syscall that is not gateable, or whose gate keeps everything, gets no
    entry. When the values do not fit the kernel's hash, the kinds with the most values are dropped (any
    value passes), which only keeps more."""
    chosen: dict[int, EventGate] = {}
    for name, gate in sorted(gates.items()):
        if not gateable(name):
            continue
        spec = sc.BY_NAME[name]
        if spec.credsbefore:
            # unshare/setns: the record's uid is the caller's before the syscall, not what the kernel reads
            # at its exit
            gate = EventGate(gate.result, ValueSet(True, frozenset()), gate.comm)
        params = register_params(name)
        strs = string_params(name)
        gate = EventGate(gate.result, gate.uid, gate.comm, tuple((n, v) for n, v in gate.args if n in params),
                         tuple((n, a) for n, a in gate.paths if n in strs),
                         tuple((n, m) for n, m in gate.bits if n in params and 0 < m < 1 << 63))
        if not gate.keeps_all:
            chosen[spec.nr] = gate
    sizes = [(len(g.comm.items), nr, KIND_COMM) for nr, g in chosen.items() if not g.comm.is_any]
    sizes += [(len(g.uid.items), nr, KIND_UID) for nr, g in chosen.items() if not g.uid.is_any]
    args = {nr: _one_arg(sc.BY_NR[nr].name, g) for nr, g in chosen.items()}
    paths = _path_atoms(chosen)
    # argument sets are small (ARG_VALUES_MAX each); uid and comm sets share the rest of the hash
    total = sum(n for n, _, _ in sizes) + sum(len(a[2].items) for a in args.values() if a is not None)
    dropped: set[tuple[int, int]] = set()
    for n, nr, kind in sorted(sizes, reverse=True):
        if total <= VALUES_MAX:
            break
        dropped.add((nr, kind))
        total -= n
    entries: dict[int, GateEntry] = {}
    values: set[tuple[int, int, bytes]] = set()
    prefixes: set[tuple[int, bytes]] = set()
    suffixes: set[tuple[int, bytes]] = set()
    for nr, g in chosen.items():
        uid_mode = MODE_ANY if (nr, KIND_UID) in dropped else _mode(g.uid)
        comm_mode = MODE_ANY if (nr, KIND_COMM) in dropped else _mode(g.comm)
        arg = args[nr]
        arg_mode = MODE_ANY if arg is None else _mode(arg[2])
        path = paths.get(nr)
        bits = min(g.bits, key=lambda b: (b[1].bit_count(), b[0]), default=None)
        if (g.result == RES_ANY and uid_mode == MODE_ANY and comm_mode == MODE_ANY and arg_mode == MODE_ANY
                and path is None and bits is None):
            continue
        argidx, argconv = (0, CONV_U64) if arg is None else (arg[0], arg[1])
        pathidx, lens = (0, ()) if path is None else (path[0], path[3])
        bitsmask, (bitsidx, bitsconv) = (0, (0, CONV_U64)) if bits is None else (
            bits[1], register_params(sc.BY_NR[nr].name)[bits[0]])
        entries[nr] = GateEntry(g.result, uid_mode, comm_mode, arg_mode, argidx, argconv,
                                MODE_ANY if path is None else MODE_IN, pathidx, lens, bitsmask, bitsidx, bitsconv)
        if arg is not None:
            values |= {(nr, KIND_ARG, arg_key(v)) for v in arg[2].items if _representable(arg[1], v)}
        if path is not None:
            prefixes |= {(nr, p) for p in path[1]}
            suffixes |= {(nr, x) for x in path[2]}
        if uid_mode != MODE_ANY:
            values |= {(nr, KIND_UID, u.to_bytes(4, "little").ljust(COMM_LEN, b"\0")) for u in g.uid.items
                       if 0 <= u < 1 << 32}
        if comm_mode != MODE_ANY:
            values |= {(nr, KIND_COMM, comm_key(c)) for c in g.comm.items}
    return GateMaps(entries, frozenset(values), frozenset(prefixes), frozenset(suffixes))


PathAtoms = tuple[int, frozenset[bytes], frozenset[bytes], tuple[int, ...]]
"""(argument index, prefix bytes, suffix bytes, suffix lengths) of one syscall's path bound."""


def _path_atoms(chosen: Mapping[int, EventGate]) -> dict[int, PathAtoms]:
    """Per syscall the one string bound the kernel checks (it has room for one): the one with the fewest atoms.
    Prefixes are cut to PREFIX_MAX bytes and suffixes to SUFFIX_MAX, then suffixes to at most PATH_SUFFIX_LENS
    lengths (the shortest always, each cut to the longest length kept not above its own); cutting only makes
    an atom hold more paths. When the atoms do not fit the kernel's maps, the largest bounds are dropped
    (any string passes)."""
    out: dict[int, PathAtoms] = {}
    for nr, g in chosen.items():
        strs = string_params(sc.BY_NR[nr].name)
        bounds = sorted((len(a), n, a) for n, a in g.paths if n in strs)
        if not bounds:
            continue
        _, pname, atoms = bounds[0]
        pre = frozenset(a.encode("utf-8", "surrogateescape")[:PREFIX_MAX] for a in atoms if not a.startswith("*"))
        suf = {a[1:].encode("utf-8", "surrogateescape")[-SUFFIX_MAX:] for a in atoms if a.startswith("*")}
        if b"" in pre or b"" in suf:
            continue  # an atom every path holds
        cut, lengths = fit_suffixes(dict.fromkeys(suf, 1), PATH_SUFFIX_LENS)
        out[nr] = (strs[pname], pre, frozenset(cut), tuple(n for n, _ in lengths))
    for nr in sorted(out, key=lambda k: -(len(out[k][1]) + len(out[k][2]))):
        if sum(len(v[1]) for v in out.values()) <= PATH_ATOMS_MAX and \
                sum(len(v[2]) for v in out.values()) <= PATH_ATOMS_MAX:
            break
        del out[nr]
    return out



def write_path_atoms(prefixes: Any, suffixes: Any, maps: GateMaps) -> None:
    """Fills bcc's gate_prefixes trie and gate_suffixes hash (both emptied by the caller) from the maps."""
    for nr, raw in maps.prefixes:
        key = prefixes.Key()
        key.prefixlen, key.nr = 32 + len(raw) * 8, nr
        for i, byte in enumerate(raw):
            key.data[i] = byte
        prefixes[key] = ctypes.c_uint8(1)
    for nr, raw in maps.suffixes:
        skey = suffixes.Key()
        skey.nr, skey.len = nr, len(raw)
        for i, byte in enumerate(raw):
            skey.data[i] = byte
        suffixes[skey] = ctypes.c_uint8(1)
