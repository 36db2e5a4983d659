"""Every call passes here first: malformed messages, revoked certificates and surplus subscriptions are refused.

grpcio's Python API takes no CRL for the handshake, but the peer's certificate is in each call's auth context
(`x509_pem_cert`), so the check runs per call, in a server interceptor that wraps every method handler of the
TCP server. The guard also remembers
the task of each open call by certificate serial, so that a reload which revokes a certificate can cancel its
open streams; they end with PERMISSION_DENIED saying why.

Subscriptions (sub, get, Subscribe, GetAll) are counted per identity (the certificate subject, as in
`falconet.server.auth`): one certificate cannot hold more than `max_subscriptions_per_identity` at once, and
the next one is RESOURCE_EXHAUSTED with the limit named. UNIX-socket calls carry no certificate: neither check
applies to them (their subscriptions are capped per connection, `falconet.server.limits`).

The guard also holds each server to `max_calls` calls at once. grpcio 1.76's own `maximum_concurrent_rpcs`
lets about half of any surplus through (a refused call, when it ends, frees a slot it never took), so a flood
of 30 calls on a server limited to 3 ran 13-16; the count here is exact, and the next call is
RESOURCE_EXHAUSTED.

Bytes that do not parse as the method's request message are INVALID_ARGUMENT naming the message type (gRPC
itself would answer UNKNOWN with a Python exception's text): the deserializer returns a `Malformed` marker
instead of raising, and the wrapper aborts the call when it meets one. Both servers install the guard.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import grpc
from cryptography import x509
from google.protobuf.message import DecodeError

from falconet.certs.errors import CertError
from falconet.certs.revoke import read_crl
from falconet.server.auth import peer_of

log = logging.getLogger("falconet.server")

SUBSCRIPTION_METHODS = frozenset(
    {
        "/falco.outputs.service/sub",
        "/falco.outputs.service/get",
        "/falconet.v1.AlertService/Subscribe",
        "/falconet.v1.AlertService/GetAll",
    }
)
_SERIAL_CACHE = 4096
"""Parsed peer certificates remembered (PEM bytes to serial); cleared when full."""


class RevocationList:
    """The serials revoked by the CRL file, checked against the CA; a missing file revokes nothing."""

    def __init__(self, crl: Path, ca: Path) -> None:
        self.crl = crl
        self.ca = ca
        self.serials = self.read()

    def read(self) -> frozenset[int]:
        """The CRL's serials now; CertError when it exists but cannot be trusted (the caller keeps the old)."""
        if not self.crl.exists():
            return frozenset()
        try:
            cas = x509.load_pem_x509_certificates(self.ca.read_bytes())
        except (OSError, ValueError) as exc:
            raise CertError(f"cannot read the CA certificate {self.ca} to check the CRL: {exc}") from None
        first: CertError | None = None
        for ca in cas:
            try:
                return read_crl(self.crl, ca)
            except CertError as exc:
                first = first or exc
        assert first is not None
        raise first


@dataclass(frozen=True, slots=True)
class Malformed:
    """What the deserializer hands on in place of a request message that does not parse."""

    message: str


def tolerant(deserializer: Callable[[bytes], Any], what: str) -> Callable[[bytes], Any]:
    """`deserializer`, returning a Malformed marker instead of raising on bytes that do not parse."""

    def load(data: bytes) -> Any:
        try:
            return deserializer(data)
        except (DecodeError, ValueError) as exc:
            return Malformed(f"the request ({len(data)} bytes) is not a valid request message for {what}: {exc}")

    return load


