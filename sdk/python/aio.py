"""The asyncio client (grpc.aio): the same calls, filters, start positions and resume as `Client`.

`await subscribe()` returns an async generator; `aclose()` on it, `close()` on the client, or cancelling the task
that iterates it ends the stream on the server too (breaking out of `async for` alone leaves that to the
garbage collector).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Iterable
from types import TracebackType

import grpc
import grpc.aio

from falconet.model.alert import Alert, Priority
from falconet.sdk._base import ClientBase
from falconet.sdk._endpoint import is_retryable
from falconet.sdk._models import StartPosition, Version
from falconet.sdk._query import Query
from falconet.sdk._resume import Reconnects, Resume, position_of
from falconet.sdk.api.falco import outputs_pb2_grpc, version_pb2, version_pb2_grpc
from falconet.sdk.api.falconet.v1 import alerts_pb2_grpc
from falconet.sdk.convert import cursor_of, decode_or_skip
from falconet.sdk.errors import ConfigError


class AsyncClient(ClientBase):
    """An asyncio connection to a Falconet (or Falco) server; arguments as for `Client`.

    Create it inside a running event loop (grpc.aio channels belong to the loop that made them); use
    `async with`, or `await close()`.
    """

    _channel: grpc.aio.Channel | None = None

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Closes the channel; a subscription still being iterated ends (its loop sees no more alerts)."""
        self._closed = True
        await self._drop_channel()

    async def _drop_channel(self) -> None:
        channel, self._channel = self._channel, None
        if channel is not None:
            await channel.close()

    async def _chan(self, fresh: bool = False) -> grpc.aio.Channel:
        if self._closed:
            raise ConfigError("this client is closed")
        if fresh:
            await self._drop_channel()
        if self._channel is None:
            self._channel = self._endpoint.aio_channel()
        return self._channel

    async def version(self) -> Version:
        """The server's version and the rules-engine version it implements."""
        stub = version_pb2_grpc.serviceStub(await self._chan())
        try:
            resp = await stub.version(version_pb2.request(), timeout=self._timeout)
        except grpc.RpcError as err:
            raise self._endpoint.error(err) from None
        return Version.from_proto(resp)

    async def get(
        self,
        *,
        min_priority: Priority | str | None = None,
        rules: Iterable[str] | str = (),
        tags: Iterable[str] | str = (),
        sources: Iterable[str] | str = (),
        hosts: Iterable[str] | str = (),
        start: StartPosition = "oldest",
    ) -> list[Alert]:
        """The retained alerts matching the filters, from `start` on; non-destructive (see `Client.get`)."""
        query = Query.build(
            min_priority=min_priority, rules=rules, tags=tags, sources=sources, hosts=hosts, start=start
        )
        stub = outputs_pb2_grpc.serviceStub(await self._chan())
        call = stub.get(query.falco_request(), timeout=self._timeout)
        try:
            return [a async for resp in call if (a := decode_or_skip(resp)) is not None]
        except grpc.RpcError as err:
            raise self._endpoint.error(err) from None
        finally:
            call.cancel()

    async def subscribe(
        self,
        *,
        min_priority: Priority | str | None = None,
        rules: Iterable[str] | str = (),
        tags: Iterable[str] | str = (),
        sources: Iterable[str] | str = (),
        hosts: Iterable[str] | str = (),
        start: StartPosition = "now",
        batched: bool = False,
    ) -> AsyncGenerator[Alert, None]:
        """Alerts as they are published, with reconnect and resume; see `Client.subscribe`.

        Awaiting it checks the arguments and the first connection, then returns the iterator:
        `async for alert in await client.subscribe(...)`.
        """
        query = Query.build(
            min_priority=min_priority, rules=rules, tags=tags, sources=sources, hosts=hosts, start=start
        )
        await self.version()
        return self._subscription(Resume(query), batched)

    async def _subscription(self, resume: Resume, batched: bool) -> AsyncGenerator[Alert, None]:
        reconnects = Reconnects(self._backoff, self.target, resume)
        fresh = False
        while True:
            # The first stream runs on the channel `version()` just used; a later one on a fresh channel is
            # proven only once the server answers on it (see Resume.answered).
            answered = resume.answered if fresh else -1
            try:
                stream = self._stream(resume, batched, fresh)
                try:
                    async for alert in stream:
                        reconnects.delivered()
                        if resume.accept(alert):
                            yield alert
                finally:
                    await stream.aclose()
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
            await asyncio.sleep(reconnects.lost(reason))  # back-off between reconnects, not synchronisation
            if self._closed:
                return
            fresh = True

    async def _stream(self, resume: Resume, batched: bool, fresh: bool) -> AsyncGenerator[Alert, None]:
        channel = await self._chan(fresh=fresh)
        after = resume.start_after()
        if batched:
            bcall = alerts_pb2_grpc.AlertServiceStub(channel).Subscribe(resume.query.batched_request(after))
            try:
                resume.started_at(position_of(await bcall.initial_metadata()))
                async for batch in bcall:
                    for resp in batch.alerts:
                        alert = decode_or_skip(resp)
                        if alert is None:
                            resume.started_at(cursor_of(resp))  # skipped, but resuming goes past it
                        else:
                            yield alert
            finally:
                bcall.cancel()
            return
        call = outputs_pb2_grpc.serviceStub(channel).sub()
        try:
            # One request, and no half-close: later requests would only be keep-alives.
            await call.write(resume.query.falco_request(after))
            # The headers come before any alert: if the stream breaks before its first alert, it resumes here.
            resume.started_at(position_of(await call.initial_metadata()))
            while True:
                resp = await call.read()
                if resp is grpc.aio.EOF:
                    return
                alert = decode_or_skip(resp)
                if alert is None:
                    resume.started_at(cursor_of(resp))  # skipped, but resuming goes past it
                else:
                    yield alert
        finally:
            call.cancel()
