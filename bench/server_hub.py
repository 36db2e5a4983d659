"""The hub's cost to the engine thread: `Hub.publish` per alert, and the one-time protobuf conversion per alert.

The engine thread calls `publish` for every alert, so it must cost about what appending to a bounded queue
costs, whatever the number of subscribers. Baselines in the same run: a `collections.deque(maxlen=...)` append
under a `threading.Lock` (the least a thread-safe bounded buffer can do), and `json.dumps` of the alert JSON
(what an output writing JSON lines pays per alert) for the conversion.

Run: python -m bench.server_hub [--alerts N]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import threading
import time

from bench.server_throughput import make_alert
from falconet.sdk.convert import alert_to_wire
from falconet.server.hub import Hub


def per_alert(fn: object, n: int) -> float:
    """Microseconds per call of `fn(i)` over n calls."""
    t0 = time.perf_counter()
    for i in range(n):
        fn(i)  # type: ignore[operator]
    return (time.perf_counter() - t0) / n * 1e6


def publish_with_waiting_subscribers(n: int, subscribers: int) -> float:
    """µs per publish while `subscribers` readers on an event loop thread wait for new alerts (and are woken)."""
    hub = Hub(retention=10_000, epoch="bench")
    alerts = [make_alert(i) for i in range(n)]
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    async def reader() -> None:
        r = hub.reader(1)
        while r.next_seq <= n:
            entries, _ = r.take(10_000)
            if not entries:
                await r.wait()

    async def main() -> None:
        tasks = [asyncio.ensure_future(reader()) for _ in range(subscribers)]
        await asyncio.sleep(0)
        ready.set()
        await asyncio.gather(*tasks)

    thread = threading.Thread(target=lambda: loop.run_until_complete(main()))
    thread.start()
    ready.wait(10)
    cost = per_alert(lambda i: hub.publish(alerts[i]), n)
    thread.join(60)
    loop.close()
    return cost


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--alerts", type=int, default=200_000)
    n = parser.parse_args(argv).alerts

    lock = threading.Lock()
    ring: collections.deque[object] = collections.deque(maxlen=10_000)
    alerts = [make_alert(i) for i in range(n)]

    def baseline(i: int) -> None:
        with lock:
            ring.append(alerts[i])

    base = per_alert(baseline, n)
    hub = Hub(retention=10_000, epoch="bench")
    alone = per_alert(lambda i: hub.publish(alerts[i]), n)
    print(f"publish, per alert ({n:,} alerts)            µs/alert   baseline   ratio")
    print(f"{'no subscriber':<42} {alone:>9.2f} {base:>10.2f} {alone / base:>7.2f}")
    for subs in (10, 100):
        cost = publish_with_waiting_subscribers(n // 4, subs)
        print(
            f"{f'{subs} subscribers waiting on a loop thread':<42} {cost:>9.2f} {base:>10.2f} {cost / base:>7.2f}"
        )

    sample = alerts[: min(n, 50_000)]
    for a in sample:
        a.cursor = None
    Hub(epoch="bench").publish_many(sample)
    conv = per_alert(lambda i: alert_to_wire(sample[i]), len(sample))
    js = per_alert(lambda i: json.dumps(sample[i].to_json_dict()), len(sample))
    print(
        f"{'conversion to protobuf, once per alert':<42} {conv:>9.2f} {js:>10.2f} {conv / js:>7.2f}  (baseline: json.dumps)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
