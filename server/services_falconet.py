"""Falconet's own services: the batched `falconet.v1.AlertService` and the `falconet.v1.InputService`.

The batched stream exists for throughput: each message carries every alert waiting for the subscriber (up to a
limit), built by concatenating the hub's cached, pre-framed wire forms. The input service lets other processes
(`falconet publish`, relays) feed the hub; it is open on the UNIX socket and, over mTLS, only to client
certificates whose Common Name is allow-listed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from typing import Any

import grpc

from falconet.model.alert import Alert
from falconet.sdk.api.falconet.v1 import alerts_pb2, inputs_pb2, types_pb2
from falconet.server.alert_input import received_alert
from falconet.server.auth import input_denial, peer_of
from falconet.server.hub import AlertFilter, Hub
from falconet.server.requests import RequestError, parse_filter, parse_start
from falconet.server.streams import batch_stream, position_metadata

ALERT_SERVICE = "falconet.v1.AlertService"
INPUT_SERVICE = "falconet.v1.InputService"


class AlertService:
    def __init__(self, hub: Hub, default_batch: int) -> None:
        self.hub = hub
        self.default_batch = default_batch

    def _batch(self, requested: int) -> int:
        return min(requested, self.default_batch) if requested else self.default_batch

    async def Subscribe(
        self, request: alerts_pb2.SubscribeRequest, context: grpc.aio.ServicerContext[alerts_pb2.SubscribeRequest, bytes]
    ) -> AsyncIterator[bytes]:
        peer = peer_of(context)
        try:
            flt = parse_filter(request.filter) if request.HasField("filter") else AlertFilter()
            start = (
                parse_start(request.start).resolve(self.hub)
                if request.HasField("start")
                else self.hub.start_now()
            )
        except RequestError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            return
        await context.send_initial_metadata(position_metadata(self.hub, start.next_seq))
        reader = self.hub.reader(start.next_seq, name="Subscribe", identity=peer.identity)
        try:
            async for chunk in batch_stream(
                self.hub, reader, flt, start.gap_alert, live=True, max_batch=self._batch(request.max_batch)
            ):
                yield chunk
        finally:
            reader.close()

    async def GetAll(
        self, request: alerts_pb2.GetAllRequest, context: grpc.aio.ServicerContext[alerts_pb2.GetAllRequest, bytes]
    ) -> AsyncIterator[bytes]:
        peer = peer_of(context)
        try:
            flt = parse_filter(request.filter) if request.HasField("filter") else AlertFilter()
        except RequestError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            return
        # Up to the newest alert at call time: GetAll is a snapshot, not a stream that may never end.
        newest = self.hub.newest
        reader = self.hub.reader(self.hub.oldest, name="GetAll", identity=peer.identity)
        try:
            async for chunk in batch_stream(
                self.hub, reader, flt, None, live=False, max_batch=self._batch(request.max_batch), until=newest
            ):
                yield chunk
        finally:
            reader.close()

    def handlers(self) -> dict[str, grpc.RpcMethodHandler[Any, Any]]:
        return {
            "Subscribe": grpc.unary_stream_rpc_method_handler(
                self.Subscribe, request_deserializer=alerts_pb2.SubscribeRequest.FromString
            ),
            "GetAll": grpc.unary_stream_rpc_method_handler(
                self.GetAll, request_deserializer=alerts_pb2.GetAllRequest.FromString
            ),
        }


class InputService:
    def __init__(self, hub: Hub, allow_cns: frozenset[str]) -> None:
        self.hub = hub
        self.allow_cns = allow_cns
        self.accepted = 0

    async def Publish(
        self, requests: AsyncIterator[inputs_pb2.PublishRequest], context: grpc.aio.ServicerContext[inputs_pb2.PublishRequest, inputs_pb2.PublishResponse]
    ) -> inputs_pb2.PublishResponse:
        denial = input_denial(peer_of(context), self.allow_cns)
        if denial is not None:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, denial)
        accepted = 0
        last = None
        index = 0
        hostname = self.hub.hostname
        async for request in requests:
            # Each alert keeps the message it arrived in as its wire form (alert_input.received_alert): the hub
            # never converts it back, and a store commits those bytes.
            received: list[tuple[Alert, bytes, int]] = []
            for resp in request.alerts:
                index += 1
                try:
                    received.append(received_alert(resp, hostname))
                except ValueError as exc:
                    # Publish the valid alerts before this one and say how many, so nothing is lost silently.
                    if received:
                        self.hub.publish_received(received)
                        accepted += len(received)
                        self.accepted += len(received)
                    await context.abort(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        f"alert {index} of the stream: {exc} ({accepted} alerts before it were published)",
                    )
            if received:
                last = self.hub.publish_received(received)
                accepted += len(received)
                self.accepted += len(received)
        out = inputs_pb2.PublishResponse(accepted=accepted)
        if last is not None:
            await self.hub.wait_durable(last.sequence)  # the ack means stored (with a persistent store)
            out.last.CopyFrom(types_pb2.Cursor(epoch=last.epoch, sequence=last.sequence))
        return out

    def handlers(self) -> dict[str, grpc.RpcMethodHandler[Any, Any]]:
        return {
            "Publish": grpc.stream_unary_rpc_method_handler(
                self.Publish,
                request_deserializer=inputs_pb2.PublishRequest.FromString,
                response_serializer=inputs_pb2.PublishResponse.SerializeToString,
            )
        }
