"""Falconet's Python SDK: typed alerts from a Falconet (or Falco) server over the UNIX socket or mTLS.

    from falconet.sdk import Client
    with Client() as client:                              # /run/falconet/falconet.sock
        for alert in client.subscribe(min_priority="Warning"):
            print(alert.cursor, alert.priority.falco_name, alert.output)

`AsyncClient` offers the same with asyncio. Every error is a `FalconetError` (see falconet.sdk.errors).
The names below are the whole public surface; modules starting with `_` are internal. They load on first
use, so importing this package (or `falconet --help`, which imports it) does not load grpc.
"""

import importlib as _importlib
import typing as _typing

if _typing.TYPE_CHECKING:
    from falconet.model.alert import Alert, Cursor, Priority
    from falconet.sdk._models import DEFAULT_TCP_PORT, DEFAULT_UNIX_SOCKET, Backoff, StartPosition, Version
    from falconet.sdk.aio import AsyncClient
    from falconet.sdk.client import Client
    from falconet.sdk.errors import (
        ConfigError,
        ConnectError,
        FalconetError,
        InvalidArgument,
        PermissionDenied,
        ServerError,
        TLSFilesError,
    )

_EXPORTS: dict[str, str] = {
    "Client": "falconet.sdk.client",
    "AsyncClient": "falconet.sdk.aio",
    "Alert": "falconet.model.alert",
    "Cursor": "falconet.model.alert",
    "Priority": "falconet.model.alert",
    "Backoff": "falconet.sdk._models",
    "Version": "falconet.sdk._models",
    "StartPosition": "falconet.sdk._models",
    "DEFAULT_UNIX_SOCKET": "falconet.sdk._models",
    "DEFAULT_TCP_PORT": "falconet.sdk._models",
    "FalconetError": "falconet.sdk.errors",
    "ConfigError": "falconet.sdk.errors",
    "TLSFilesError": "falconet.sdk.errors",
    "ConnectError": "falconet.sdk.errors",
    "ServerError": "falconet.sdk.errors",
    "InvalidArgument": "falconet.sdk.errors",
    "PermissionDenied": "falconet.sdk.errors",
}

__all__ = [
    "DEFAULT_TCP_PORT",
    "DEFAULT_UNIX_SOCKET",
    "Alert",
    "AsyncClient",
    "Backoff",
    "Client",
    "ConfigError",
    "ConnectError",
    "Cursor",
    "FalconetError",
    "InvalidArgument",
    "PermissionDenied",
    "Priority",
    "ServerError",
    "StartPosition",
    "TLSFilesError",
    "Version",
]


def __getattr__(name: str) -> _typing.Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'falconet.sdk' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
