"""Plain values of the SDK's public surface: the server's version, the reconnect policy, defaults.

Kept apart from the clients so that both the blocking and the asyncio client share them unchanged.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from falconet.model.alert import Cursor
from falconet.sdk.api.falco import version_pb2

DEFAULT_UNIX_SOCKET = "/run/falconet/falconet.sock"
"""Where the daemon listens without TLS; access is controlled by the socket's mode and group."""
DEFAULT_TCP_PORT = 5060
"""Falco's usual gRPC port, which Falconet keeps."""

StartPosition = Literal["oldest", "now"] | Cursor | str
"""Where reading starts: the oldest retained alert, only new alerts, or just after a cursor (or its text)."""


@dataclass(frozen=True, slots=True)
class Version:
    """What the server reports about itself and the rules-engine version it implements."""

    version: str
    major: int
    minor: int
    patch: int
    prerelease: str
    build: str
    engine_version: str
    engine_major: int
    engine_minor: int
    engine_patch: int
    engine_fields_checksum: str

    @classmethod
    def from_proto(cls, resp: version_pb2.response) -> Version:
        return cls(
            version=resp.version,
            major=resp.major,
            minor=resp.minor,
            patch=resp.patch,
            prerelease=resp.prerelease,
            build=resp.build,
            engine_version=resp.engine_version,
            engine_major=resp.engine_major,
            engine_minor=resp.engine_minor,
            engine_patch=resp.engine_patch,
            engine_fields_checksum=resp.engine_fields_checksum,
        )


@dataclass(frozen=True, slots=True)
class Backoff:
    """How a subscription reconnects after losing the server.

    Delays grow from `initial` by `multiplier` up to `maximum` seconds, each randomised down to half its
    value so that many clients cut off together do not return together. `max_attempts` consecutive failed
    reconnects raise ConnectError; None retries for ever (what a long-running consumer wants).
    """

    initial: float = 0.1
    maximum: float = 5.0
    multiplier: float = 2.0
    max_attempts: int | None = None

    def __post_init__(self) -> None:
        if not (0 < self.initial <= self.maximum) or self.multiplier < 1:
            raise ValueError("Backoff needs 0 < initial <= maximum and multiplier >= 1")
        if self.max_attempts is not None and self.max_attempts < 0:
            raise ValueError("Backoff.max_attempts must be None or >= 0")

    def delays(self) -> Iterator[float]:
        """Successive waits before reconnect attempts (endless; the caller counts attempts)."""
        delay = self.initial
        while True:
            yield delay / 2 + random.random() * delay / 2
            delay = min(delay * self.multiplier, self.maximum)
