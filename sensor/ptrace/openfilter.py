"""The eBPF probe's open-path filter (probe_openfilter.h's open_need and path_filtered), decided by the tracer.

With the filter on, the probe keeps back an open no loaded rule can match (absolute, lexically clean path
under no prefix covering the open's kind, and not a directory fd), marks its fd hidden for the process, and
keeps back that fd's close. The tracer makes the same decisions so the engine sees the same events under
either driver: the path is judged at the seccomp stop (one read of at most PATH_SCAN_MAX bytes), the fd
number and the directory check come at the exit stop, and a hidden fd's close is dropped at its seccomp stop.

The prefix masks are the sensor's own (`_prefix_masks`, what Sensor.set_open_prefixes writes into the trie);
the comparisons below mirror the C code line for line, bounds included (PREFIX_MAX, PATH_SCAN_MAX).
An atom this model does not know (anything not an absolute path prefix) turns the filter off: keeping more is
always sound.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from falconet.sensor.sensor import _prefix_masks

OPEN_READ, OPEN_WRITE, OPEN_OTHER, OPEN_KEEP = 1, 2, 4, 8
QUIET_FLAGS = 0o4000 | 0o100000 | 0o200000 | 0o400000 | 0o400 | 0o1000000 | 0o2000000
O_DIRECTORY, O_PATH = 0o200000, 0o10000000
PREFIX_MAX = 64  # probe.c
PATH_SCAN_MAX = 256  # probe.c: a path this long (with its NUL) or longer is never kept back
SEEN_MAX = 4096


def open_need(how: int, args: tuple[int, ...]) -> int:
    """The kinds an open needs covered (probe_openfilter.h open_need); `how` is Spec.pathfilter."""
    if how == 1:
        flags = args[1]
    elif how == 2:
        flags = args[2]
    elif how == 4:
        return OPEN_WRITE | OPEN_OTHER
    else:
        return OPEN_KEEP
    if flags & (O_DIRECTORY | O_PATH):
        return OPEN_KEEP
    acc = flags & 3
    need = (OPEN_READ if acc in (0, 2) else 0) | (OPEN_WRITE if acc in (1, 2) else 0)
    if flags & ~(3 | QUIET_FLAGS):
        need |= OPEN_OTHER
    return need or OPEN_OTHER


@dataclass(frozen=True, slots=True)
class OpenFilter:
    """The trie's entries (prefix bytes -> kinds, each with its shorter prefixes' kinds OR-ed in)."""

    masks: tuple[tuple[bytes, int], ...]  # longest first
    seen: dict[tuple[bytes, int], bool] = field(default_factory=dict, compare=False)
    """Decisions by (path, need): workloads open the same few paths again and again (the tracer's thread
    only; emptied when full)."""

    @staticmethod
    def build(prefixes: Iterable[str] | Mapping[str, Iterable[str]]) -> OpenFilter | None:
        """The filter for what Engine.open_path_prefixes() gave; None (filter off) for an atom it cannot judge."""
        masks = _prefix_masks(prefixes)
        if any(raw and not raw.startswith(b"/") for raw in masks):
            return None
        return OpenFilter(tuple(sorted(masks.items(), key=lambda item: -len(item[0]))))

    def drops(self, path: bytes | None, need: int) -> bool:
        """Whether the probe keeps this open back (path as read, without its NUL; None when unreadable)."""
        if path is None or need & OPEN_KEEP:
            return False
        key = (path, need)
        known = self.seen.get(key)
        if known is None:
            if len(self.seen) >= SEEN_MAX:
                self.seen.clear()
            known = self.seen[key] = self._decide(path, need)
        return known

    def _decide(self, path: bytes, need: int) -> bool:
        size = len(path) + 1  # put_user_str's count, NUL included
        if size < 2 or size > PATH_SCAN_MAX or path[0] != 0x2F:
            return False
        if not _clean(path, size):
            return False
        head = path[:PREFIX_MAX]
        for raw, covers in self.masks:
            if head.startswith(raw):
                return not covers & need
        return True


_UNCLEAN = (b"//", b"/./", b"/.\0", b"/../", b"/..\0")


def _clean(path: bytes, size: int) -> bool:
    """No `//`, `/./` or `/../` (nor a trailing `/.` or `/..`) at a slash the probe scans: every slash of a
    path shorter than PATH_SCAN_MAX - 3 bytes, else those at the first PATH_SCAN_MAX - 3 positions."""
    if size <= PATH_SCAN_MAX - 3:
        whole = path + b"\0"
        return not any(bad in whole for bad in _UNCLEAN)
    padded = path + b"\0\0\0\0"
    for i in range(PATH_SCAN_MAX - 3):
        if padded[i] != 0x2F:
            continue
        c1, c2, c3 = padded[i + 1], padded[i + 2], padded[i + 3]
        if c1 == 0x2F or (c1 == 0x2E and (c2 in (0x2F, 0) or (c2 == 0x2E and c3 in (0x2F, 0)))):
            return False
    return True
