"""The replay source: events from a JSON-lines capture (`falconet capture`, or Kubernetes audit Event/EventList
lines as the API server writes them), for running without root.

Read incrementally and deterministically from a file or a FIFO, so a test (or a user checking new rules
against yesterday's capture) sees exactly the alerts the live daemon would have raised for those events.
"""

from __future__ import annotations

import json
import os
import select
from pathlib import Path

from falconet.model.audit import AuditEvent
from falconet.model.event import Event
from falconet.model.lines import events_from_line
from falconet.server.errors import DaemonError
from falconet.server.source import EventSource, KernelFilter, Log, SourceCounters, SourceKind, SourceRequest


class ReplaySource:
    """A capture read line by line. A malformed line is reported with its line number and skipped; the rest
    still replays."""

    name = "replay"

    def __init__(self, path: Path, log: Log) -> None:
        self.path = path
        self._log = log
        self._fd = -1
        self._buf = b""
        self._eof = False
        self._line = 0
        self.events = 0
        self.malformed = 0

    def start(self) -> None:
        try:
            # O_NONBLOCK so that opening a FIFO does not wait for a writer; select() paces the reads.
            self._fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        except OSError as exc:
            raise DaemonError(f"cannot open the replay file {self.path}: {exc.strerror}") from None

    def kernel_filter(self) -> KernelFilter | None:
        return None  # a capture holds what it holds; it was filtered (or not) when it was made

    def poll(self, timeout_ms: int) -> list[Event | AuditEvent] | None:
        if self._eof and not self._buf:
            return None
        if b"\n" not in self._buf and not self._eof:
            ready, _, _ = select.select([self._fd], [], [], timeout_ms / 1000)
            if ready:
                chunk = os.read(self._fd, 1 << 20)
                if chunk:
                    self._buf += chunk
                else:
                    # End of a regular file; for a FIFO, select() reports no-writer only once a writer has come
                    # and gone (Linux does not report a FIFO that never had a writer), so this is its end too.
                    self._eof = True
        lines = self._buf.split(b"\n")
        if self._eof:
            self._buf = b""
        else:
            self._buf = lines.pop()
        out: list[Event | AuditEvent] = []
        for raw in lines:
            self._line += 1
            if not raw.strip():
                continue
            try:
                # A syscall event, or a Kubernetes audit Event/EventList (numbered in file order).
                out.extend(events_from_line(json.loads(raw), self.events + len(out) + 1))
            except (ValueError, TypeError, RecursionError) as exc:  # RecursionError: hostile nesting
                self.malformed += 1
                self._log(f"replay {self.path}:{self._line}: {exc}; line skipped")
        self.events += len(out)
        return out

    def counters(self) -> SourceCounters:
        return SourceCounters(self.events, 0)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _open(request: SourceRequest) -> EventSource:
    if not request.argument:
        raise DaemonError("--source replay:FILE needs a file name, e.g. --source replay:capture.jsonl")
    return ReplaySource(Path(request.argument), request.log)


KIND = SourceKind(name="replay", argument="FILE", open=_open)
