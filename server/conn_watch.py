"""Says who is being refused: a watch over the kernel's table of this server's TCP connections.

gRPC core enforces the connection limit and the handshake deadline itself and tells Python nothing: it closes
the connection and moves on. The kernel remembers, though: a connection the server closed first sits in
FIN_WAIT/TIME_WAIT on the server's side, with the peer's address, for up to a minute. Scanning
/proc/self/net/tcp{,6} once a second for connections on our ports finds the ones newly closed by the server
(over the limit, no TLS within the deadline, a refused certificate) and the peers holding the most open ones,
and logs them at most once per `report_every` seconds, so a flood is visible without flooding the log.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("falconet.server")

_ESTABLISHED = "01"
_CLOSED_BY_US = frozenset({"04", "05", "06", "0B"})  # FIN_WAIT1, FIN_WAIT2, TIME_WAIT, CLOSING
_TABLES = (Path("/proc/self/net/tcp"), Path("/proc/self/net/tcp6"))
TOP_PEERS = 5


def _address(hex_addr: str) -> str:
    """The text form of /proc's address: 32-bit words in host (little-endian) order."""
    raw = bytes.fromhex(hex_addr)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    ip = ipaddress.ip_address(words)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def parse_table(lines: Iterable[str], ports: frozenset[int]) -> Iterator[tuple[str, str, int]]:
    """(state, peer address, peer port) of each connection whose local port is one of `ports`."""
    for line in lines:
        parts = line.split()
        if len(parts) < 4 or ":" not in parts[1]:
            continue
        local, remote, state = parts[1], parts[2], parts[3]
        try:
            if int(local.rpartition(":")[2], 16) not in ports:
                continue
            host, _, port = remote.rpartition(":")
            yield state, _address(host), int(port, 16)
        except ValueError:  # the header line, or a line this parser does not know
            continue


@dataclass
class ConnectionWatch:
    """Scans every `interval` seconds and logs refusals with their peers, rate-limited."""

    ports: frozenset[int]
    limit: int
    handshake_timeout: float
    interval: float = 1.0
    report_every: float = 10.0
    _seen_closed: set[tuple[str, int]] = field(default_factory=set)
    _closed: Counter[str] = field(default_factory=Counter)
    _last_report: float = float("-inf")
    reports: int = 0

    def scan(self) -> Counter[str]:
        """Open connections per peer; adds connections newly closed by the server to the pending report."""
        open_by_peer: Counter[str] = Counter()
        closed_now: set[tuple[str, int]] = set()
        for table in _TABLES:
            try:
                lines = table.read_text(encoding="ascii", errors="replace").splitlines()
            except OSError:  # no IPv6 in this kernel, or /proc not mounted: nothing to see there
                continue
            for state, peer, port in parse_table(lines, self.ports):
                if state == _ESTABLISHED:
                    open_by_peer[peer] += 1
                elif state in _CLOSED_BY_US:
                    closed_now.add((peer, port))
                    if (peer, port) not in self._seen_closed:
                        self._closed[peer] += 1
        self._seen_closed = closed_now  # gone from the table: forget it, so a reused port counts again
        return open_by_peer

    def report(self, open_by_peer: Counter[str], now: float) -> str | None:
        """The log line due now, if any (and resets the pending counts when it is)."""
        at_limit = sum(open_by_peer.values()) >= self.limit
        if not (self._closed or at_limit) or now - self._last_report < self.report_every:
            return None
        self._last_report = now
        self.reports += 1
        closed = sum(self._closed.values())
        peers = ", ".join(f"{peer} ({n})" for peer, n in self._closed.most_common(TOP_PEERS))
        holders = ", ".join(f"{peer} ({n})" for peer, n in open_by_peer.most_common(TOP_PEERS))
        self._closed.clear()
        text = (
            f"TCP connections refused or closed by the server: {closed} since the last report"
            + (f", from {peers}" if peers else "")
            + f"; {sum(open_by_peer.values())} open (limit {self.limit}, TLS handshake deadline "
            f"{self.handshake_timeout:g} s)"
            + (f", held by {holders}" if holders else "")
        )
        if at_limit:
            text += ": at the connection limit, new connections are refused"
        return text

    async def run(self) -> None:
        """Scans until cancelled."""
        while True:
            text = self.report(self.scan(), time.monotonic())
            if text is not None:
                log.warning("%s", text)
            await asyncio.sleep(self.interval)
