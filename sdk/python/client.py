"""The blocking client: `Client(...).subscribe()` is an iterator of typed alerts that survives server restarts.

Reads go through Falco's own `falco.outputs.service` (or Falconet's batched stream when asked), always with a
Falconet start position, so they never consume the per-identity Falco cursor that Falco clients rely on.
A subscription remembers the last cursor it delivered (before the first alert, the position the server
reported in the `falconet-position` header); when the stream breaks it reconnects with back-off (a fresh
channel each time, so grpc's own slow back-off never delays the return) and resumes right after that cursor. If the server restarted, the server itself recognises the stale cursor, starts at its oldest
alert and says so with an internal alert, which the iterator yields like any other.
"""

from __future__ import annotations

import threading
from collections.abc import Generator, Iterable, Iterator
from types import TracebackType

import grpc

from falconet.model.alert import Alert, Priority
from falconet.sdk._base import ClientBase
from falconet.sdk._endpoint import is_retryable
from falconet.sdk._models import StartPosition, Version
from falconet.sdk._query import Query
from falconet.sdk._resume import Reconnects, Resume, position_of
from falconet.sdk.api.falco import outputs_pb2, outputs_pb2_grpc, version_pb2, version_pb2_grpc
from falconet.sdk.api.falconet.v1 import alerts_pb2_grpc
from falconet.sdk.convert import cursor_of, decode_or_skip
from falconet.sdk.errors import ConfigError


class Client(ClientBase):
    """A blocking connection to a Falconet (or Falco) server.

    Over the UNIX socket (the default, `/run/falconet/falconet.sock`) or, given `host`, over TCP with mTLS:
    `ca`, `cert` and `key` are required and checked before dialing (TLSFilesError names a problem);
    `server_name` overrides the name the server certificate must hold (default: `host`).
    `timeout` bounds each unary call and the first connection; `backoff` governs reconnects of `subscribe`.
    Use as a context manager, or call `close()`.
    """

    _channel: grpc.Channel | None = None

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Closes the channel; a subscription being iterated in another thread ends (no more alerts)."""
        with self._lock:
            self._closed = True
            self._closing.set()
            channel, self._channel = self._channel, None
        if channel is not None:
            channel.close()

    def _chan(self, fresh: bool = False) -> grpc.Channel:
        with self._lock:
            if self._closed:
                raise ConfigError("this client is closed")
            if fresh and self._channel is not None:
                self._channel.close()
                self._channel = None
            if self._channel is None:
                self._channel = self._endpoint.channel()
            return self._channel

    # -- unary and finite calls ----------------------------------------------------------------------------------

    def version(self) -> Version:
        """The server's version and the rules-engine version it implements."""
        stub = version_pb2_grpc.serviceStub(self._chan())
        try:
            resp = stub.version(version_pb2.request(), timeout=self._timeout)
        except grpc.RpcError as err:
            raise self._endpoint.error(err) from None
        return Version.from_proto(resp)

    def get(
        self,
        *,
        min_priority: Priority | str | None = None,
        rules: Iterable[str] | str = (),
        tags: Iterable[str] | str = (),
        sources: Iterable[str] | str = (),
        hosts: Iterable[str] | str = (),
        start: StartPosition = "oldest",
    ) -> list[Alert]:
        """The retained alerts matching the filters, from `start` on (default: the oldest retained).

        Non-destructive: it moves no cursor on the server. To poll, pass the last alert's cursor as `start`.
        """
        query = Query.build(
            min_priority=min_priority, rules=rules, tags=tags, sources=sources, hosts=hosts, start=start
        )
        stub = outputs_pb2_grpc.serviceStub(self._chan())
        call = stub.get(query.falco_request(), timeout=self._timeout)
        try:
            return [a for resp in call if (a := decode_or_skip(resp)) is not None]
        except grpc.RpcError as err:
            raise self._endpoint.error(err) from None
        finally:
            call.cancel()

    # -- the subscription -------------------------------------------------------------------------------------

    def subscribe(
        self,
        *,
        min_priority: Priority | str | None = None,
        rules: Iterable[str] | str = (),
        tags: Iterable[str] | str = (),
        sources: Iterable[str] | str = (),
        hosts: Iterable[str] | str = (),
        start: StartPosition = "now",
        batched: bool = False,
    ) -> Generator[Alert, None, None]:
        """Alerts as they are published, for ever, in order; filters are applied by the server.

        `start`: "now" (default), "oldest" (everything retained first), or a Cursor (or its text) to resume
        after. `batched` uses Falconet's batched stream (many alerts per message: faster; Falconet only).
        The first connection fails fast with ConnectError; once connected, a lost stream is re-opened with
        back-off, resuming after the last alert delivered. Arguments are checked now (ConfigError), before
        the first `next()`. `close()` on the returned generator (or on the client) ends the stream.
        """
        query = Query.build(
            min_priority=min_priority, rules=rules, tags=tags, sources=sources, hosts=hosts, start=start
        )
        self.version()  # fail fast, with the reason, if the server cannot be reached at all
        return self._subscription(Resume(query), batched)

    def _subscription(self, resume: Resume, batched: bool) -> Generator[Alert, None, None]:
        reconnects = Reconnects(self._backoff, self.target, resume)
        fresh = False
        while True:
            # The first stream runs on the channel `version()` just used; a later one on a fresh channel is
            # proven only once the server answers on it (see Resume.answered).
            answered = resume.answered if fresh else -1
            try:
                stream = self._stream(resume, batched, fresh)
                try:
                    for alert in stream:
                        reconnects.delivered()
                        if resume.accept(alert):
                            yield alert
                finally:
                    stream.close()
                if self._closed:
                    return
                reason = "the server ended the stream"
            except grpc.RpcError as err:
                if self._closed:
                    return
                if not is_retryable(err):
                    raise self._endpoint.error(err) from None
                established = resume.answered > answered
                reason = self._endpoint.explain(err.code(), err.details() or "", established=established)
            # Back-off between reconnects (not synchronisation); close() cuts it short.
            if self._closing.wait(reconnects.lost(reason)):
                return
            fresh = True

    def _stream(self, resume: Resume, batched: bool, fresh: bool) -> Generator[Alert, None, None]:
        channel = self._chan(fresh=fresh)
        after = resume.start_after()
        if batched:
            bstub = alerts_pb2_grpc.AlertServiceStub(channel)
            bcall = bstub.Subscribe(resume.query.batched_request(after))
            try:
                resume.started_at(position_of(bcall.initial_metadata()))
                for batch in bcall:
                    for resp in batch.alerts:
                        alert = decode_or_skip(resp)
                        if alert is None:
                            resume.started_at(cursor_of(resp))  # skipped, but resuming goes past it
                        else:
                            yield alert
            finally:
                bcall.cancel()
            return
        stub = outputs_pb2_grpc.serviceStub(channel)
        done = threading.Event()
        call = stub.sub(_requests(resume.query.falco_request(after), done))
        try:
            # The headers come before any alert: if the stream breaks before its first alert, it resumes here.
            resume.started_at(position_of(call.initial_metadata()))
            for resp in call:
                alert = decode_or_skip(resp)
                if alert is None:
                    resume.started_at(cursor_of(resp))  # skipped, but resuming goes past it
                else:
                    yield alert
        finally:
            done.set()
            call.cancel()


def _requests(first: outputs_pb2.request, done: threading.Event) -> Iterator[outputs_pb2.request]:
    """Falco's `sub` request stream: our one request, then held open (not half-closed) until the call ends,
    since some servers take a half-close as the end of the subscription."""
    yield first
    done.wait()
