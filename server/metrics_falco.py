"""Falco's own Prometheus metric names (Falco 0.38+: `falcosecurity_falco_*`, `falcosecurity_scap_*`,
`falcosecurity_evt_*`), filled from what Falconet measures, so dashboards and alerts written for Falco's
`/metrics` work against a Falconet node.

Only what is measured is exposed. A Falco metric with no counterpart here (the per-category kernel drop
counters, the thread and fd table counters, the host CPU and memory usage, the rules and config file hashes)
is absent rather than a constant: a dashboard then shows "no data", not a reassuring zero. README's metrics
section lists both sets.

Labels follow Falco's: `rules_matches_total` carries rule_name, priority (Falco's number: 0 emergency ..
7 debug), source and one `tag_<tag>="true"` per tag; the info metrics carry their value as a label and 1.
"""

from __future__ import annotations

import os
import re
import resource
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.metrics_core import Metric

from falconet.server.metrics import FALCO_EVENTS_LABELS, DaemonMetrics

HELP = "https://falco.org/docs/metrics/ (Falco's name; filled by Falconet)"
"""Falco's HELP text is its docs address; ours says the value is Falconet's own measurement."""

_LABEL_BAD = re.compile(r"[^a-zA-Z0-9_]")


def tag_label(tag: str) -> str:
    """`tag_<tag>` as a Prometheus label name (characters a label cannot hold become `_`)."""
    return "tag_" + _LABEL_BAD.sub("_", tag)


@dataclass(frozen=True, slots=True)
class FalcoFacts:
    """What the collector reads at scrape time besides DaemonMetrics' counters."""

    version: str
    hostname: str
    engine_name: str
    """The event source (`ebpf`, `replay`, `none`): Falco's engine_name label says which driver captured."""
    start_ns: int
    reload_ns: Callable[[], int]
    source_counters: Callable[[], tuple[int, int] | None]
    """(events read, events lost before user space) of the source since it started; None before it runs."""
    rule_matches: Callable[[], Mapping[tuple[str, ...], int]]
    """falco_events' counts (labels as FALCO_EVENTS_LABELS)."""
    outputs_queue_drops: Callable[[], int]
    proc: Path = Path("/proc")


def _gauge(name: str, value: float, labels: Mapping[str, str] | None = None) -> Metric:
    m = Metric(name, HELP, "gauge")
    m.add_sample(name, dict(labels or {}), value)
    return m


def _counter(name: str, value: float) -> Metric:
    base = name.removesuffix("_total")
    m = Metric(base, HELP, "counter")
    m.add_sample(name, {}, value)
    return m


def rules_matches(counts: Mapping[tuple[str, ...], int]) -> Metric:
    """falco_events' counts summed over what Falco's per-rule counter does not split by (hostname, k8s)."""
    per_rule: dict[tuple[str, str, str, str], int] = {}
    idx = {name: i for i, name in enumerate(FALCO_EVENTS_LABELS)}
    for labels, n in counts.items():
        if labels[idx["source"]] == "internal":  # Falco counts rule matches, not its own internal alerts
            continue
        key = (labels[idx["rule"]], labels[idx["priority"]], labels[idx["source"]], labels[idx["tags"]])
        per_rule[key] = per_rule.get(key, 0) + n
    m = Metric("falcosecurity_falco_rules_matches", HELP, "counter")
    for (rule, priority, source, tags), n in sorted(per_rule.items()):
        sample = {"rule_name": rule, "priority": priority, "source": source}
        for tag in filter(None, tags.split(",")):
            sample[tag_label(tag)] = "true"
        m.add_sample("falcosecurity_falco_rules_matches_total", sample, n)
    return m


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii", errors="replace")
    except OSError:
        return None


def _stat_field(text: str | None, key: str) -> int | None:
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == key and parts[1].isdigit():
            return int(parts[1])
    return None


