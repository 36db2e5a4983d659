"""The names a node and an aggregator must agree on: subjects, message ids, headers and bucket names.

A host name becomes exactly one subject token, so `falconet.alerts.*` matches every node and a name with dots
("node-1.eu.example") adds no tokens. NATS subject tokens may not hold '.', '*', '>' or whitespace, and key-value
keys allow only `[-/_=.A-Za-z0-9]`; the escape keeps `[A-Za-z0-9_-]` as is and writes every other UTF-8 byte as
`=XX` (upper-case hex), which is valid in both, reversible, and never collides with an unescaped name. An empty
host name (never produced by the hub, which fills in its own) is the lone token `=`.

Each alert is one message: the payload is the node's serialized `falco.outputs.response` (its `cursor` field
holds the node's epoch and sequence), and the message id is `<epoch>-<seq>`, so JetStream drops a retry of the
same alert within the stream's duplicate window. The same pair is in headers, so a forwarder that restarts reads
the last message the stream holds for its subject and resumes after it without parsing the payload.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

DEFAULT_STREAM = "FALCONET_ALERTS"
DEFAULT_SUBJECT_PREFIX = "falconet.alerts"
NODES_BUCKET = "falconet_nodes"
"""Key-value bucket of node heartbeats: key = escaped host name, value = JSON (see server/fleet docs)."""
CURSORS_BUCKET = "falconet_cursors"
"""Key-value bucket of the aggregators' per-identity Falco cursors, shared so that no aggregator owns state."""
RULES_BUCKET = "falconet_rules"
"""Key-value bucket the fleet's rules files are pushed to (`falconet rules push`; server/fleet/rules_bundle.py)."""
RULES_KEY = "current"
"""The one key of RULES_BUCKET: its value is the whole pushed version (every file, one bundle), so a version is
published and read atomically; its key-value revision is the version's monotonic revision number."""
RULES_HISTORY = 16
"""Versions the bucket keeps (`falconet rules pushed` lists them)."""


def rules_subject(bucket: str = RULES_BUCKET) -> str:
    """The subject a push is published on (a key-value put is a JetStream publish to `$KV.<bucket>.<key>`):
    nodes subscribe to it to wake at once, bucket or no bucket yet."""
    return f"$KV.{bucket}.{RULES_KEY}"


def rules_version(revision: int, digest: str) -> str:
    """The version label a node shows (metrics, heartbeat, logs): `<revision>-<first 12 hex of the digest>`."""
    return f"{revision}-{digest[:12]}"

HEADER_MSG_ID = "Nats-Msg-Id"
HEADER_EPOCH = "Falconet-Epoch"
HEADER_SEQ = "Falconet-Seq"
HEADER_HOST = "Falconet-Host"
"""Its value is `escape_host(host)`, the subject's token (a header value must not carry control characters)."""

_KEEP = re.compile(r"[A-Za-z0-9_-]")
_TOKEN = re.compile(r"(?:[A-Za-z0-9_-]|=[0-9A-F]{2})+|=")


def escape_host(host: str) -> str:
    """One subject token (and valid key-value key) for a host name; reversible with `unescape_host`."""
    if not host:
        return "="
    out: list[str] = []
    for ch in host:
        if _KEEP.fullmatch(ch):
            out.append(ch)
        else:
            out.extend(f"={b:02X}" for b in ch.encode("utf-8", "surrogatepass"))
    return "".join(out)


def unescape_host(token: str) -> str:
    """The host name a token was made from; ValueError for a token `escape_host` cannot produce."""
    if not _TOKEN.fullmatch(token):
        raise ValueError(f"not an escaped host name: {token!r}")
    if token == "=":
        return ""
    raw = bytearray()
    i = 0
    while i < len(token):
        if token[i] == "=":
            raw.append(int(token[i + 1:i + 3], 16))
            i += 3
        else:
            raw.extend(token[i].encode())
            i += 1
    try:
        host = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"not an escaped host name: {token!r}") from e
    if escape_host(host) != token:  # e.g. "=41" for "A": one spelling per host name
        raise ValueError(f"not an escaped host name: {token!r}")
    return host


def alert_subject(host: str, prefix: str = DEFAULT_SUBJECT_PREFIX) -> str:
    """The subject one node publishes its alerts on."""
    return f"{prefix}.{escape_host(host)}"


def all_alerts(prefix: str = DEFAULT_SUBJECT_PREFIX) -> str:
    """The subject filter that matches every node's alerts (the stream's subjects)."""
    return f"{prefix}.*"


FLEET_TOKEN = "=fleet"
"""The subject token of the aggregators' own internal alerts (a node fell silent, bad input was found). No host
name escapes to it (`escape_host` writes only upper-case hex after '='), so no node can publish there under its
own name, and `all_alerts` still matches it: the alerts sit in the stream and every aggregator serves them at
the same cursor. Aggregators publish them with a message id both would compute, so JetStream keeps one."""


