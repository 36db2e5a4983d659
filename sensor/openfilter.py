"""The open-path filter's maps, and a model of what the kernel decides with them (sensor/probe_openfilter.h).

The rules side (rules/open_prefixes.py) says which opens some rule may match: atoms, each with the open kinds
it covers; a prefix (`/etc/`) or, written with a leading `*`, a suffix (`*/shadow`: the base name is shadow,
`*release_agent`). This module turns them into what the BPF program reads, so a rule reload only rewrites
maps (no new program): the prefix trie (each entry OR-ing in the kinds of its shorter prefixes, since the
kernel's lookup returns only the longest match), a hash of suffixes keyed by their length and bytes, and the
few suffix lengths the kernel tries (with the kinds any suffix of that length covers, so a read-only open
skips the lengths only write rules use). The kernel has room for SUFFIX_LENS lengths of at most SUFFIX_MAX
bytes: a longer suffix is cut to its last bytes and, with too many lengths, suffixes are cut to a shorter
length in use; a shorter suffix matches more paths, so both only make the filter keep more.

`OpenFilterMaps.keeps` is the kernel's decision in Python; the tests prove it conservative against the rule
engine and check it against the live kernel.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from falconet.model import prefilter

OPEN_KINDS = {"read": 1, "write": 2, "other": 4}  # the kind bits of probe_openfilter.h (OPEN_READ, ...)
OPEN_KEEP = 8  # an open the filter never keeps back
# probe_openfilter.h's limits, shared with the event gates' path atoms (model/prefilter.py)
PREFIX_MAX = prefilter.PREFIX_MAX  # prefixes are matched on their first PREFIX_MAX bytes
PATH_SCAN_MAX = prefilter.PATH_SCAN_MAX  # paths of PATH_SCAN_MAX - 3 bytes or more are never kept back
SUFFIX_MAX = prefilter.SUFFIX_MAX  # suffixes are matched on their last SUFFIX_MAX bytes
SUFFIX_LENS = 8
HEAD_LEN = 8  # the kernel caches the prefix trie's answer by a path's first HEAD_LEN bytes
HEAD_LONG = 0x80  # probe_openfilter.h: a cached head some longer atom starts with (the trie decides)
SUFFIX_MARK = "*"
# Flags that change nothing a rule can ask about an open beyond its read/write kind (OPEN_QUIET_FLAGS).
QUIET_FLAGS = 0o4000 | 0o100000 | 0o200000 | 0o400000 | 0o400 | 0o1000000 | 0o2000000
O_DIRECTORY, O_PATH = 0o200000, 0o10000000

Spec = Iterable[str] | Mapping[str, Iterable[str]]


@dataclass(frozen=True, slots=True)
class OpenFilterMaps:
    """What Sensor.set_open_prefixes writes: trie entries, suffix entries and the suffix lengths to try."""

    prefixes: dict[bytes, int]
    suffixes: dict[bytes, int]
    lengths: tuple[tuple[int, int], ...]  # (length, kinds of its suffixes), at most SUFFIX_LENS

    def long_heads(self) -> set[bytes]:
        """The first HEAD_LEN bytes of every prefix longer than that (probe_openfilter.h's open_long_heads):
        the kernel caches the trie's answer by a path's first HEAD_LEN bytes only when none of these is them."""
        return {raw[:HEAD_LEN] for raw in self.prefixes if len(raw) > HEAD_LEN}

    def keeps(self, path: bytes, need: int) -> bool:
        """Would the kernel emit this open (path as passed, without its NUL; need from open_need)?"""
        if need & OPEN_KEEP or not clean(path):
            return True
        covers = 0
        best = -1
        head = path[:PREFIX_MAX]
        for raw, mask in self.prefixes.items():
            if head.startswith(raw) and len(raw) > best:
                best, covers = len(raw), mask
        if covers & need:
            return True
        for length, kinds in self.lengths:
            if kinds & need and length <= len(path) and self.suffixes.get(path[-length:], 0) & need:
                return True
        return False


def clean(path: bytes) -> bool:
    """probe_openfilter.h's path_clean (model/prefilter.py's path_clean, which the event gates share)."""
    return prefilter.path_clean(path)


def open_need(syscall: str, flags: int) -> int:
    """probe_openfilter.h's open_need: the kinds an open needs covered, from its syscall and flags."""
    if syscall == "creat":
        return 2 | 4
    if syscall not in ("open", "openat") or flags & (O_DIRECTORY | O_PATH):
        return OPEN_KEEP
    acc = flags & 3
    need = (1 if acc in (0, 2) else 0) | (2 if acc in (1, 2) else 0) | (4 if flags & ~(3 | QUIET_FLAGS) else 0)
    return need or 4


def compile_maps(spec: Spec) -> OpenFilterMaps:
    """The maps for atoms -> kind names (or bare atoms, each covering every kind)."""
    items = spec.items() if isinstance(spec, Mapping) else ((p, OPEN_KINDS) for p in spec)
    own: dict[bytes, int] = {}
    sufs: dict[bytes, int] = {}
    for atom, kinds in items:
        mask = 0
        for kind in kinds:
            if kind not in OPEN_KINDS:
                raise ValueError(f"unknown open kind {kind!r} for {atom!r}; expected read, write or other")
            mask |= OPEN_KINDS[kind]
        if atom.startswith(SUFFIX_MARK):
            raw = atom[1:].encode("utf-8", "surrogateescape")[-SUFFIX_MAX:]
            if not raw:
                own[b""] = own.get(b"", 0) | mask  # ends with "": every path
                continue
            sufs[raw] = sufs.get(raw, 0) | mask
        else:
            raw = atom.encode("utf-8", "surrogateescape")[:PREFIX_MAX]
            own[raw] = own.get(raw, 0) | mask
    prefixes = {raw: mask | _or_shorter(own, raw) for raw, mask in own.items()}
    suffixes, lengths = fit_suffixes(sufs)
    return OpenFilterMaps(prefixes, suffixes, lengths)


def _or_shorter(own: dict[bytes, int], raw: bytes) -> int:
    out = 0
    for other, mask in own.items():
        if len(other) < len(raw) and raw.startswith(other):
            out |= mask
    return out


def fit_suffixes(sufs: dict[bytes, int], most: int = SUFFIX_LENS) -> tuple[dict[bytes, int], tuple[tuple[int, int], ...]]:
    """At most `most` distinct lengths: the shortest always (every suffix can be cut to it), then the
    lengths most suffixes have; each suffix is cut to the longest kept length not above its own."""
    by_len: dict[int, int] = {}
    for raw in sufs:
        by_len[len(raw)] = by_len.get(len(raw), 0) + 1
    if not by_len:
        return {}, ()
    shortest = min(by_len)
    rest = sorted((n for n in by_len if n != shortest), key=lambda n: (-by_len[n], -n))
    kept = sorted([shortest, *rest[: most - 1]])
    out: dict[bytes, int] = {}
    for raw, mask in sufs.items():
        length = max(n for n in kept if n <= len(raw))
        cut = raw[-length:]
        out[cut] = out.get(cut, 0) | mask
    kinds: dict[int, int] = {}
    for raw, mask in out.items():
        kinds[len(raw)] = kinds.get(len(raw), 0) | mask
    return out, tuple(sorted(kinds.items()))