async def _checked(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
    async for request in requests:
        if isinstance(request, Malformed):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
        yield request


@dataclass(slots=True, eq=False)
class _Call:
    task: asyncio.Task[Any] | None
    serial: int | None
    identity: str | None
    cut: bool = False


class CallGuard(grpc.aio.ServerInterceptor):
    """The TCP server's interceptor: revocation per call, the subscription cap, and cutting revoked streams."""

    def __init__(
        self, revocations: RevocationList | None, max_subscriptions_per_identity: int, max_calls: int | None = None
    ) -> None:
        self.revocations = revocations
        self.max_subscriptions = max_subscriptions_per_identity
        self.max_calls = max_calls
        self.subscriptions: Counter[str] = Counter()
        self._open: set[_Call] = set()
        self._serials: dict[bytes, int] = {}
        self.refused = 0

    @property
    def open_calls(self) -> int:
        """Calls running through this guard now (each holds its task and buffers until it ends)."""
        return len(self._open)

    @property
    def revoked(self) -> frozenset[int]:
        return self.revocations.serials if self.revocations is not None else frozenset()

    def load_crl(self) -> None:
        """Re-reads the CRL; CertError keeps the old one. Safe from any thread (one reference assignment)."""
        if self.revocations is not None:
            self.revocations.serials = self.revocations.read()

    def cut_revoked(self) -> int:
        """Ends the open calls of revoked certificates; returns how many. Call it on the server's event loop."""
        revoked = self.revoked
        cut = 0
        for call in list(self._open):
            if call.serial in revoked and not call.cut and call.task is not None:
                call.cut = True
                call.task.cancel()
                cut += 1
        if cut:
            log.warning("ended %d open calls of revoked certificates", cut)
        return cut

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method: str = handler_call_details.method
        subscription = method in SUBSCRIPTION_METHODS
        for kind in ("unary_unary", "unary_stream", "stream_unary", "stream_stream"):
            behavior = getattr(handler, kind)
            if behavior is not None:
                wrapped = self._wrap(behavior, subscription, streaming_requests=kind.startswith("stream_"))
                changes: dict[str, Any] = {kind: wrapped}
                if handler.request_deserializer is not None:
                    changes["request_deserializer"] = tolerant(handler.request_deserializer, method)
                # grpc's handlers are namedtuples (the stubs describe only their fields)
                replaced: grpc.RpcMethodHandler[Any, Any] = cast(Any, handler)._replace(**changes)
                return replaced
        return handler

    def _serial(self, context: grpc.aio.ServicerContext[Any, Any]) -> int | None:
        pem = next(iter(context.auth_context().get("x509_pem_cert", ())), None)
        if pem is None:
            return None
        serial = self._serials.get(pem)
        if serial is None:
            try:
                serial = x509.load_pem_x509_certificate(pem).serial_number
            except ValueError:
                return None
            if len(self._serials) >= _SERIAL_CACHE:
                self._serials.clear()
            self._serials[pem] = serial
        return serial

    async def _enter(self, context: grpc.aio.ServicerContext[Any, Any], subscription: bool) -> _Call:
        """Registers the call, or aborts it (too many calls, revoked certificate, too many subscriptions)."""
        if self.max_calls is not None and len(self._open) >= self.max_calls:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"the server is running {self.max_calls} calls, its limit (max_calls); try again later",
            )
        serial = self._serial(context) if self.revocations is not None else None
        if serial is not None and serial in self.revoked:
            self.refused += 1
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"the client certificate (serial {serial:x}) is revoked by the server's CRL",
            )
        identity = None
        if subscription:
            peer = peer_of(context)
            if not peer.via_unix:
                identity = peer.identity
                if self.subscriptions[identity] >= self.max_subscriptions:
                    await context.abort(
                        grpc.StatusCode.RESOURCE_EXHAUSTED,
                        f"this client certificate ({peer.identity.removeprefix('mtls:')}) already holds "
                        f"{self.max_subscriptions} subscriptions, the server's limit per identity; close one first",
                    )
                self.subscriptions[identity] += 1
        call = _Call(asyncio.current_task(), serial, identity)
        self._open.add(call)
        return call

    def _leave(self, call: _Call) -> None:
        self._open.discard(call)
        if call.identity is not None:
            self.subscriptions[call.identity] -= 1
            if self.subscriptions[call.identity] <= 0:
                del self.subscriptions[call.identity]

    async def _cut(self, call: _Call, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        assert call.serial is not None
        await context.abort(
            grpc.StatusCode.PERMISSION_DENIED,
            f"the client certificate (serial {call.serial:x}) was revoked by the server's CRL; stream ended",
        )

    async def _request(self, request: Any, context: grpc.aio.ServicerContext[Any, Any], streaming: bool) -> Any:
        """The request (or request iterator) to hand on; a malformed unary request aborts the call."""
        if streaming:
            return _checked(request, context)
        if isinstance(request, Malformed):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
        return request

    def _wrap(self, behavior: Callable[..., Any], subscription: bool, *, streaming_requests: bool) -> Callable[..., Any]:
        if not inspect.isasyncgenfunction(behavior):

            async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                request = await self._request(request, context, streaming_requests)
                entry = await self._enter(context, subscription)
                try:
                    result = behavior(request, context)
                    return await result if inspect.isawaitable(result) else result
                except asyncio.CancelledError:
                    if entry.cut:
                        await self._cut(entry, context)
                    raise
                finally:
                    self._leave(entry)

            return call

        async def stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
            request = await self._request(request, context, streaming_requests)
            entry = await self._enter(context, subscription)
            try:
                async for item in behavior(request, context):
                    yield item
            except asyncio.CancelledError:
                if entry.cut:
                    await self._cut(entry, context)
                raise
            finally:
                self._leave(entry)

        return stream