def fleet_subject(prefix: str = DEFAULT_SUBJECT_PREFIX) -> str:
    """The subject aggregators publish their internal alerts on."""
    return f"{prefix}.{FLEET_TOKEN}"


def host_of_subject(subject: str, prefix: str = DEFAULT_SUBJECT_PREFIX) -> str:
    """The host name an alert subject carries; ValueError if the subject is not one of ours."""
    head = prefix + "."
    if not subject.startswith(head):
        raise ValueError(f"subject {subject!r} is not under {prefix!r}")
    return unescape_host(subject[len(head):])


def msg_id(epoch: str, seq: int) -> str:
    """JetStream's de-duplication id for a node's alert: the node's store epoch and sequence."""
    return f"{epoch}-{seq}"


def node_permissions(host: str, *, stream: str = DEFAULT_STREAM, prefix: str = DEFAULT_SUBJECT_PREFIX,
                     create: bool = False) -> dict[str, list[str]]:
    """The NATS permissions a node needs, and no more, as nats-server's `publish`/`subscribe` allow lists.

    Write access is to the node's own alert subject and its own heartbeat key only, so a node (or whoever holds
    its credentials) cannot publish alerts under another host's name nor invent or silence nodes; the rest is
    reading: the stream's state and last message for its subject (to resume), its own heartbeat, and the fleet
    rules bucket. `create` adds what creating the stream and the nodes bucket on first use takes (otherwise an
    administrator creates them). Replies come on `_INBOX.>`, which nats-py cannot narrow per node."""
    token = escape_host(host)
    nodes = f"KV_{NODES_BUCKET}"
    rules = f"KV_{RULES_BUCKET}"
    publish = [
        alert_subject(host, prefix),
        f"$KV.{NODES_BUCKET}.{token}",
        f"$JS.API.STREAM.INFO.{stream}",
        f"$JS.API.STREAM.MSG.GET.{stream}",
        f"$JS.API.STREAM.INFO.{nodes}",
        f"$JS.API.STREAM.MSG.GET.{nodes}",
        f"$JS.API.DIRECT.GET.{nodes}.$KV.{NODES_BUCKET}.{token}",
        f"$JS.API.STREAM.INFO.{rules}",
        f"$JS.API.STREAM.MSG.GET.{rules}",
        f"$JS.API.DIRECT.GET.{rules}.>",
    ]
    if create:
        publish += [f"$JS.API.STREAM.CREATE.{stream}", f"$JS.API.STREAM.CREATE.{nodes}"]
    return {"publish": publish, "subscribe": ["_INBOX.>", rules_subject()]}


HEARTBEAT_SECONDS = 5.0
"""How often a node writes its heartbeat (the aggregator's silence threshold is a multiple of it)."""


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """A node's liveness record in NODES_BUCKET (key: `escape_host(host)`), written every HEARTBEAT_SECONDS.

    `seq` is the newest of the node's alerts it has forwarded (0: none yet) under `epoch`; `rules_version` is the
    fleet rules version the node runs ("" if it runs only local files). A key-value value is written by a
    stranger as far as the reader knows, so `from_json` validates every field.
    """

    host: str
    epoch: str
    seq: int
    ts_ns: int
    version: str = ""
    rules_version: str = ""

    def to_json(self) -> bytes:
        return json.dumps({"host": self.host, "epoch": self.epoch, "seq": self.seq, "ts_ns": self.ts_ns,
                           "version": self.version, "rules_version": self.rules_version},
                          separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Heartbeat:
        """ValueError naming what is wrong, for anything that is not a heartbeat this version wrote."""
        try:
            raw = json.loads(data)
        except (ValueError, UnicodeDecodeError) as e:
            raise ValueError(f"heartbeat is not JSON: {e}") from e
        if not isinstance(raw, dict):
            raise ValueError("heartbeat is not a JSON object")
        out: dict[str, str | int] = {}
        for key, kind in (("host", str), ("epoch", str), ("seq", int), ("ts_ns", int),
                          ("version", str), ("rules_version", str)):
            value = raw.get(key, "" if key in ("version", "rules_version") else None)
            in_range = not isinstance(value, int) or 0 <= value < 2**63
            if not isinstance(value, kind) or isinstance(value, bool) or not in_range:
                raise ValueError(f"heartbeat field {key!r} is missing or not a valid {kind.__name__}")
            out[key] = value
        return cls(host=str(out["host"]), epoch=str(out["epoch"]), seq=int(out["seq"]), ts_ns=int(out["ts_ns"]),
                   version=str(out["version"]), rules_version=str(out["rules_version"]))
