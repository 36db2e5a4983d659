"""A real `falconet run` with the audit endpoint, and an HTTP(S) poster that talks to it as the API server would.

The daemon process helpers are the daemon tests' own (tests/daemon/daemon_harness.py), so both areas drive
`falconet run` the same way.
"""

from __future__ import annotations

import http.client
import json
import ssl
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "daemon"))

from daemon_harness import DaemonProcess  # noqa: E402


@dataclass
class Reply:
    status: int
    body: dict[str, Any]
    headers: dict[str, str]


@dataclass
class AuditDaemon:
    """A running daemon with the audit endpoint; `post` sends a body to it as the API server would."""

    process: DaemonProcess
    url: str
    work: Path
    tls: ssl.SSLContext | None = None

    def post(self, body: bytes | str, *, content_type: str = "application/json", token: str | None = None,
             tls: ssl.SSLContext | None = None, method: str = "POST", path: str | None = None) -> Reply:  # fmt: skip
        scheme, _, rest = self.url.partition("://")
        hostport, _, endpoint = rest.partition("/")
        host, _, port = hostport.rpartition(":")
        conn: http.client.HTTPConnection
        if scheme == "https":
            conn = http.client.HTTPSConnection(host, int(port), context=tls or self.tls, timeout=30)
        else:
            conn = http.client.HTTPConnection(host, int(port), timeout=30)
        headers = {"Content-Type": content_type}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        data = body.encode() if isinstance(body, str) else body
        try:
            conn.request(method, path or "/" + endpoint, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
            try:
                parsed = json.loads(raw) if raw else {}
            except ValueError:
                parsed = {"text": raw.decode(errors="replace")}
            return Reply(resp.status, parsed, {k.lower(): v for k, v in resp.getheaders()})
        finally:
            conn.close()


Start = Callable[..., AuditDaemon]
