"""Falco's own services, wire-compatible with its clients: `falco.outputs.service` (sub, get) and `falco.version`.

A request without Falconet's `start` field gets Falco's semantics through the caller's Falco cursor: the backlog
not yet sent to this identity, then (for `sub`) every live alert. With `start`, reading is non-destructive and no
cursor moves. Responses are pre-serialized bytes from the hub (the handlers are registered without a response
serializer), so the proto conversion happens once per alert, not once per subscriber.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.metadata
import re
from collections.abc import AsyncIterator
from typing import Any

import grpc

from falconet.sdk.api.falco import outputs_pb2, version_pb2
from falconet.server.auth import peer_of
from falconet.server.hub import AlertFilter, Hub, StartResult
from falconet.server.requests import RequestError, parse_filter, parse_start
from falconet.server.streams import position_metadata, single_stream

OUTPUTS_SERVICE = "falco.outputs.service"
VERSION_SERVICE = "falco.version.service"


def engine_version() -> str:
    """The version of Falco's rules language the engine implements (what `required_engine_version` is checked
    against)."""
    from falconet.rules.loader import ENGINE_VERSION_TEXT

    return ENGINE_VERSION_TEXT


def fields_checksum() -> str:
    """SHA-256 over the sorted names of the fields the engine supports, as Falco reports a checksum of its own."""
    from falconet.rules.fields import known_fields

    return hashlib.sha256("\n".join(sorted(known_fields())).encode()).hexdigest()


def falconet_version() -> str:
    try:
        return importlib.metadata.version("falconet")
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0"


_SEMVER = re.compile(r"^(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.-]+))?(?:\+([0-9A-Za-z.-]+))?$")


def version_response() -> version_pb2.response:
    """Falconet's version in Falco's version message, with the engine version split as Falco >= 0.37 does."""
    version = falconet_version()
    m = _SEMVER.match(version)
    major, minor, patch, pre, build = m.groups() if m else ("0", "0", "0", None, None)
    ev = engine_version()
    em = _SEMVER.match(ev)
    emajor, eminor, epatch = (em.group(1), em.group(2), em.group(3)) if em else ("0", "0", "0")
    return version_pb2.response(
        version=version,
        major=int(major),
        minor=int(minor),
        patch=int(patch),
        prerelease=pre or "",
        build=build or "",
        engine_minor=int(eminor),
        engine_fields_checksum=fields_checksum(),
        engine_major=int(emajor),
        engine_patch=int(epatch),
        engine_version=ev,
    )


def prepare(
    hub: Hub, request: outputs_pb2.request, identity: str
) -> tuple[AlertFilter, StartResult, str | None]:
    """Validates a request's Falconet fields; returns the filter, where to start, and the Falco identity (None
    when the request carries a start position, i.e. non-destructive Falconet semantics)."""
    flt = parse_filter(request.filter) if request.HasField("filter") else AlertFilter()
    if request.HasField("start"):
        return flt, parse_start(request.start).resolve(hub), None
    return flt, hub.start_falco(identity), identity


async def _drain(requests: AsyncIterator[outputs_pb2.request]) -> None:
    # Later `sub` requests are keep-alives: read and discard them so the client's sends never stall.
    try:
        async for _ in requests:
            pass
    except Exception:  # the call ended (cancelled or broken): the response side sees and reports it
        return


class FalcoOutputs:
    """`falco.outputs.service`."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    # Hooks for `falconet aggregate` (server/fleet/aggregate_serve.py), which keeps Falco cursors in a shared
    # key-value bucket: called from within a call rather than wrapping it, so that no alert passes through one
    # more async generator than on a node (Falco's `sub` sends one message per alert).

    async def call_starts(self, identity: str) -> None:
        """Before a `sub` or `get` call reads the hub."""

    def sub_ended(self, identity: str) -> None:
        """A `sub` call ended, however (must not block)."""

    async def get_done(self, identity: str) -> None:
        """A `get` call sent its last alert; the client sees the end after this returns."""

    async def sub(
        self, requests: AsyncIterator[outputs_pb2.request], context: grpc.aio.ServicerContext[outputs_pb2.request, bytes]
    ) -> AsyncIterator[bytes]:
        peer = peer_of(context)
        await self.call_starts(peer.identity)
        try:
            try:
                first = await requests.__anext__()  # streaming starts with the first request, as in Falco
            except StopAsyncIteration:
                return
            try:
                flt, start, falco_identity = prepare(self.hub, first, peer.identity)
            except RequestError as exc:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
                return
            # With a Falconet start, say where the stream starts so the client can resume from there even if it
            # is cut before its first alert; Falco's cursor-less requests get Falco's bare headers.
            await context.send_initial_metadata(
                () if falco_identity is not None else position_metadata(self.hub, start.next_seq)
            )
            drain = asyncio.ensure_future(_drain(requests))
            reader = self.hub.reader(start.next_seq, name="sub", identity=peer.identity)
            try:
                async for chunk in single_stream(
                    self.hub, reader, flt, start.gap_alert, live=True, falco_identity=falco_identity
                ):
                    yield chunk
            finally:
                reader.close()
                drain.cancel()
        finally:
            self.sub_ended(peer.identity)

    async def get(
        self, request: outputs_pb2.request, context: grpc.aio.ServicerContext[outputs_pb2.request, bytes]
    ) -> AsyncIterator[bytes]:
        peer = peer_of(context)
        await self.call_starts(peer.identity)
        try:
            flt, start, falco_identity = prepare(self.hub, request, peer.identity)
        except RequestError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            return
        reader = self.hub.reader(start.next_seq, name="get", identity=peer.identity)
        try:
            async for chunk in single_stream(
                self.hub, reader, flt, start.gap_alert, live=False, falco_identity=falco_identity
            ):
                yield chunk
        finally:
            reader.close()
        await self.get_done(peer.identity)

    def handlers(self) -> dict[str, grpc.RpcMethodHandler[Any, Any]]:
        return {
            "sub": grpc.stream_stream_rpc_method_handler(
                self.sub, request_deserializer=outputs_pb2.request.FromString
            ),
            "get": grpc.unary_stream_rpc_method_handler(
                self.get, request_deserializer=outputs_pb2.request.FromString
            ),
        }


class FalcoVersion:
    """`falco.version.service`."""

    def __init__(self) -> None:
        self._response = version_response()

    async def version(
        self, request: version_pb2.request, context: grpc.aio.ServicerContext[version_pb2.request, version_pb2.response]
    ) -> version_pb2.response:
        return self._response

    def handlers(self) -> dict[str, grpc.RpcMethodHandler[Any, Any]]:
        return {
            "version": grpc.unary_unary_rpc_method_handler(
                self.version,
                request_deserializer=version_pb2.request.FromString,
                response_serializer=version_pb2.response.SerializeToString,
            )
        }
