"""Helpers for the alert store tests: a `falconet serve --store` process that can be killed with SIGKILL, and
blocking clients for publishing, reading and subscribing over its UNIX socket."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc

from falconet.model.alert import Alert, Priority
from falconet.sdk.api.falco import outputs_pb2, outputs_pb2_grpc
from falconet.sdk.api.falconet.v1 import alerts_pb2, alerts_pb2_grpc, inputs_pb2, inputs_pb2_grpc, types_pb2
from falconet.sdk.convert import alert_to_proto

FALCONET = [sys.executable, "-m", "falconet.server.cli"]


def store_alert(n: int, size: int = 0) -> Alert:
    """Alert number `n`, recognisable by its output (`store-test n=N`); `size` pads the output."""
    return Alert(
        time_ns=1_700_000_000_000_000_000 + n,
        rule="Store test",
        priority=Priority.WARNING,
        source="syscall",
        output=f"store-test n={n}" + (" " + "x" * size if size else ""),
        output_fields={"n": n},
        tags=["store"],
        hostname="store-host",
    )


def number_of(resp: outputs_pb2.response) -> int | None:
    """The N of a test alert, None for anything else (the server's internal alerts)."""
    if resp.rule != "Store test":
        return None
    return int(resp.output.split()[1].removeprefix("n="))


class ServeProcess:
    """`falconet serve --store FILE` on a UNIX socket; `kill()` sends SIGKILL, as a crash would."""

    def __init__(self, workdir: Path, store: Path, *extra: str) -> None:
        self.sock = workdir / "store.sock"
        self.proc = subprocess.Popen(
            [*FALCONET, "serve", "--listen", f"unix://{self.sock}", "--store", str(store), *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.stderr: list[str] = []
        self._err = threading.Thread(target=self._drain_stderr, daemon=True)
        self._err.start()
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # the first line is "listening on ..." once it serves (or EOF)
        if not line.startswith("listening on"):
            self.proc.wait(10)
            self._err.join(5)
            raise AssertionError(f"falconet serve did not start: {line!r} {''.join(self.stderr)}")
        self.channel = grpc.insecure_channel(f"unix://{self.sock}")

    def _drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)

    def kill(self) -> None:
        """SIGKILL: no flush, no clean shutdown."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(20)
        self.channel.close()
        self._close_pipes()

    def stop(self) -> int:
        """SIGTERM and wait; returns the exit status."""
        self.channel.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(30)
        self._close_pipes()
        return code

    def _close_pipes(self) -> None:
        self._err.join(10)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()

    # -- clients -------------------------------------------------------------------------------------------

    def publish(self, numbers: list[int], size: int = 0, timeout: float = 30) -> inputs_pb2.PublishResponse:
        """One Publish call carrying alerts `numbers`; returns only once the server acknowledged them."""
        req = inputs_pb2.PublishRequest(alerts=[alert_to_proto(store_alert(n, size)) for n in numbers])
        stub = inputs_pb2_grpc.InputServiceStub(self.channel)
        reply: inputs_pb2.PublishResponse = stub.Publish(iter([req]), timeout=timeout)
        return reply

    def get_all(self) -> list[outputs_pb2.response]:
        """Every retained alert, through falconet.v1 GetAll."""
        stub = alerts_pb2_grpc.AlertServiceStub(self.channel)
        out: list[outputs_pb2.response] = []
        for msg in stub.GetAll(alerts_pb2.GetAllRequest(), timeout=60):
            out.extend(msg.alerts)
        return out

    def falco_get(self, start: types_pb2.Start | None = None) -> list[outputs_pb2.response]:
        """Falco's `get`: with no start, this identity's Falco cursor (drain semantics)."""
        stub = outputs_pb2_grpc.serviceStub(self.channel)
        req = outputs_pb2.request() if start is None else outputs_pb2.request(start=start)
        return list(stub.get(req, timeout=60))

    def subscribe(self, start: types_pb2.Start) -> Iterator[outputs_pb2.response]:
        """The batched stream from `start`, one alert at a time (ends when the server goes away)."""
        stub = alerts_pb2_grpc.AlertServiceStub(self.channel)
        for msg in stub.Subscribe(alerts_pb2.SubscribeRequest(start=start)):
            yield from msg.alerts


@dataclass
class Received:
    """What one subscriber received: (epoch, sequence, test number) in order, and any internal alerts."""

    alerts: list[tuple[str, int, int]]
    internal: list[str]


def wait_for(condition: object, timeout: float, what: str) -> None:
    """Polls `condition()` until true, failing with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


def audit_store(store: Path) -> int:
    """Checks a stopped store's files agree: every indexed record is whole (its checksum holds) and no segment
    holds bytes past its last indexed record; returns how many alerts the index holds."""
    import sqlite3

    from falconet.server.store_data import HEAD, data_dir, read_record, segments_in

    conn = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT first, last, segment, offset, size FROM chunks ORDER BY first").fetchall()
    finally:
        conn.close()
    directory = data_dir(store)
    ends: dict[int, int] = {}
    for first, last, segment, offset, size in rows:
        read_record(directory, segment, offset, first, last, size)
        ends[segment] = max(ends.get(segment, 0), offset + HEAD.size + size)
    for number, path in segments_in(directory).items():
        assert path.stat().st_size == ends.get(number, 0), f"{path}: bytes past its last indexed record"
    return sum(last - first + 1 for first, last, *_ in rows)
