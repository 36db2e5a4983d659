"""`falconet serve -o KEY=VALUE`: the daemon file's `grpc` and `alert_store` keys, for the server alone.

`serve` has no configuration file; its flags say what the daemon file's `grpc` and `alert_store` blocks say.
So the flags are written as those two blocks, the overrides are applied on top, and the result is read by
the daemon's own configuration reader: one set of key names and checks for `falconet run -o` and
`falconet serve -o`, and a key serve does not use is refused by name instead of being silently ignored.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import yaml

from falconet.server.config import ServerConfig
from falconet.server.daemon_config import parse_config
from falconet.server.overrides import Override, OverrideError

SERVE_BLOCKS = ("grpc", "alert_store")


def as_blocks(config: ServerConfig) -> dict[str, Any]:
    """A ServerConfig as the daemon file's grpc and alert_store blocks (what its flags amount to)."""

    def path(p: object) -> str | None:
        return None if p is None else str(p)

    grpc: dict[str, Any] = {
        "enabled": True,
        "bind_address": list(config.listen),
        "private_key": path(config.tls_key),
        "cert_chain": path(config.tls_cert),
        "root_certs": path(config.tls_ca),
        "unix_socket_mode": f"{config.unix_mode:04o}",
        "unix_socket_group": config.unix_group,
        "inputs_allowed_common_names": sorted(config.input_allow_cns),
        "retention": config.retention,
        "crl": path(config.tls_crl),
        **dataclasses.asdict(config.limits),
    }
    s = config.store
    store = {"path": path(s.path), "max_alerts": s.max_alerts, "max_age": s.max_age_s, "max_bytes": s.max_bytes,
             "commit_window_ms": s.commit_window_ms, "synchronous": s.synchronous}
    return {"grpc": {k: v for k, v in grpc.items() if v is not None},
            "alert_store": {k: v for k, v in store.items() if v is not None}}


def with_overrides(config: ServerConfig, overrides: Sequence[Override]) -> ServerConfig:
    """`config` with the overrides applied and checked as the daemon checks its file; raises ConfigError
    (every problem, an overridden key's naming its -o) or OverrideError (a key outside grpc/alert_store)."""
    for o in overrides:
        if o.path[0] not in SERVE_BLOCKS:
            raise OverrideError(f"-o {o.text}: falconet serve takes only grpc.* and alert_store.* keys "
                                "(the server's part of the daemon's configuration)")
    text = yaml.safe_dump(as_blocks(config), sort_keys=False)
    d = parse_config(text, source="", overrides=overrides)
    g = d.grpc
    return dataclasses.replace(
        config,
        listen=tuple(g.bind_address),
        tls_ca=g.root_certs,
        tls_cert=g.cert_chain,
        tls_key=g.private_key,
        unix_mode=g.unix_socket_mode,
        unix_group=g.unix_socket_group,
        input_allow_cns=frozenset(g.inputs_allowed_common_names),
        retention=g.retention,
        limits=g.limits,
        tls_crl=g.crl,
        store=d.alert_store,
    )
