"""The `nats_output` block: where a node forwards its alerts (the connection keys of server/fleet/connection.py)
and the shape of the JetStream stream it creates when the stream does not exist yet.

    nats_output:
      enabled: true
      servers: [nats://nats-0:4222, nats://nats-1:4222]
      credentials: /etc/falconet/nats.creds     # or nkey_seed, user + password_file, token_file; tls: {...}
      stream: FALCONET_ALERTS                    # created on first use if absent
      subject_prefix: falconet.alerts            # alerts go to <prefix>.<escaped host name>
      replicas: 1                                # 3 on a cluster
      max_age: 604800                            # seconds the stream keeps an alert (0: no limit)
      max_bytes: 0                               # bytes the stream keeps (0: no limit)
      discard: old                               # old: drop the oldest when full; new: refuse new alerts
      duplicate_window: 120                      # seconds JetStream remembers message ids
      max_in_flight: 1024                        # ours: alerts published and not yet acknowledged
      ack_timeout: 5                             # ours: seconds an acknowledgement may take

The shape applies only when this node creates the stream: an existing stream is never changed by a node (an
operator, or another node with other settings, made it so); a difference is reported once per connection.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from falconet.server.config_values import Problems, Section, show, yaml_problem
from falconet.server.errors import ConfigError
from falconet.server.fleet.connection import NatsConnection, read_connection
from falconet.server.fleet.names import DEFAULT_STREAM, DEFAULT_SUBJECT_PREFIX

DISCARD_POLICIES = ("old", "new")
_STREAM_NAME = re.compile(r"[A-Za-z0-9_-]{1,255}")
_SUBJECT_TOKEN = re.compile(r"[A-Za-z0-9_\-=]+")


@dataclass(frozen=True, slots=True)
class StreamShape:
    """What a node asks of the stream it creates; compared with an existing stream's configuration."""

    replicas: int = 1
    max_age_s: float = 7 * 86400.0
    max_bytes: int = 0
    discard: str = "old"
    duplicate_window_s: float = 120.0


@dataclass(frozen=True, slots=True)
class NatsOutputConfig:
    enabled: bool = False
    connection: NatsConnection = field(default_factory=NatsConnection)
    stream: str = DEFAULT_STREAM
    subject_prefix: str = DEFAULT_SUBJECT_PREFIX
    shape: StreamShape = field(default_factory=StreamShape)
    max_in_flight: int = 1024
    ack_timeout_s: float = 5.0


_KEYS = frozenset({
    "enabled", "servers", "credentials", "nkey_seed", "user", "password_file", "token_file", "tls", "connect_timeout",
    "stream", "subject_prefix", "replicas", "max_age", "max_bytes", "discard", "duplicate_window", "max_in_flight",
    "ack_timeout",
})


def read_nats_output(s: Section) -> NatsOutputConfig:
    """The block's settings; every problem goes to the section's list with the key named."""
    d = NatsOutputConfig()
    for key in s.data:
        if key not in _KEYS:
            name = key if isinstance(key, str) and key.isprintable() and len(key) <= 60 else show(key)
            s.problems.add(f"{s.prefix}{name} is not a known setting (known: {', '.join(sorted(_KEYS))}).")
    ds = d.shape
    stream = s.string("stream", d.stream)
    if not _STREAM_NAME.fullmatch(stream):
        s.problems.add(f"{s.prefix}stream must be a JetStream stream name (letters, digits, - and _), "
                       f"got {show(stream)}.")
        stream = d.stream
    prefix = s.string("subject_prefix", d.subject_prefix)
    if not all(_SUBJECT_TOKEN.fullmatch(t) for t in prefix.split(".")):
        s.problems.add(f"{s.prefix}subject_prefix must be NATS subject tokens joined by dots, with no wildcards "
                       f"or spaces, got {show(prefix)}.")
        prefix = d.subject_prefix
    discard = s.string("discard", ds.discard)
    if discard not in DISCARD_POLICIES:
        s.problems.add(f"{s.prefix}discard must be old or new, got {show(discard)}.")
        discard = ds.discard
    shape = StreamShape(
        replicas=s.integer("replicas", ds.replicas, minimum=1),
        max_age_s=s.number("max_age", ds.max_age_s),
        max_bytes=s.integer("max_bytes", ds.max_bytes),
        discard=discard,
        duplicate_window_s=s.number("duplicate_window", ds.duplicate_window_s, minimum=0.001),
    )
    if shape.replicas > 5:
        s.problems.add(f"{s.prefix}replicas must be at most 5 (JetStream's limit), got {shape.replicas}.")
    if shape.max_age_s and shape.duplicate_window_s > shape.max_age_s:
        s.problems.add(f"{s.prefix}duplicate_window ({shape.duplicate_window_s:g} s) must not exceed "
                       f"{s.prefix}max_age ({shape.max_age_s:g} s).")
    return NatsOutputConfig(
        enabled=s.boolean("enabled", d.enabled),
        connection=read_connection(s, name="falconet-node"),
        stream=stream,
        subject_prefix=prefix,
        shape=shape,
        max_in_flight=s.integer("max_in_flight", d.max_in_flight, minimum=1),
        ack_timeout_s=s.number("ack_timeout", d.ack_timeout_s, minimum=0.1),
    )


def load_nats_output(path: Path) -> NatsOutputConfig:
    """The `nats_output` block of a YAML file (`falconet serve --nats-output FILE`, which has no other config);
    raises ConfigError listing every problem. The block is read as enabled unless it says otherwise."""
    source = str(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError([f"The file {path} cannot be read: {exc.strerror}."], source=source) from None
    except UnicodeDecodeError:
        raise ConfigError([f"The file {path} is not UTF-8 text."], source=source) from None
    except yaml.YAMLError as exc:
        raise ConfigError([yaml_problem(exc)], source=source) from None
    if not isinstance(data, dict) or not isinstance(data.get("nats_output"), dict):
        raise ConfigError([f"{path} must hold a nats_output block (a mapping)."], source=source)
    block = dict(data["nats_output"])
    block.setdefault("enabled", True)
    problems = Problems(path.resolve().parent)
    config = read_nats_output(Section(block, "nats_output.", problems))
    if problems.problems:
        raise ConfigError(problems.problems, source=source)
    return config
