"""Liveness and readiness of the daemon, answered on the metrics listener (`/healthz`, `/readyz`).

Kubernetes restarts a pod whose liveness probe fails and sends no traffic to one that is not ready, so the two
answer different questions. Liveness: is the process still doing its work, that is, has the engine thread
finished a pass of its loop recently (it reports once a second even when no event arrives, so a silence of
`STALL_SECONDS` means it is stuck, not idle). Readiness: can it do what it is for right now: the event source
is running, at least one rule is loaded and the gRPC server listens (when gRPC is enabled). Both answer 200 with
"ok", or 503 with one line per failed check, so `curl` says what is wrong.

The checks are callables set by the daemon as its parts come up; until then they say "starting".
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

STALL_SECONDS = 30.0
"""How long the engine loop may go without a pass before the daemon counts as not live."""

HEALTHZ_PATH = "/healthz"
READYZ_PATH = "/readyz"


def _starting() -> bool:
    return False


@dataclass(slots=True)
class Health:
    """What the probes read. The daemon replaces the checks once the part each one watches exists."""

    source_running: Callable[[], bool] = _starting
    rules_loaded: Callable[[], bool] = _starting
    grpc_listening: Callable[[], bool] = _starting
    stopping: bool = False
    created: float = field(default_factory=time.monotonic)
    last_pass: float | None = None
    """time.monotonic() of the engine loop's latest pass (None: it has not run yet)."""

    def engine_pass(self) -> None:
        """Called by the engine thread on each of its once-a-second reports."""
        self.last_pass = time.monotonic()

    def not_live(self, now: float | None = None) -> list[str]:
        """Why the daemon is not live (empty: it is)."""
        now = time.monotonic() if now is None else now
        since = self.created if self.last_pass is None else self.last_pass
        if now - since > STALL_SECONDS:
            what = "has not run" if self.last_pass is None else "has not completed a pass"
            return [f"the engine loop {what} for {now - since:.0f} s"]
        return []

    def not_ready(self) -> list[str]:
        """Why the daemon is not ready (empty: it is)."""
        if self.stopping:
            return ["the daemon is stopping"]
        problems = []
        if not self.source_running():
            problems.append("the event source is not running")
        if not self.rules_loaded():
            problems.append("no rule is loaded (none in the files, or all disabled or below `priority`)")
        if not self.grpc_listening():
            problems.append("the gRPC server is not listening")
        return problems + self.not_live()


class Probes(Protocol):
    """What the probe paths ask (Health for the daemon; `falconet aggregate` has its own)."""

    def not_live(self) -> list[str]:
        """Why the process is not live (empty: it is)."""

    def not_ready(self) -> list[str]:
        """Why the process should get no traffic now (empty: it should)."""


def _answer(problems: Iterable[str], start_response: StartResponse) -> list[bytes]:
    lines = list(problems)
    status = "503 Service Unavailable" if lines else "200 OK"
    body = ("\n".join(lines) if lines else "ok").encode() + b"\n"
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))])
    return [body]


def with_probes(metrics_app: WSGIApplication, health: Probes) -> WSGIApplication:
    """The metrics WSGI app with the two probe paths in front of it (every other path is the metrics')."""

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == HEALTHZ_PATH:
            return _answer(health.not_live(), start_response)
        if path == READYZ_PATH:
            return _answer(health.not_ready(), start_response)
        return metrics_app(environ, start_response)

    return app
