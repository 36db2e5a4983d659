"""How a daemon, an aggregator or `falconet rules push` reaches NATS: one settings block, one connect.

Every fleet component reads the same keys, so a chart or a user writes the connection once per component:

    nats_output:             # (or the aggregator's / rules watcher's block: same keys)
      servers: [nats://nats-0:4222, nats://nats-1:4222]
      credentials: /etc/falconet/nats.creds    # a NATS .creds file (JWT + nkey seed), or
      nkey_seed: /etc/falconet/node.nk          # an nkey seed file, or
      user: ...; password_file: ...             # user and a file holding the password, or
      token_file: ...                           # a file holding a token
      tls: {ca: ca.crt, cert: client.crt, key: client.key}   # TLS, client certificate optional
      connect_timeout: 5                        # seconds for one attempt

Secrets are read from files, never from the YAML itself, so a config map can be public and the secrets live in
Secrets. At most one of credentials, nkey_seed, user and token_file may be given.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nats.aio.client import Client as NatsClient

from falconet.server.config_values import Section, show

DEFAULT_SERVERS = ("nats://127.0.0.1:4222",)


@dataclass(frozen=True, slots=True)
class NatsTls:
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None


@dataclass(frozen=True, slots=True)
class NatsConnection:
    """Where NATS is and who we are to it."""

    servers: tuple[str, ...] = DEFAULT_SERVERS
    credentials: Path | None = None
    nkey_seed: Path | None = None
    user: str | None = None
    password_file: Path | None = None
    token_file: Path | None = None
    tls: NatsTls | None = None
    connect_timeout: float = 5.0
    name: str = "falconet"

    def describe(self) -> str:
        """The servers, for log lines (never a secret)."""
        return ", ".join(self.servers)


def read_connection(block: Section, *, name: str = "falconet") -> NatsConnection:
    """The connection keys of one block (`nats_output`, `aggregate`, ...); problems go to the block's list."""
    servers = block.strings("servers")
    if servers is not None:
        if not servers:
            block.problems.add(f"{block.prefix}servers must list at least one NATS URL.")
        for s in servers:
            if not s.startswith(("nats://", "tls://", "ws://", "wss://")) or any(c.isspace() for c in s):
                block.problems.add(f"{block.prefix}servers holds {show(s)}, which is not a NATS URL "
                                   "(nats://host:port, tls://host:port).")
    auth = {k: block.path(k) for k in ("credentials", "nkey_seed", "password_file", "token_file")}
    user = block.data.get("user")
    if user is not None and not isinstance(user, str):
        block.problems.add(f"{block.prefix}user must be a string, got {show(user)}.")
        user = None
    given = [k for k in ("credentials", "nkey_seed", "token_file") if auth[k] is not None] + (["user"] if user else [])
    if len(given) > 1:
        block.problems.add(f"{block.prefix} takes one way to authenticate, got {', '.join(given)}.")
    if auth["password_file"] is not None and not user:
        block.problems.add(f"{block.prefix}password_file needs {block.prefix}user.")
    for key, path in auth.items():
        if path is not None and not path.is_file():
            block.problems.add(f"{block.prefix}{key}: {path} is not a readable file.")
    tls: NatsTls | None = None
    if "tls" in block.data:
        t = block.section("tls")
        tls = NatsTls(t.path("ca"), t.path("cert"), t.path("key"))
        if (tls.cert is None) != (tls.key is None):
            block.problems.add(f"{block.prefix}tls needs both cert and key for a client certificate, or neither.")
        for key, path in (("ca", tls.ca), ("cert", tls.cert), ("key", tls.key)):
            if path is not None and not path.is_file():
                block.problems.add(f"{block.prefix}tls.{key}: {path} is not a readable file.")
    return NatsConnection(
        servers=servers or DEFAULT_SERVERS,
        credentials=auth["credentials"],
        nkey_seed=auth["nkey_seed"],
        user=user or None,
        password_file=auth["password_file"],
        token_file=auth["token_file"],
        tls=tls,
        connect_timeout=block.number("connect_timeout", 5.0, minimum=0.1),
        name=name,
    )


def tls_context(tls: NatsTls) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(tls.ca) if tls.ca else None)
    if tls.cert is not None and tls.key is not None:
        ctx.load_cert_chain(str(tls.cert), str(tls.key))
    return ctx


def connect_options(conn: NatsConnection) -> dict[str, Any]:
    """nats-py's `connect` keyword arguments for these settings (secrets read now, from their files)."""
    opts: dict[str, Any] = {
        "servers": list(conn.servers),
        "name": conn.name,
        "connect_timeout": conn.connect_timeout,
    }
    if conn.credentials is not None:
        opts["user_credentials"] = str(conn.credentials)
    if conn.nkey_seed is not None:
        opts["nkeys_seed"] = str(conn.nkey_seed)
    if conn.user:
        opts["user"] = conn.user
        if conn.password_file is not None:
            opts["password"] = conn.password_file.read_text().strip()
    if conn.token_file is not None:
        opts["token"] = conn.token_file.read_text().strip()
    if conn.tls is not None:
        opts["tls"] = tls_context(conn.tls)
    return opts


async def connect(conn: NatsConnection, **callbacks: Any) -> NatsClient:
    """A connected client. `callbacks` are nats-py's (error_cb, disconnected_cb, reconnected_cb, ...) and its
    reconnect settings; by default a client reconnects forever, since every user of it outlives NATS outages."""
    opts = connect_options(conn)
    opts.setdefault("max_reconnect_attempts", -1)
    opts.update(callbacks)
    client = NatsClient()
    try:
        await client.connect(**opts)
    except BaseException:
        # nats-py leaves a refused connection's socket open (an authorization error, for one): close it here,
        # since a daemon retrying a misconfigured NATS for hours would otherwise leak a socket per attempt.
        transport = getattr(client, "_transport", None)
        if transport is not None:
            transport.close()
        await client.close()
        raise
    return client
