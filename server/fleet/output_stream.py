"""The node's side of the stream: create it on first use, compare an existing one's shape, and find where this
node's alerts in it end (the position a forwarder resumes after).

Resuming reads the stream, never the forwarder's memory: JetStream drops a repeated message id only within the
duplicate window, so after an outage longer than that window, or a node restart, the truth about what arrived
is what the stream holds for the node's subject (its last message's epoch and sequence headers).
"""

from __future__ import annotations

from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import KeyNotFoundError, NotFoundError

from falconet.server.fleet.names import HEADER_EPOCH, HEADER_SEQ, NODES_BUCKET, Heartbeat, all_alerts, escape_host
from falconet.server.fleet.output_config import NatsOutputConfig


def wanted_stream(cfg: NatsOutputConfig) -> StreamConfig:
    shape = cfg.shape
    return StreamConfig(
        name=cfg.stream,
        subjects=[all_alerts(cfg.subject_prefix)],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        num_replicas=shape.replicas,
        max_age=shape.max_age_s,
        max_bytes=shape.max_bytes or -1,
        discard=DiscardPolicy(shape.discard),
        duplicate_window=shape.duplicate_window_s,
    )


def shape_differences(cfg: NatsOutputConfig, existing: StreamConfig) -> list[str]:
    """What differs between the configured shape and an existing stream (empty: the same)."""
    shape = cfg.shape
    out: list[str] = []
    subjects = existing.subjects or []
    wanted = all_alerts(cfg.subject_prefix)
    if wanted not in subjects and ">" not in subjects:
        out.append(f"subjects {subjects} (this node publishes on {wanted})")
    pairs: list[tuple[str, object, object]] = [
        ("replicas", existing.num_replicas or 1, shape.replicas),
        ("max_age", float(existing.max_age or 0), shape.max_age_s),
        ("max_bytes", max(existing.max_bytes or 0, 0), shape.max_bytes),
        ("discard", str(getattr(existing.discard, "value", existing.discard) or "old"), shape.discard),
        ("duplicate_window", float(existing.duplicate_window or 0), shape.duplicate_window_s),
    ]
    for key, have, want in pairs:
        if have != want:
            out.append(f"{key} {have:g} (configured {want:g})" if isinstance(have, float) and isinstance(want, float)
                       else f"{key} {have} (configured {want})")
    return out


async def ensure_stream(js: JetStreamContext, cfg: NatsOutputConfig) -> list[str]:
    """Creates the stream if absent; returns how an existing one differs from the configuration (it is left as
    it is). Raises what nats-py raises (permissions, timeouts) for the caller to report."""
    try:
        info = await js.stream_info(cfg.stream)
    except NotFoundError:
        await js.add_stream(wanted_stream(cfg))
        return []
    return shape_differences(cfg, info.config)


@dataclass(frozen=True, slots=True)
class StreamPosition:
    """Where this node's alerts in the stream end: (epoch, seq) of the last one, or how it was found."""

    epoch: str | None
    seq: int
    how: str


async def last_position(js: JetStreamContext, cfg: NatsOutputConfig, subject: str, host: str) -> StreamPosition:
    """The last alert of `subject` the stream holds, by its headers; when it holds none (retention removed them
    all), the node's own heartbeat, which records the newest forwarded alert, is the floor."""
    try:
        msg = await js.get_last_msg(cfg.stream, subject)
    except NotFoundError:
        msg = None
    if msg is not None:
        headers = msg.headers or {}
        epoch, seq = headers.get(HEADER_EPOCH), headers.get(HEADER_SEQ)
        if epoch and seq and seq.isdigit():
            return StreamPosition(epoch, int(seq), f"the stream's last message for {subject}")
    try:
        kv = await js.key_value(NODES_BUCKET)
        entry = await kv.get(escape_host(host))
    except (NotFoundError, KeyNotFoundError):
        entry = None
    if entry is not None and entry.value:
        try:
            beat = Heartbeat.from_json(entry.value)
        except ValueError:
            beat = None
        if beat is not None and beat.seq > 0:
            return StreamPosition(beat.epoch, beat.seq, "this node's heartbeat (the stream holds none of its alerts)")
    return StreamPosition(None, 0, "nothing (the stream holds no alert of this node)")


async def stored_seqs(js: JetStreamContext, stream: str, subject: str, after: int, epoch: str, upto: int,
                      limit: int) -> set[int]:
    """The node sequences (of `epoch`, up to `upto`) stored on `subject` after stream sequence `after`: walked
    one message at a time ("next message for subject"), at most `limit` messages. Used only after a failure
    that left unacknowledged alerts behind, to find any that JetStream did not store while it stored later ones
    (a stream leader change can do that)."""
    found: set[int] = set()
    at = after + 1
    for _ in range(limit):
        try:
            msg = await js.get_msg(stream, seq=at, subject=subject, next=True)
        except NotFoundError:
            break
        headers = msg.headers or {}
        seq = headers.get(HEADER_SEQ, "")
        if headers.get(HEADER_EPOCH) == epoch and seq.isdigit():
            found.add(int(seq))
            if int(seq) >= upto:
                break
        if msg.seq is None:
            break
        at = int(msg.seq) + 1
    return found
