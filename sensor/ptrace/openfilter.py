"""The eBPF probe's open-path filter, decided by the tracer: the kernel's decision model of sensor/openfilter.py
(`OpenFilterMaps.keeps`, what probe_openfilter.h decides with the maps Sensor.set_open_prefixes writes) on the
path and flags the tracer reads, so the engine sees the same events under either driver.

With the filter on, the probe keeps back an open no loaded rule can match (clean path covered by no prefix or
suffix for the open's kind, and not a directory fd), marks its fd hidden for the process, and keeps back that
fd's close. The tracer judges the path at the seccomp stop (one read of at most PATH_SCAN_MAX bytes: longer
paths are never kept back). With a rule on close it learns the fd number and makes the directory check at the
exit stop (only there is the fd known), and drops a hidden fd's close at its seccomp stop; with none, the open
skips its exit stop and closes of fds the engine cannot know are dropped (sensor/ptrace/stoploop_fds.h).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from falconet.sensor import openfilter as model

OPEN_READ, OPEN_WRITE, OPEN_OTHER, OPEN_KEEP = 1, 2, 4, model.OPEN_KEEP
PATH_SCAN_MAX = model.PATH_SCAN_MAX
SEEN_MAX = 4096
_FLAGS_ARG = {"open": 1, "openat": 2}  # where the flags are (openat2's are in a struct: never kept back)


def open_need(name: str, args: tuple[int, ...]) -> int:
    """The kinds an open needs covered (probe_openfilter.h open_need), from the syscall's name and arguments."""
    at = _FLAGS_ARG.get(name)
    return model.open_need(name, args[at] if at is not None else 0)


@dataclass(frozen=True, slots=True)
class OpenFilter:
    """One rules load's maps, and the decisions made with them so far."""

    maps: model.OpenFilterMaps
    seen: dict[tuple[bytes, int], bool] = field(default_factory=dict, compare=False)
    """Decisions by (path, need): workloads open the same few paths again and again (the tracer's thread
    only; emptied when full)."""

    @staticmethod
    def build(prefixes: Iterable[str] | Mapping[str, Iterable[str]]) -> OpenFilter:
        """The filter for what Engine.open_path_prefixes() gave (its atoms: prefixes and `*` suffixes)."""
        return OpenFilter(model.compile_maps(prefixes))

    def drops(self, path: bytes | None, need: int) -> bool:
        """Whether the probe keeps this open back (path as read, without its NUL; None when unreadable)."""
        if path is None or need & OPEN_KEEP:
            return False
        key = (path, need)
        known = self.seen.get(key)
        if known is None:
            if len(self.seen) >= SEEN_MAX:
                self.seen.clear()
            known = self.seen[key] = not self.maps.keeps(path, need)
        return known
