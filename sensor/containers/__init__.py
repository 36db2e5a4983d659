"""Container metadata from the container runtimes themselves: name, image, privileges, mounts, labels, pods.

The sensor knows *which* container a process is in from its cgroup path (sensor/cgroups.py: `ContainerRef`,
container.id and container.type); everything else about the container comes from here, keyed by that id.

Pieces:
- registry.py: the `RuntimeClient` protocol (lookup by id, a start/exit events stream, `RuntimeUnavailable`
  when the runtime cannot be asked) and `register_runtime`;
- one module per runtime: docker.py (dockerd's API), podman.py (Podman's compat API socket, else its on-disk
  state); containerd.py (containerd and the Kubernetes CRI plugin) registers itself the same way;
- store.py: the bounded cache; an entry goes when its container exits (after a short grace, so the events the
  container made just before it exited still find it);
- service.py: `MetadataService`, which owns the clients, watches their events streams and does lookups on its
  own threads, so a runtime that is missing, refuses, hangs or restarts costs one log line and a metric and
  never the daemon;
- hold.py: the delivery rule. Rules test container.image.repository, so a container's *events* (not only its
  alerts) wait for its metadata before the engine sees them: a per-container hold that releases on arrival or
  after at most 500 ms (each expiry counted), while host events and other containers' events flow on.

Adding a runtime (how containerd.py does it): write `sensor/containers/<runtime>.py` with a class meeting
`RuntimeClient`, and at the end of the module

    register_runtime("cri", CriClient, EngineSettings(sockets=("/run/containerd/containerd.sock",)))

(the first argument is the `container_engines.<name>` config key; the settings are the defaults an absent
key means), then add the module's name to `_RUNTIME_MODULES` below. A module whose optional dependency is
missing may skip registering; the service then logs that the engine is unavailable.
"""

from __future__ import annotations

import importlib

from falconet.sensor.containers.registry import (
    EngineSettings,
    RuntimeClient,
    RuntimeEvent,
    RuntimeUnavailable,
    register_runtime,
    registered,
)

_RUNTIME_MODULES = ("docker", "podman", "containerd")
"""The runtime modules imported (in this order) to register themselves; a missing one is skipped."""


def load_runtimes() -> None:
    """Imports every runtime module so that each registers itself (idempotent)."""
    for name in _RUNTIME_MODULES:
        try:
            importlib.import_module(f"falconet.sensor.containers.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"falconet.sensor.containers.{name}":
                raise


__all__ = [
    "EngineSettings",
    "RuntimeClient",
    "RuntimeEvent",
    "RuntimeUnavailable",
    "load_runtimes",
    "register_runtime",
    "registered",
]
