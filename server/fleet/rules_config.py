"""The daemon file's `fleet_rules` block: where a node watches for pushed rules and where it caches them.

    fleet_rules:
      enabled: true
      servers: [nats://nats-0:4222]      # and any other key of the one NATS connection block (connection.py)
      bucket: falconet_rules             # the key-value bucket `falconet rules push` writes (names.RULES_BUCKET)
      cache_dir: /var/lib/falconet/fleet_rules   # default: fleet_rules/ beside alert_store.path, else this
      check_interval: 30                 # seconds between checks of the bucket beside the watch (a safety net)

An absent block, or `enabled: false`, leaves the node on its local rules files only. `falconet rules push -c`
reads the same block for its connection, so a pusher can use a node's configuration file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from falconet.server.config_values import Section, show
from falconet.server.fleet.connection import NatsConnection, read_connection
from falconet.server.fleet.names import RULES_BUCKET

DEFAULT_CACHE_DIR = Path("/var/lib/falconet/fleet_rules")
_CONNECTION_KEYS = frozenset({"servers", "credentials", "nkey_seed", "user", "password_file", "token_file", "tls",
                              "connect_timeout"})
_OWN_KEYS = frozenset({"enabled", "bucket", "cache_dir", "check_interval"})
_BUCKET = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True, slots=True)
class FleetRulesConfig:
    connection: NatsConnection
    bucket: str = RULES_BUCKET
    cache_dir: Path = DEFAULT_CACHE_DIR
    check_interval: float = 30.0


def read_fleet_rules(block: Section, store_path: Path | None) -> FleetRulesConfig | None:
    """The block, or None when it is absent or disabled; problems go to the block's list."""
    if not block.data:
        return None
    for key in block.data:
        if key not in _CONNECTION_KEYS | _OWN_KEYS:
            name = key if isinstance(key, str) and key.isprintable() and len(key) <= 60 else show(key)
            block.problems.add(f"{block.prefix}{name} is not a known setting (known: "
                               f"{', '.join(sorted(_CONNECTION_KEYS | _OWN_KEYS))}).")
    enabled = block.boolean("enabled", True)
    connection = read_connection(block, name="falconet-rules")
    bucket = block.string("bucket", RULES_BUCKET)
    if not _BUCKET.fullmatch(bucket):
        block.problems.add(f"{block.prefix}bucket must be a key-value bucket name ([A-Za-z0-9_-], at most 64), "
                           f"got {show(bucket)}.")
    default_cache = store_path.parent / "fleet_rules" if store_path is not None else DEFAULT_CACHE_DIR
    cache_dir = block.path("cache_dir") or default_cache
    if not enabled:
        return None
    return FleetRulesConfig(
        connection=connection,
        bucket=bucket,
        cache_dir=cache_dir,
        check_interval=block.number("check_interval", 30.0, minimum=0.1),
    )
