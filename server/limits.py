"""What one client, or a crowd of unauthenticated ones, may hold of the server: connections, streams, calls, fds.

Every TCP connection costs a file descriptor before it has said anything, and every stream costs memory before
its request has arrived; without limits, ~1,100 idle connections exhaust a default soft RLIMIT_NOFILE of 1024
and lock out the UNIX-socket clients too, and one connection can open 20,000 streams. So:

- a TCP connection has `handshake_timeout` seconds to complete TLS, then gRPC core closes it;
- at most `max_connections` TCP connections are held at once (gRPC core closes the excess as it accepts them);
  the figure is lowered at start to fit the file descriptors, keeping `FD_RESERVE` for the UNIX socket's
  clients, files and outputs (`fd_budget`, which first raises the soft RLIMIT_NOFILE to the hard limit);
- each connection may run `max_streams_per_connection` calls at once (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS;
  a client that ignores it has the extra streams refused). gRPC does not tell a UNIX-socket peer apart from
  another (every one is `unix:`), so this per-connection limit is also what caps a local client's subscriptions;
- each mTLS identity (certificate subject) may hold `max_subscriptions_per_identity` subscriptions at once
  (`falconet.server.guard`);
- UNIX-socket and TCP listeners are separate gRPC servers, each running at most `max_calls` calls (the rest
  wait in gRPC core's bounded queue), so a flood of calls over TCP never takes the local clients' share.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass

FD_RESERVE = 256
"""File descriptors kept out of the TCP budget: UNIX-socket clients, rules and output files, the sensor."""


@dataclass(frozen=True, slots=True)
class Limits:
    """The server's resource limits; defaults fit a host with the systemd unit's LimitNOFILE."""

    handshake_timeout: float = 10.0
    """Seconds a TCP connection may take to complete its TLS handshake before it is closed."""
    max_connections: int = 1000
    """TCP connections held at once (lowered at start to fit RLIMIT_NOFILE)."""
    max_streams_per_connection: int = 100
    """Concurrent calls (streams) on one connection, UNIX socket or TCP."""
    max_subscriptions_per_identity: int = 256
    """Open sub/get/Subscribe/GetAll calls per mTLS certificate subject."""
    max_calls: int = 4096
    """Calls running at once on the UNIX-socket server, and separately on the TCP server."""

    def problems(self) -> list[str]:
        """Each setting out of range, as a sentence naming its configuration key."""
        out: list[str] = []
        if not 0.1 <= self.handshake_timeout <= 3600:
            out.append(f"handshake_timeout must be 0.1 to 3600 seconds, got {self.handshake_timeout}")
        for key, value in (
            ("max_connections", self.max_connections),
            ("max_streams_per_connection", self.max_streams_per_connection),
            ("max_subscriptions_per_identity", self.max_subscriptions_per_identity),
            ("max_calls", self.max_calls),
        ):
            if not 1 <= value <= 1_000_000:
                out.append(f"{key} must be 1 to 1000000, got {value}")
        return out


@dataclass(frozen=True, slots=True)
class FdBudget:
    """The file descriptors the process may open, and how many TCP connections fit in them."""

    nofile: int
    tcp_connections: int
    lowered: bool
    """True when `max_connections` did not fit and was lowered."""


def fd_budget(limits: Limits) -> FdBudget:
    """Raises the soft RLIMIT_NOFILE to the hard limit, then fits the TCP connection limit under it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else 1 << 20
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):  # not allowed here: keep what we have and budget within it
            pass
    reserve = min(FD_RESERVE, soft // 2)
    tcp = max(1, min(limits.max_connections, soft - reserve))
    return FdBudget(nofile=soft, tcp_connections=tcp, lowered=tcp < limits.max_connections)


def server_options(limits: Limits, *, tcp_connections: int | None) -> list[tuple[str, int]]:
    """gRPC core channel arguments for one server; `tcp_connections` is None for the UNIX-socket server."""
    options = [
        ("grpc.so_reuseport", 0),
        # Subscribers idle for hours must not be dropped by middleboxes: ping, and accept client pings.
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.max_concurrent_streams", limits.max_streams_per_connection),
    ]
    if tcp_connections is not None:
        options += [
            ("grpc.server_handshake_timeout_ms", max(1, round(limits.handshake_timeout * 1000))),
            ("grpc.max_allowed_incoming_connections", tcp_connections),
        ]
    return options
