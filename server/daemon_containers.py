"""Container metadata for the daemon: a live event source wrapped so that container events carry it.

`with_containers` wraps the eBPF source (a replayed capture already carries its metadata, so replays are left
alone): the wrapper starts the metadata service (sensor/containers) and passes every polled batch through the
per-container hold, so the engine sees a container's events with its name, image and privileges, host
events at once, and a container whose metadata is late at most `container_metadata_wait` later (500 ms by
default). While something is held the
wrapper polls its source for at most 5 ms, so a release is never late; when the source ends, whatever is
still held is delivered before the end. Metrics (the daemon's registry): holds opened and expired, lookups,
cache size, and per engine whether it answers and how often it became unavailable.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from prometheus_client.metrics_core import Metric

from falconet.model.audit import AuditEvent
from falconet.model.event import Event
from falconet.sensor.containers.hold import MAX_WAIT, MetadataHold
from falconet.sensor.containers.service import MetadataService
from falconet.server.source import EventSource, KernelFilter, Log, SourceCounters

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from falconet.server.daemon_config import DaemonConfig

LIVE_SOURCES = frozenset({"ebpf"})


def with_containers(source: EventSource, config: DaemonConfig, log: Log, registry: CollectorRegistry) -> EventSource:
    """`source` with container metadata when it is live and some container engine is enabled; else itself."""
    if source.name not in LIVE_SOURCES:
        return source
    if config.container_engines and not any(s.enabled for _name, s in config.container_engines):
        return source
    wrapped = ContainerSource(source, MetadataService(dict(config.container_engines), log),
                              config.container_metadata_wait)
    registry.register(_Collector(wrapped))
    return wrapped


class ContainerSource:
    """An EventSource whose container events wait (bounded) for their container's metadata."""

    def __init__(self, inner: EventSource, service: MetadataService, max_wait: float = MAX_WAIT) -> None:
        self.inner = inner
        self.service = service
        self.hold = MetadataHold(service, max_wait)
        self._ended = False

    @property
    def name(self) -> str:
        return self.inner.name

    def start(self) -> None:
        # The runtimes are reached while the sensor loads (seconds of compiling), and the daemon says "ready"
        # when this returns: only then, each runtime having answered (bounded), is a container started right
        # after held for its metadata instead of passing unnamed.
        self.service.start()
        try:
            self.inner.start()
        except BaseException:
            self.service.close()
            raise
        for name in self.service.wait_first_contact():
            self.service.log(f"container engine {name}: still connecting; its containers' metadata follows "
                             "when it answers")

    def poll(self, timeout_ms: int) -> Sequence[Event | AuditEvent] | None:
        if self._ended:
            return None
        raw = self.inner.poll(self.hold.poll_timeout_ms(timeout_ms))
        if raw is None:
            self._ended = True
            rest = self.hold.flush()
            return rest or None
        syscalls = [e for e in raw if isinstance(e, Event)]
        if len(syscalls) == len(raw):
            return self.hold.feed(syscalls)
        # Events of other sources carry no container: they pass, the syscall events go through the hold.
        return [*(e for e in raw if not isinstance(e, Event)), *self.hold.feed(syscalls)]

    def counters(self) -> SourceCounters:
        return self.inner.counters()

    def kernel_filter(self) -> KernelFilter | None:
        return self.inner.kernel_filter()

    def close(self) -> None:
        self.inner.close()
        self.service.close()


class _Collector:
    def __init__(self, source: ContainerSource) -> None:
        self.s = source

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        hold, svc = self.s.hold, self.s.service
        for name, doc, value in (
            ("falconet_container_metadata_waits", "Containers whose events waited for their metadata.", hold.waited),
            ("falconet_container_metadata_wait_expired",
             "Waits for container metadata that ended at the container_metadata_wait bound without it.", hold.expired),
            ("falconet_container_metadata_lookups", "Container metadata lookups.", svc.stats.lookups),
            ("falconet_container_metadata_unknown", "Lookups no runtime could answer.", svc.stats.unknown),
        ):
            c = Metric(name, doc, "counter")
            c.add_sample(name + "_total", {}, value)
            yield c
        g = Metric("falconet_container_metadata_cached", "Containers in the metadata cache.", "gauge")
        g.add_sample("falconet_container_metadata_cached", {}, len(svc.store))
        yield g
        up = Metric("falconet_container_engine_up", "1 when the container engine's API answers.", "gauge")
        errs = Metric("falconet_container_engine_errors",
                      "Times a container engine became unavailable (missing, refusing, hanging, restarting).",
                      "counter")
        for name, state in sorted(svc.stats.runtimes.items()):
            up.add_sample("falconet_container_engine_up", {"engine": name}, 1 if state.up else 0)
            errs.add_sample("falconet_container_engine_errors_total", {"engine": name}, state.errors)
        yield up
        yield errs