def host_metrics(proc: Path) -> Iterator[Metric]:
    """Host facts from /proc (the host's, since the daemon runs in the host's PID namespace)."""
    stat = _read(proc / "stat")
    btime = _stat_field(stat, "btime")
    if btime is not None:
        yield _gauge("falcosecurity_falco_host_boot_timestamp_nanoseconds", btime * 1_000_000_000)
    running = _stat_field(stat, "procs_running")
    if running is not None:
        yield _gauge("falcosecurity_falco_host_procs_running_total", running)
    file_nr = (_read(proc / "sys/fs/file-nr") or "").split()
    if file_nr and file_nr[0].isdigit():
        yield _gauge("falcosecurity_falco_host_open_fds_total", int(file_nr[0]))
    cpus = os.cpu_count()
    if cpus:
        yield _gauge("falcosecurity_falco_host_num_cpus_total", cpus)
    yield _gauge("falcosecurity_falco_kernel_release_info", 1, {"kernel_release": os.uname().release})


def process_seconds(proc: Path) -> float | None:
    """Seconds since this process started, from the kernel's own clock (/proc/self/stat field 22, /proc/uptime)."""
    stat = _read(proc / "self/stat") or ""
    fields = stat.rpartition(")")[2].split()  # after "(comm)", which may hold spaces
    uptime = (_read(proc / "uptime") or "").split()
    if len(fields) < 20 or not fields[19].isdigit() or not uptime:
        return None
    try:
        return float(uptime[0]) - int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except ValueError:
        return None


def process_metrics(proc: Path) -> Iterator[Metric]:
    """The daemon's CPU share since the process started (what `ps` shows as %CPU, as a ratio) and memory."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    wall = process_seconds(proc)
    if wall is not None and wall > 0:
        yield _gauge("falcosecurity_falco_cpu_usage_ratio", (usage.ru_utime + usage.ru_stime) / wall)
    statm = (_read(proc / "self/statm") or "").split()
    if len(statm) >= 2 and statm[0].isdigit() and statm[1].isdigit():
        page = os.sysconf("SC_PAGE_SIZE")
        yield _gauge("falcosecurity_falco_memory_vsz_bytes", int(statm[0]) * page)
        yield _gauge("falcosecurity_falco_memory_rss_bytes", int(statm[1]) * page)
    for line in (_read(proc / "self/smaps_rollup") or "").splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "Pss:" and parts[1].isdigit():
            yield _gauge("falcosecurity_falco_memory_pss_bytes", int(parts[1]) * 1024)


class FalcoCollector:
    """A prometheus_client collector of Falco's names; registered beside the daemon's own metrics."""

    def __init__(self, facts: FalcoFacts) -> None:
        self.facts = facts

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        f = self.facts
        yield _gauge("falcosecurity_falco_version_info", 1, {"version": f.version})
        yield _gauge("falcosecurity_evt_hostname_info", 1, {"hostname": f.hostname})
        yield _gauge("falcosecurity_scap_engine_name_info", 1, {"engine_name": f.engine_name,
                                                                "evt_source": "syscall"})
        yield _gauge("falcosecurity_falco_start_timestamp_nanoseconds", f.start_ns)
        yield _gauge("falcosecurity_falco_reload_timestamp_nanoseconds", f.reload_ns())
        yield _counter("falcosecurity_falco_duration_seconds_total", (time.time_ns() - f.start_ns) // 1_000_000_000)
        yield _counter("falcosecurity_falco_outputs_queue_num_drops_total", f.outputs_queue_drops())
        yield rules_matches(f.rule_matches())
        counters = f.source_counters()
        if counters is not None:
            events, drops = counters
            yield _counter("falcosecurity_scap_n_evts_total", events)
            yield _counter("falcosecurity_scap_n_drops_total", drops)
        yield from host_metrics(f.proc)
        yield from process_metrics(f.proc)


def falco_collector(metrics: DaemonMetrics, hostname: str, engine_name: str) -> FalcoCollector:
    """The collector of a daemon's Falco metrics, reading its DaemonMetrics."""
    from falconet.server.services_falco import falconet_version

    return FalcoCollector(FalcoFacts(
        version=falconet_version(),
        hostname=hostname,
        engine_name=engine_name.partition(":")[0],
        start_ns=metrics.start_ns,
        reload_ns=lambda: metrics.reload_ns,
        source_counters=lambda: metrics.source_counters,
        rule_matches=metrics.falco_events,
        outputs_queue_drops=lambda: sum(full for full, _ in metrics.output_drops().values()),
    ))
