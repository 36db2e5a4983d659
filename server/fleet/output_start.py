"""The daemons' one hook for the `nats` output: make the forwarder, expose its metrics, start it."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry

from falconet.server.fleet.output import Log, NatsForwarder, Report
from falconet.server.fleet.output_config import NatsOutputConfig
from falconet.server.fleet.output_metrics import ForwarderCollector
from falconet.server.hub import Hub


def start_forwarder(config: NatsOutputConfig, hub: Hub, *, report: Report, log: Log,
                    registry: CollectorRegistry | None = None, rules_version: Callable[[], str] = str) -> NatsForwarder:
    """A started forwarder of `hub` (on the running event loop); `registry` gets its metrics."""
    from falconet.server.services_falco import falconet_version

    forwarder = NatsForwarder(config, hub, report=report, log=log, version=falconet_version(),
                              rules_version=rules_version)
    if registry is not None:
        registry.register(ForwarderCollector(forwarder.snapshot))
    forwarder.start()
    return forwarder
