"""The registry of event sources: what `falconet run --source NAME[:ARGUMENT]` can name.

To add a source, write its module (an EventSource and a SourceKind, see server/source.py) and add its kind
to KINDS below; --source, its error messages and the daemon pick it up from here.
"""

from __future__ import annotations

from falconet.server import k8s_audit, source_ebpf, source_ptrace, source_replay
from falconet.server.daemon_config import DaemonConfig
from falconet.server.errors import DaemonError
from falconet.server.source import EventSource, Log, SourceKind, SourceRequest

KINDS: tuple[SourceKind, ...] = (
    source_ebpf.KIND,
    source_replay.KIND,
    source_ptrace.KIND,
    k8s_audit.NONE_KIND,
)


def find_kind(spec: str) -> tuple[SourceKind, str]:
    """The kind --source names and its argument; DaemonError listing the known kinds for anything else."""
    name, sep, argument = spec.partition(":")
    for kind in KINDS:
        if kind.name == name and bool(sep) == bool(kind.argument):
            return kind, argument
    raise DaemonError(f"unknown source {spec!r}; expected {' or '.join(k.usage for k in KINDS)}")


def preflight(spec: str) -> None:
    """Fails at once (DaemonError) when the named source cannot run on this machine; see SourceKind."""
    find_kind(spec)[0].preflight()


def open_source(spec: str, config: DaemonConfig, syscalls: frozenset[str] | None, log: Log) -> EventSource:
    """The source --source names, built but not started; raises DaemonError saying what is wrong."""
    kind, argument = find_kind(spec)
    return kind.open(SourceRequest(argument=argument, config=config, syscalls=syscalls, log=log))
