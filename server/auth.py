"""Who is calling: one place that turns a gRPC call's transport into an identity and an authorization.

TCP connections only exist after gRPC's TLS handshake has verified the client certificate against the CA (date,
chain and the clientAuth extended key usage are checked by the handshake itself), so here a TLS peer is
identified by its certificate subject. Calls over the UNIX socket carry no credential that gRPC exposes (it
reports neither the peer's uid nor its pid), so every UNIX-socket caller is one identity, `unix`: access to
the socket is governed by its file mode and group.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import grpc

UNIX_IDENTITY = "unix"

_Request = TypeVar("_Request")
_Response = TypeVar("_Response")


@dataclass(frozen=True, slots=True)
class Peer:
    """The caller of one RPC."""

    identity: str
    """Key of this caller's Falco cursor: `mtls:<subject>` or `unix`."""
    via_unix: bool
    common_name: str | None = None


def peer_of(context: grpc.aio.ServicerContext[_Request, _Response]) -> Peer:
    """The caller's identity from the call's authentication context."""
    ctx = {key: list(values) for key, values in context.auth_context().items()}
    kind = ctx.get("transport_security_type")
    if kind and kind[0] == b"ssl":
        subject = (ctx.get("x509_subject") or [b""])[0].decode("utf-8", "replace")
        cn_list = ctx.get("x509_common_name")
        cn = cn_list[0].decode("utf-8", "replace") if cn_list else None
        return Peer(identity=f"mtls:{subject}", via_unix=False, common_name=cn)
    return Peer(identity=UNIX_IDENTITY, via_unix=True)


def input_denial(peer: Peer, allow_cns: frozenset[str]) -> str | None:
    """Why this caller may not publish alerts, or None when it may (UNIX socket, or an allow-listed CN)."""
    if peer.via_unix:
        return None
    if peer.common_name is not None and peer.common_name in allow_cns:
        return None
    if not allow_cns:
        return (
            f"publishing alerts over TCP is not allowed for client certificate CN={peer.common_name!r}: the "
            "server's input allow-list is empty (use the UNIX socket, or allow this Common Name)"
        )
    return (
        f"publishing alerts is not allowed for client certificate CN={peer.common_name!r}: it is not in the "
        "server's input allow-list"
    )
