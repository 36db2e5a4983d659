"""Which container a process is in, from its cgroup path: the one fact every container field hangs on.

The kernel hands the sensor the cgroup path of a process at exec and clone (see probe.c); this module turns it
into the runtime's container reference. Runtimes name their cgroups differently (the systemd driver's
`<runtime>-<id>.scope` units, the cgroupfs driver's bare ids, Podman's `libpod-<id>`), and cgroup v1, hybrid
and v2 hosts put them under different roots, so the leaf patterns are matched from the leaf upwards.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

HOST_ID = "host"
"""container.id (and container.full_id, container.type) of a process that is in no container."""


@dataclass(frozen=True, slots=True)
class ContainerRef:
    """A container as its cgroup names it; the runtime clients look the rest up by `full_id`."""

    type: str  # Falco's container.type: docker, podman, containerd, cri-o, ...
    full_id: str  # the runtime's 64-hex id

    @property
    def id(self) -> str:
        """Falco's container.id: the first 12 characters of the full id."""
        return self.full_id[:12]


# Leaf names (systemd and cgroupfs drivers) -> runtime type; the id is the 64-hex part.
_LEAF_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^docker-([0-9a-f]{64})\.scope$"), "docker"),
    (re.compile(r"^cri-containerd-([0-9a-f]{64})\.scope$"), "containerd"),
    (re.compile(r"^crio-([0-9a-f]{64})\.scope$"), "cri-o"),
    (re.compile(r"^libpod-([0-9a-f]{64})(?:\.scope)?$"), "podman"),
    (re.compile(r"^([0-9a-f]{64})$"), "docker"),
)


def container_from_cgroup(path: str | None) -> ContainerRef | None:
    """The container a cgroup path names, or None for a host process (or an unknown layout)."""
    if not path:
        return None
    for part in reversed(path.strip("/").split("/")):
        for pattern, runtime in _LEAF_PATTERNS:
            m = pattern.match(part)
            if m:
                return ContainerRef(runtime, m.group(1))
    return None


def container_id_from_cgroup(path: str | None) -> str:
    """Falco's 12-character container.id from a cgroup path (or its leaf); "host" when it names none."""
    ref = container_from_cgroup(path)
    return ref.id if ref else HOST_ID
