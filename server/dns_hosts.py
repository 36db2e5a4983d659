"""Names the daemon resolves itself, before the host's resolver: the `dns` section of the configuration.

Rules match server names (`fd.sip.name = "kubernetes.default.svc.cluster.local"` in Falco's rule about
containers contacting the API server), but a node's own resolver usually knows no cluster names: only pods
use the cluster DNS. So an operator tells the daemon what such names are, the way /etc/hosts tells a host:

    dns:
      hosts:                                    # name -> address(es)
        kubernetes.default.svc.cluster.local: [10.96.0.1]
      hosts_files: [/etc/falconet/hosts]        # /etc/hosts format; re-read when the file changes

A configured name answers with exactly its configured addresses (the host's resolver is not asked for it);
any other name goes to the host's resolver. The engine caches the answers (rules/fields.py); this module only
answers. The files are operator input: a line that does not parse is skipped with a warning, never fatal.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

log = logging.getLogger("falconet.dns")

_NAME = re.compile(r"^(?=.{1,253}$)[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*\.?$")


@dataclass(frozen=True, slots=True)
class DnsConfig:
    """The `dns` section: static names, and hosts-format files."""

    hosts: tuple[tuple[str, tuple[str, ...]], ...] = ()
    hosts_files: tuple[Path, ...] = ()


def normalize_name(name: str) -> str | None:
    """A DNS name in the form it is compared in (lower case, no trailing dot), or None if it is not one."""
    text = name.strip().lower()
    if not _NAME.match(text):
        return None
    return text.rstrip(".")


class ProblemSink(Protocol):
    """What the configuration reader gives (server/config_values.Problems)."""

    def add(self, sentence: str) -> None: ...
    def resolve(self, text: str) -> Path: ...


def parse_dns_section(value: object, problems: ProblemSink) -> DnsConfig:
    """Validates the `dns` section; every problem is added as a sentence."""
    if value is None:
        return DnsConfig()
    if not isinstance(value, Mapping):
        problems.add("dns must be a mapping (hosts, hosts_files).")
        return DnsConfig()
    section: Mapping[str, object] = value
    for key in section:
        if key not in ("hosts", "hosts_files"):
            problems.add(f"dns.{key} is not a known setting (known: hosts, hosts_files).")
    hosts: list[tuple[str, tuple[str, ...]]] = []
    raw_hosts = section.get("hosts") or {}
    if not isinstance(raw_hosts, Mapping):
        problems.add("dns.hosts must be a mapping of names to an address or a list of addresses.")
        raw_hosts = {}
    for raw_name, raw_addrs in raw_hosts.items():
        name = normalize_name(str(raw_name))
        if name is None:
            problems.add(f"dns.hosts: {str(raw_name)!r} is not a DNS name.")
            continue
        addrs = [raw_addrs] if isinstance(raw_addrs, str) else raw_addrs
        if not isinstance(addrs, list) or not addrs:
            problems.add(f"dns.hosts.{name} must be an address or a non-empty list of addresses.")
            continue
        good: list[str] = []
        for addr in addrs:
            try:
                good.append(str(ipaddress.ip_address(str(addr))))
            except ValueError:
                problems.add(f"dns.hosts.{name}: {str(addr)!r} is not an IP address.")
        hosts.append((name, tuple(good)))
    raw_files = section.get("hosts_files") or []
    if isinstance(raw_files, str):
        raw_files = [raw_files]
    files: list[Path] = []
    if not isinstance(raw_files, list):
        problems.add("dns.hosts_files must be a list of file paths.")
    else:
        for entry in raw_files:
            path = problems.resolve(str(entry))
            if not path.is_file():
                problems.add(f"dns.hosts_files: {path} does not exist or is not a file.")
            files.append(path)
    return DnsConfig(hosts=tuple(hosts), hosts_files=tuple(files))


def parse_hosts_text(text: str, source: str) -> dict[str, list[str]]:
    """name -> addresses from /etc/hosts-format text ("ADDRESS NAME [ALIAS...]", # comments)."""
    out: dict[str, list[str]] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        try:
            addr = str(ipaddress.ip_address(fields[0]))
        except ValueError:
            log.warning("%s:%d: %r is not an IP address; line skipped", source, lineno, fields[0][:64])
            continue
        if len(fields) < 2:
            log.warning("%s:%d: an address without a name; line skipped", source, lineno)
        for raw in fields[1:]:
            name = normalize_name(raw)
            if name is None:
                log.warning("%s:%d: %r is not a DNS name; skipped", source, lineno, raw[:64])
            elif addr not in out.setdefault(name, []):
                out[name].append(addr)
    return out


@dataclass
class _HostsFile:
    path: Path
    stamp: tuple[int, int, int] | None = None  # (mtime_ns, size, inode) of what `names` was read from
    names: dict[str, list[str]] = field(default_factory=dict)

    def current(self) -> dict[str, list[str]]:
        """The file's names, re-read when it changed (an unreadable file counts as empty, with a warning)."""
        try:
            st = os.stat(self.path)
        except OSError as exc:
            if self.stamp is not None:
                log.warning("dns hosts file %s cannot be read (%s); its names are gone", self.path, exc.strerror)
            self.stamp, self.names = None, {}
            return self.names
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp != self.stamp:
            try:
                self.names = parse_hosts_text(self.path.read_text(errors="replace"), str(self.path))
            except OSError as exc:
                log.warning("dns hosts file %s cannot be read (%s)", self.path, exc.strerror)
                self.names = {}
            self.stamp = stamp
        return self.names


class HostsResolver:
    """The daemon's `dns` callable for the engine: configured names first, then `fallback` (the host's)."""

    def __init__(self, config: DnsConfig, fallback: Callable[[str], list[str]]) -> None:
        self._static = {name: list(addrs) for name, addrs in config.hosts}
        self._files = [_HostsFile(p) for p in config.hosts_files]
        self._fallback = fallback

    def lookup_static(self, name: str) -> list[str] | None:
        """The configured addresses of `name`, None when no entry names it."""
        key = normalize_name(name)
        if key is None:
            return None
        found: list[str] | None = None
        for source in (self._static, *(f.current() for f in self._files)):
            addrs = source.get(key)
            if addrs:
                found = (found or []) + [a for a in addrs if a not in (found or [])]
        return found

    def __call__(self, name: str) -> list[str]:
        static = self.lookup_static(name)
        return sorted(static) if static is not None else self._fallback(name)


def hosts_resolver(config: DnsConfig, fallback: Callable[[str], list[str]]) -> Callable[[str], list[str]]:
    """`fallback` alone when nothing is configured (no cost on the common path)."""
    if not config.hosts and not config.hosts_files:
        return fallback
    return HostsResolver(config, fallback)


__all__: Sequence[str] = ["DnsConfig", "HostsResolver", "hosts_resolver", "parse_dns_section", "parse_hosts_text"]
