"""A test host for the live tests' outbound connections: a network namespace joined to this one by a veth pair,
with a listener on the miner-pool port and on an ordinary one (as root).

The addresses are a random /30 inside 203.0.113.0/24 (a documentation range), so no traffic leaves the machine
and two tests running at once are unlikely to clash. Shared by tests/daemon and tests/ptrace, which connect to
it from the workload and compare what each driver reports.
"""

from __future__ import annotations

import random
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

MINER_PORT = 3333
OTHER_PORT = 8080
CONNECT_CODE = "import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10).close()"
"""`python3 -c CONNECT_CODE ADDRESS PORT`: one TCP connection, closed at once."""

_LISTENER = """
import socket, sys, threading
socks = []
for port in map(int, sys.argv[1:]):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('0.0.0.0', port))
    s.listen(16); socks.append(s)
def serve(s):
    while True:
        c, _ = s.accept(); c.close()
for s in socks:
    threading.Thread(target=serve, args=(s,), daemon=True).start()
print('listening', flush=True)
sys.stdin.read()
"""


@dataclass(frozen=True)
class NetHost:
    """Where the test host is: its namespace, this side's veth end and address, and the peer's address."""

    ns: str
    host_if: str
    host_ip: str
    peer_ip: str


@contextmanager
def net_host(prefix: str, python: str = "/usr/bin/python3") -> Iterator[NetHost]:
    """The test host, listening on MINER_PORT and OTHER_PORT until the block ends; `prefix` (a few letters)
    names its namespace and links so a leftover one says which tests made it."""
    suffix = uuid.uuid4().hex[:6]
    ns, a, b = f"{prefix}-{suffix}", f"{prefix[:3]}a{suffix}", f"{prefix[:3]}b{suffix}"
    block = random.randrange(1, 63) * 4
    host_ip, peer_ip = f"203.0.113.{block + 1}", f"203.0.113.{block + 2}"
    steps = [
        ["ip", "netns", "add", ns],
        ["ip", "link", "add", a, "type", "veth", "peer", "name", b],
        ["ip", "link", "set", b, "netns", ns],
        ["ip", "addr", "add", f"{host_ip}/30", "dev", a],
        ["ip", "link", "set", a, "up"],
        ["ip", "-n", ns, "addr", "add", f"{peer_ip}/30", "dev", b],
        ["ip", "-n", ns, "link", "set", b, "up"],
        ["ip", "-n", ns, "link", "set", "lo", "up"],
    ]
    listener: subprocess.Popen[str] | None = None
    try:
        for step in steps:
            subprocess.run(step, check=True, capture_output=True, text=True)
        listener = subprocess.Popen(
            ["ip", "netns", "exec", ns, python, "-c", _LISTENER, str(MINER_PORT), str(OTHER_PORT)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert listener.stdout is not None and listener.stdout.readline().strip() == "listening"
        yield NetHost(ns, a, host_ip, peer_ip)
    finally:
        if listener is not None:
            listener.kill()
            listener.wait(10)
            for stream in (listener.stdin, listener.stdout):
                if stream is not None:
                    stream.close()
        subprocess.run(["ip", "link", "del", a], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
