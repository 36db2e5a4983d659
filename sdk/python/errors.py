"""Every error the SDK raises, under one root, so a caller can catch `FalconetError` and print its message.

    FalconetError              anything the SDK raises; the message is a sentence a user can act on
     ├── ConfigError           the arguments are wrong (conflicting options, unknown priority, bad cursor)
     ├── TLSFilesError         our own mTLS files are unusable (unreadable, key does not match, expired,
     │                         not issued by the given CA): found before any connection is attempted
     ├── ConnectError          the server could not be reached or the TLS handshake failed; says what was
     │                         tried (`target`) and why (`reason`), including after reconnects gave up
     └── ServerError           the server answered with an error status (`code`, `details`)
          ├── InvalidArgument  it rejected a filter or start position (before sending any alert)
          └── PermissionDenied it refused this client for this call

grpc's own RpcError never escapes: it is translated here, with its status kept on `ServerError`.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "ConnectError",
    "FalconetError",
    "InvalidArgument",
    "PermissionDenied",
    "ServerError",
    "TLSFilesError",
]


class FalconetError(Exception):
    """Root of every SDK error."""


class ConfigError(FalconetError, ValueError):
    """The client was configured or called with arguments that cannot work."""


class TLSFilesError(FalconetError):
    """One of the client's own mTLS files (CA, certificate, key) cannot be used; `path` names it."""

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class ConnectError(FalconetError, ConnectionError):
    """Could not reach the server (or lost it for good): `target` is what was tried, `reason` why it failed."""

    def __init__(self, target: str, reason: str) -> None:
        super().__init__(f"cannot connect to Falconet over {target}: {reason}")
        self.target = target
        self.reason = reason


class ServerError(FalconetError):
    """The server answered with an error status. `code` is the gRPC status name, e.g. "UNIMPLEMENTED"."""

    def __init__(self, code: str, details: str) -> None:
        super().__init__(f"the server refused the request ({code}): {details}")
        self.code = code
        self.details = details


class InvalidArgument(ServerError):
    """The server rejected a filter or start position."""


class PermissionDenied(ServerError):
    """The server does not allow this client to make this call."""
