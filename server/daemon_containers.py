"""The daemon's container enrichment: the metadata service and the per-container hold, for the live sensor.

The engine thread calls `feed` with every polled batch (and with an empty one when the poll returned
nothing, so holds expire on time) and polls the source for at most `poll_ms` so a release is never late.
A replayed capture already carries its metadata, so replay sources get none of this.
Metrics (the daemon's registry): holds opened and expired, lookups, and per runtime whether it is up and how
often it became unavailable.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client.metrics_core import Metric

from falconet.model.event import Event
from falconet.sensor.containers.hold import MetadataHold
from falconet.sensor.containers.service import MetadataService

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from falconet.server.daemon_config import DaemonConfig


class ContainerEnrichment:
    def __init__(self, config: DaemonConfig, log: Callable[[str], None]) -> None:
        self.service = MetadataService(dict(config.container_engines), log)
        self.hold = MetadataHold(self.service)

    def start(self) -> None:
        self.service.start()

    def feed(self, events: list[Event]) -> list[Event]:
        return self.hold.feed(events)

    def poll_ms(self, default_ms: int) -> int:
        return self.hold.poll_timeout_ms(default_ms)

    def flush(self) -> list[Event]:
        return self.hold.flush()

    def close(self) -> None:
        self.service.close()

    def register_metrics(self, registry: CollectorRegistry) -> None:
        registry.register(_Collector(self))


def for_source(source_name: str, config: DaemonConfig, log: Callable[[str], None]) -> ContainerEnrichment | None:
    """Started enrichment for a live source with some engine enabled; None otherwise."""
    if source_name != "ebpf":
        return None
    if config.container_engines and not any(s.enabled for _n, s in config.container_engines):
        return None
    enrichment = ContainerEnrichment(config, log)
    enrichment.start()
    return enrichment


class _Collector:
    def __init__(self, enrichment: ContainerEnrichment) -> None:
        self.e = enrichment

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        hold, svc = self.e.hold, self.e.service
        for name, doc, value in (
            ("falconet_container_metadata_waits", "Containers whose events waited for their metadata.", hold.waited),
            ("falconet_container_metadata_wait_expired",
             "Waits for container metadata that ended at the 500 ms bound without it.", hold.expired),
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
