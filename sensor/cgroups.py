"""Which container a process is in, from its cgroup path: the one fact every container field hangs on.

The kernel hands the sensor, at every successful exec, the host-side cgroup path of the new image in two
hierarchies: the default (v2, "unified") one and one cgroup v1 controller's (see probe.c and
`v1_controller`), because on hybrid and v1 hosts a runtime may leave the unified hierarchy alone. This module
turns such a path into the runtime's container reference. Runtimes name their cgroups differently:

- the systemd driver makes `<prefix>-<id>.scope` units: `docker-`, `libpod-` (Podman, rootful under
  machine.slice and rootless under user@UID.service), `cri-containerd-` (the Kubernetes CRI plugin, inside
  `kubepods-<qos>-pod<uid>.slice`), `crio-` (CRI-O; its `crio-conmon-` monitor is a host process);
- the cgroupfs driver nests bare names: `/docker/<id>`, `/libpod_parent/libpod-<id>`, `/kubepods/<qos>/pod<uid>/<id>`
  (containerd's CRI plugin), `/kubepods/<qos>/pod<uid>/crio-<id>`;
- runc's systemd driver on cgroup v1 can leave the `slice:prefix:id` form in the path
  (`kubepods-besteffort-pod<uid>.slice:cri-containerd:<id>`);
- crun on cgroup v2 puts the payload one level deeper (`libpod-<id>.scope/container`), and a container may make
  cgroups of its own below its root.

So components are matched from the leaf upwards and the first one that names a container wins; a 64-hex id is
required (so a sandbox runner's 32-hex leaf or a service name never reads as a container). Pods' sandbox
(pause) containers are containers like any other here: same layouts, their own ids.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

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


_HEX64 = r"([0-9a-f]{64})"
# Whole-component patterns (systemd and cgroupfs drivers) -> runtime type.
_LEAF_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(rf"^docker-{_HEX64}\.scope$"), "docker"),
    (re.compile(rf"^cri-containerd-{_HEX64}\.scope$"), "containerd"),
    (re.compile(rf"^crio-{_HEX64}(?:\.scope)?$"), "cri-o"),
    (re.compile(rf"^libpod-{_HEX64}(?:\.scope)?$"), "podman"),
    (re.compile(rf"^nerdctl-{_HEX64}\.scope$"), "containerd"),  # nerdctl, systemd driver
    # runc's systemd driver, cgroupsPath "slice:prefix:name" left verbatim in the path (cgroup v1)
    (re.compile(rf"^[^:/]*:cri-containerd:{_HEX64}$"), "containerd"),
    (re.compile(rf"^[^:/]*:crio:{_HEX64}$"), "cri-o"),
    (re.compile(rf"^[^:/]*:docker:{_HEX64}$"), "docker"),
)
_BARE = re.compile(rf"^{_HEX64}$")
CONTAINERD_NAMESPACES = frozenset({"default", "k8s.io"})
"""containerd namespaces whose cgroup (`/<namespace>`) holds bare-id containers: ctr's and the CRI plugin's."""
# `pod<uid>` (cgroupfs) or `...kubepods-<qos>-pod<uid with _>.slice` (systemd); static pods have 32-hex uids
_POD_UID = re.compile(r"^(?:[\w.-]*kubepods[\w-]*-)?pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}"
                      r"[-_][0-9a-f]{12}|[0-9a-f]{32})(?:\.slice)?$")


def container_from_cgroup(path: str | None) -> ContainerRef | None:
    """The container a cgroup path names, or None for a host process (or an unknown layout)."""
    if not path:
        return None
    parts = path.strip("/").split("/")
    for i in range(len(parts) - 1, -1, -1):
        part = parts[i]
        for pattern, runtime in _LEAF_PATTERNS:
            m = pattern.match(part)
            if m:
                return ContainerRef(runtime, m.group(1))
        m = _BARE.match(part)
        if m:
            return ContainerRef(_bare_runtime(parts[:i]), m.group(1))
    return None


def _bare_runtime(ancestors: Sequence[str]) -> str:
    """The runtime of a cgroupfs-driver container named by its bare id, from the cgroups above it.

    Under kubepods it is the CRI runtime that names bare ids: containerd's CRI plugin (CRI-O prefixes `crio-`,
    and dockershim left Kubernetes in 1.24). Directly under a containerd namespace's cgroup it is containerd's
    default spec (`/<namespace>/<id>`: ctr, nerdctl with cgroupfs). Elsewhere a bare id is Docker's layout
    (`/docker/<id>`), as Falco reads it. The runtime clients confirm the type when they find the id."""
    if any("kubepods" in a for a in ancestors):
        return "containerd"
    if ancestors and ancestors[-1] in CONTAINERD_NAMESPACES:
        return "containerd"
    return "docker"


def container_from_paths(paths: Iterable[str | None]) -> ContainerRef | None:
    """The first container any of the paths names (the sensor passes the v2 path, then the v1 one)."""
    for path in paths:
        ref = container_from_cgroup(path)
        if ref is not None:
            return ref
    return None


def pod_uid_from_cgroup(path: str | None) -> str | None:
    """The Kubernetes pod uid a kubepods cgroup path carries (`pod<uid>` / `kubepods-<qos>-pod<uid>.slice`),
    in its canonical dashed form; None outside a pod."""
    if not path:
        return None
    for part in reversed(path.strip("/").split("/")):
        m = _POD_UID.match(part)
        if m:
            return m.group(1).replace("_", "-")
    return None


def path_from_components(leaf_first: Sequence[str]) -> str:
    """A path from the kernel's leaf-first component list (probe.c's put_cgroup_path); "/" for the root."""
    return "/" + "/".join(reversed(leaf_first))


def container_id_from_cgroup(path: str | None) -> str:
    """Falco's 12-character container.id from a cgroup path (or its leaf); "host" when it names none."""
    ref = container_from_cgroup(path)
    return ref.id if ref else HOST_ID


# Controllers whose hierarchy runtimes join on every layout (runc's cgroupfs driver joins all; its systemd
# driver turns on memory and tasks accounting), best first.
V1_PREFERENCE = ("memory", "pids", "cpu", "cpuacct", "devices", "blkio", "freezer", "cpuset")


def v1_controller(mountinfo: str | None = None) -> str | None:
    """The cgroup v1 controller whose path the probe reads besides the unified one; None on a v2-only host.

    Read from the mount table (what is mounted, not what is compiled in): a controller bound to a v1
    hierarchy. `mountinfo` is /proc/self/mountinfo's text (read when None)."""
    if mountinfo is None:
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text()
        except OSError:
            return None
    mounted: set[str] = set()
    for line in mountinfo.splitlines():
        _, sep, tail = line.partition(" - ")
        fields = tail.split()
        if not sep or len(fields) < 3 or fields[0] != "cgroup":
            continue
        mounted.update(fields[2].split(","))
    for name in V1_PREFERENCE:
        if name in mounted:
            return name
    return None
