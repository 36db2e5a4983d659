"""Fan-out: 50 subscribers (Falco `sub` and the batched stream, UNIX and mTLS) each receive all of 10,000
alerts published live, in order, with every field intact."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import grpc
import pytest
from server_support import make_alert, mtls_credentials, start_after, wait_until
from shared_server import ServerHandle

from falconet.model.alert import Cursor
from falconet.sdk.api.falco import outputs_pb2, outputs_pb2_grpc
from falconet.sdk.api.falconet.v1 import alerts_pb2, alerts_pb2_grpc
from falconet.sdk.convert import alert_from_proto, alert_to_proto

TOTAL = 10_000
FALCO_SUBSCRIBERS = 10
BATCHED_SUBSCRIBERS = 40


@pytest.mark.slow  # ~11 s: 50 real subscribers, 10,000 alerts each
def test_fifty_subscribers_each_receive_every_alert_in_order(
    alert_server: ServerHandle, certs_dir: Path
) -> None:
    epoch = alert_server.hub.epoch
    alerts = [make_alert(i) for i in range(TOTAL)]
    expected = []
    for i, alert in enumerate(alerts):
        copy = make_alert(i, cursor=Cursor(epoch, i + 1))
        expected.append(alert_to_proto(copy))
    results: dict[str, list[outputs_pb2.response]] = {}

    async def falco_sub(name: str, channel: grpc.aio.Channel) -> None:
        call = outputs_pb2_grpc.serviceStub(channel).sub()
        await call.write(outputs_pb2.request())
        got: list[outputs_pb2.response] = []
        while len(got) < TOTAL:
            got.append(await call.read())
        call.cancel()
        results[name] = got

    async def batched(name: str, channel: grpc.aio.Channel) -> None:
        # Each batched subscriber starts "now"; publishing waits until all are registered.
        call = alerts_pb2_grpc.AlertServiceStub(channel).Subscribe(alerts_pb2.SubscribeRequest(max_batch=300))
        got: list[outputs_pb2.response] = []
        async for message in call:
            got.extend(message.alerts)
            if len(got) >= TOTAL:
                break
        call.cancel()
        results[name] = got

    async def main() -> None:
        channels = [grpc.aio.insecure_channel(alert_server.unix_target) for _ in range(5)] + [
            grpc.aio.secure_channel(alert_server.tcp_target, mtls_credentials(certs_dir)) for _ in range(5)
        ]
        tasks = [
            asyncio.ensure_future(falco_sub(f"sub-{k}", channels[k % 10])) for k in range(FALCO_SUBSCRIBERS)
        ]
        tasks += [
            asyncio.ensure_future(batched(f"batched-{k}", channels[k % 10]))
            for k in range(BATCHED_SUBSCRIBERS)
        ]
        await asyncio.get_running_loop().run_in_executor(
            None,
            lambda: wait_until(
                lambda: len(alert_server.hub.stats().readers) == FALCO_SUBSCRIBERS + BATCHED_SUBSCRIBERS,
                what="50 subscribers registered",
            ),
        )
        producer = threading.Thread(target=lambda: [alert_server.publish(a) for a in alerts])
        producer.start()
        await asyncio.wait_for(asyncio.gather(*tasks), 240)
        producer.join()
        for channel in channels:
            await channel.close()

    asyncio.run(main())
    assert len(results) == FALCO_SUBSCRIBERS + BATCHED_SUBSCRIBERS
    for name, got in results.items():
        assert len(got) == TOTAL, name
        bad = next((i for i, (g, e) in enumerate(zip(got, expected, strict=True)) if g != e), None)
        assert bad is None, f"{name}: alert {bad} differs: {got[bad]} != {expected[bad]}"
    # Typed values come back typed, for one subscriber of each kind.
    for name in ("sub-0", "batched-0"):
        assert [alert_from_proto(r) for r in results[name][:500]] == [
            make_alert(i, cursor=Cursor(epoch, i + 1)) for i in range(500)
        ]
    stats = alert_server.hub.stats()
    assert stats.published == TOTAL


def test_resume_after_cursor_misses_nothing_retained(alert_server: ServerHandle) -> None:
    """A subscriber cut off mid-stream reconnects with its last cursor and gets exactly the rest."""
    for i in range(300):
        alert_server.publish(make_alert(i))
    with grpc.insecure_channel(alert_server.unix_target) as ch:
        stub = outputs_pb2_grpc.serviceStub(ch)
        first = stub.sub(iter([outputs_pb2.request(start=start_after(alert_server.hub.epoch, 1))]))
        seen = [next(first) for _ in range(120)]
        first.cancel()  # cut off mid-stream
        last = seen[-1].cursor
        for i in range(300, 400):
            alert_server.publish(make_alert(i))
        again = stub.get(outputs_pb2.request(start=start_after(last.epoch, last.sequence)))
        rest = list(again)
    sequences = [r.cursor.sequence for r in seen + rest]
    assert sequences == list(range(2, 401))
