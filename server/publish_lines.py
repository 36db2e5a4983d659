"""`falconet publish`'s reading side: alert JSON lines in, PublishRequests bounded by bytes out.

Every line is judged on its own, so one bad line costs only itself: a line that is not UTF-8, not JSON, not an
alert, not publishable (the checks the input service applies, `falconet.model.alert_checks`), or too large is
reported on stderr with its number and skipped, and every other line is published. Requests are cut by size,
not by count, so they stay far below gRPC's 4 MiB message limit however large the alerts are.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO, TextIO

from falconet.model.alert import Alert
from falconet.model.alert_checks import check_publishable
from falconet.sdk.api.falco import outputs_pb2
from falconet.sdk.api.falconet.v1 import inputs_pb2
from falconet.sdk.convert import alert_to_proto
from falconet.server.alert_input import MAX_ALERT_BYTES

REQUEST_BYTES = 1 << 20
"""A request is sent once it holds this many bytes of alerts (each alert is at most MAX_ALERT_BYTES)."""
MAX_LINE_BYTES = 8 * MAX_ALERT_BYTES
"""Longer lines are skipped unread (JSON escapes may make a line several times its alert's wire size)."""


@dataclass
class PublishLog:
    """What happened to the lines: how many were skipped, and the line number of each alert sent, in order
    (so that an alert the server refuses can be named by its line)."""

    skipped: int = 0
    sent_lines: list[int] = field(default_factory=list)
    err: TextIO = field(default_factory=lambda: sys.stderr)

    def skip(self, number: int, reason: str) -> None:
        self.skipped += 1
        print(f"falconet publish: line {number}: not published: {reason}", file=self.err, flush=True)


JSON_WHITESPACE = " \t\r\n"
"""What makes a line blank: JSON's whitespace only. str.strip would also drop a line of 0x1c-0x1f or 0x0b
(Unicode whitespace, not JSON's), losing it without a report."""


def read_lines(stream: BinaryIO, log: PublishLog) -> Iterator[tuple[int, str]]:
    """(number, text) of each non-blank line; lines that are too long or not UTF-8 are reported and skipped.

    A line is read at most MAX_LINE_BYTES at a time, so a huge line never has to fit in memory.
    """
    number = 0
    while True:
        raw = stream.readline(MAX_LINE_BYTES + 1)
        if not raw:
            return
        number += 1
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            size = len(raw)
            while raw and not raw.endswith(b"\n"):  # the rest of this line, discarded piece by piece
                raw = stream.readline(MAX_LINE_BYTES)
                size += len(raw)
            log.skip(number, f"the line is {size} bytes, over the limit of {MAX_LINE_BYTES}")
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            log.skip(number, f"not UTF-8 (invalid byte 0x{raw[exc.start]:02x} at byte {exc.start + 1})")
            continue
        if text.strip(JSON_WHITESPACE):
            yield number, text


def parse_line(text: str) -> Alert:
    """The alert a line holds, checked as the input service checks it; ValueError says why not."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON at column {exc.colno}: {exc.msg}") from None
    alert = Alert.from_json_dict(doc)
    if "time" not in doc:
        alert.time_ns = time.time_ns()  # an alert without a time happened when it was read
    check_publishable(alert)
    return alert


def publish_requests(stream: BinaryIO, log: PublishLog) -> Iterator[inputs_pb2.PublishRequest]:
    """PublishRequests of the publishable lines of `stream`, each of about REQUEST_BYTES at most."""
    batch: list[outputs_pb2.response] = []
    size = 0
    for number, text in read_lines(stream, log):
        try:
            message = alert_to_proto(parse_line(text))
        except ValueError as exc:
            log.skip(number, str(exc))
            continue
        wire = message.ByteSize()
        if wire > MAX_ALERT_BYTES:
            log.skip(number, f"the alert is {wire} bytes on the wire, over the limit of {MAX_ALERT_BYTES}")
            continue
        if batch and size + wire > REQUEST_BYTES:
            yield inputs_pb2.PublishRequest(alerts=batch)
            batch, size = [], 0
        batch.append(message)
        size += wire + 6  # the field tag and length of each repeated element
        log.sent_lines.append(number)
    if batch:
        yield inputs_pb2.PublishRequest(alerts=batch)
