"""The contract every container runtime client meets, and the registry the metadata service builds them from.

A client answers two questions about containers it runs: "what is container X" (`lookup`, blocking, bounded by
its own timeout) and "what is starting and stopping" (`events`, a blocking stream). The service
(service.py) runs each on its own threads, so a runtime that hangs can never hold up the sensor or the
engine; a client only has to raise `RuntimeUnavailable` when its runtime cannot be reached.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal, Protocol

from falconet.model.event import Container

DEFAULT_TIMEOUT = 2.0
"""Seconds a client may wait on its runtime for one request (connect + answer); the hold never waits on it."""


class RuntimeUnavailable(Exception):
    """The runtime cannot be asked right now (socket missing, refusing, timing out, answering garbage)."""


@dataclass(frozen=True, slots=True)
class EngineSettings:
    """One `container_engines.<name>` entry of the configuration (Falco's keys, plus `sockets` for every
    engine; `timeout` is ours)."""

    enabled: bool = True
    sockets: tuple[str, ...] = ()
    timeout: float = DEFAULT_TIMEOUT
    extra: dict[str, object] = field(default_factory=dict)  # engine-specific keys, validated by the client


@dataclass(frozen=True, slots=True)
class RuntimeEvent:
    """What an events stream says. `ready`: the stream is connected (the runtime is up; full_id is empty).
    `start`: a container exists, sent as early as the runtime knows it (Docker's `create`) so its metadata is
    cached before its first process runs; after `ready` a client also sends `start` for every container already
    running. `exit`: the container stopped (its cache entry goes after a short grace)."""

    kind: Literal["ready", "start", "exit"]
    full_id: str = ""
    container: Container | None = None  # the metadata, when the stream carries it; else the service looks it up


class RuntimeClient(Protocol):
    """One container runtime, reached through its own API socket or on-disk state."""

    name: str
    """The `container_engines` key that configures it: docker, podman, cri."""

    types: frozenset[str]
    """The container.type values (from cgroup paths, sensor/cgroups.py) this runtime is asked about first."""

    def lookup(self, container_id: str) -> Container | None:
        """The container's metadata by full or 12-character id; None when the runtime does not know it.

        Raises RuntimeUnavailable when the runtime cannot be asked. Must return within the client's timeout."""

    def events(self, stop: threading.Event) -> Iterator[RuntimeEvent]:
        """Starts and exits as they happen, until `stop` is set or the stream breaks (RuntimeUnavailable).

        A client without an events stream returns an empty iterator after waiting on `stop`."""

    def close(self) -> None: ...


RuntimeFactory = Callable[[EngineSettings], RuntimeClient]

_FACTORIES: dict[str, RuntimeFactory] = {}
_DEFAULTS: dict[str, EngineSettings] = {}


def register_runtime(name: str, factory: RuntimeFactory, defaults: EngineSettings) -> None:
    """Makes `container_engines.<name>` known: `defaults` are what an absent config key means (sockets that
    work on a normal host), `factory` builds the client from the merged settings."""
    _FACTORIES[name] = factory
    _DEFAULTS[name] = defaults


def registered() -> dict[str, tuple[RuntimeFactory, EngineSettings]]:
    """name -> (factory, default settings), in registration order."""
    return {name: (_FACTORIES[name], _DEFAULTS[name]) for name in _FACTORIES}
