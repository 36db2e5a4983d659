"""A burst of alerts through the whole daemon: every alert reaches every subscriber, or the loss is reported.

Falconet's first promise is that alerts are never silently lost. Here a real `falconet run` (eBPF sensor,
default rules) sees a process open /etc/shadow thousands of times as fast as it can, each open raising "Read
sensitive authentication file"; two gRPC subscribers (the SDK on the batched stream and on Falco's `sub`),
started before the burst at the oldest alert, must each receive exactly one alert per open. A shortfall is
allowed only as far as the daemon reported it: kernel drops (its metrics; they count the whole machine, which
other tests may be loading) or "alerts lost" internal alerts on that stream. The burst's process carries a
token in its command line, so what this shared machine does meanwhile does not count.

Session 7 (bench/RESULTS.md, "latstall"): the wait used to end at the first wake-up that brought no burst alert,
meant as "15 s without one", but every alert wakes it, and on a shared machine other processes' alerts (another
test or bench opening /etc/shadow) arrive all the time: it once ended with the Falco `sub` subscriber at 3,937
of 20,000 while its stream was still arriving, which read as a silent stall. The wait is now for every alert of
the burst to be accounted for (arrived, or covered by a loss the daemon reported), with a deadline; and the test
runs a second, untagged opener of /etc/shadow beside the burst, so those alerts are always there to be ignored.

Session 4's latency bench once received 29,931 of 30,000 alerts with no drop reported; that was the bench
subscribing at "now" after its generator had started (bench/RESULTS.md, "latloss"), not the daemon, and this
test is the product-side guard for the same promise.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from daemon_harness import DaemonProcess
from prometheus_client.parser import text_string_to_metric_families
from resources import require_root

from falconet.model.alert import Alert
from falconet.rules import DEFAULT_RULES
from falconet.sdk import Client
from falconet.server.hub import LOSS_RULE

pytestmark = [pytest.mark.bpf, pytest.mark.slow, pytest.mark.timeout(480)]

RULE = "Read sensitive authentication file"
OPENS = 20_000
PY = "/usr/bin/python3"
ARRIVAL_LIMIT_S = 180.0
"""How long after the burst every one of its alerts must be accounted for (each stream usually takes seconds; a
loaded 2-core machine has needed over a minute for the one-message-per-alert stream)."""
OPENER = "import os, sys\nfor _ in range(int(sys.argv[1])): os.close(os.open('/etc/shadow', os.O_RDONLY))"


@dataclass
class Tally:
    """One subscriber's view: alerts of the burst (by token), and the losses the daemon reported to it."""

    token: str
    cond: threading.Condition = field(default_factory=threading.Condition)
    burst: int = 0
    lost_reported: int = 0
    others: dict[str, int] = field(default_factory=dict)
    """Alerts not of the burst, by rule (the untagged opener's, and whatever else the machine raised)."""
    ended: BaseException | None = None

    def add(self, alert: Alert) -> None:
        with self.cond:
            if alert.rule == LOSS_RULE:
                lost = alert.output_fields.get("falconet.lost")
                self.lost_reported += int(lost) if isinstance(lost, int) else 1
            elif alert.rule == RULE and self.token in str(alert.output_fields.get("proc.cmdline", "")):
                self.burst += 1
            else:
                self.others[alert.rule] = self.others.get(alert.rule, 0) + 1
            self.cond.notify_all()

    def accounted(self, n: int, dropped: Callable[[], float], deadline: float) -> int:
        """Waits until each of the `n` burst alerts arrived or is covered by a loss the daemon reported (its
        kernel drops since the burst began, `dropped()`, read again at least once a second, plus the loss
        alerts on this stream), or the stream ended, or `deadline` (time.monotonic()) passed; the count. Other
        alerts neither count nor end the wait."""
        while True:
            drops = dropped()
            with self.cond:
                if self.burst + self.lost_reported + drops >= n or self.ended is not None:
                    return self.burst
                left = deadline - time.monotonic()
                if left <= 0:
                    return self.burst
                self.cond.wait(min(left, 1.0))


def consume(stream: Iterator[Alert], tally: Tally) -> None:
    try:
        for alert in stream:
            tally.add(alert)
    except Exception as exc:  # the client closed at the end, or a failure the test reports
        with tally.cond:
            tally.ended = exc
            tally.cond.notify_all()


def kernel_drops(url: str) -> float:
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    return sum(s.value for fam in text_string_to_metric_families(text) for s in fam.samples
               if s.name == "falconet_kernel_drops_total")


def hub_counts(url: str) -> dict[str, float]:
    """The daemon's own counts of what it raised, held back and delivered (for a shortfall's message)."""
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    wanted = ("falconet_hub_alerts_published_total", "falconet_subscribers_alerts_delivered_total",
              "falconet_subscribers_alerts_dropped_total", "falconet_alerts_rate_limited_total",
              "falconet_engine_errors_total", "falconet_events_total")
    return {s.name: s.value for fam in text_string_to_metric_families(text) for s in fam.samples if s.name in wanted}


def config(work: Path) -> str:
    # A ring buffer and a hub that hold the whole burst: a loss here would be the product's, not the sizing's.
    return f"""
rules_files: [{DEFAULT_RULES}]
stdout_output: {{enabled: false}}
grpc:
  enabled: true
  bind_address: ["unix://{work / 'falconet.sock'}"]
  retention: {OPENS * 3}
webserver: {{enabled: true, listen_address: 127.0.0.1, listen_port: 0}}
sensor: {{ring_buffer_bytes: {64 << 20}}}
"""


def test_a_burst_of_alerts_reaches_every_subscriber_or_the_loss_is_reported(tmp_path: Path) -> None:
    require_root("the eBPF sensor")
    daemon = DaemonProcess(tmp_path, config(tmp_path), "ebpf", [])
    clients: list[Client] = []
    try:
        daemon.wait_for_line(r"falconet: ready", timeout=180)
        url = daemon.metrics_url
        token = "burst" + uuid.uuid4().hex[:10]
        tallies = {"batched": Tally(token), "falco sub": Tally(token)}
        for name, tally in tallies.items():
            client = Client(unix_socket=tmp_path / "falconet.sock")
            clients.append(client)
            stream = client.subscribe(start="oldest", batched=name == "batched")
            threading.Thread(target=consume, args=(stream, tally), daemon=True).start()
        drops_before = kernel_drops(url)
        # Another process's alerts of the same rule, untagged, during the burst: what a shared machine does anyway.
        untagged = subprocess.Popen([PY, "-c", OPENER, str(OPENS // 10)])
        burst = subprocess.run([PY, "-c", OPENER, str(OPENS), token],
                               capture_output=True, text=True, timeout=120, check=False)
        assert untagged.wait(120) == 0
        assert burst.returncode == 0, burst.stderr
        deadline = time.monotonic() + ARRIVAL_LIMIT_S
        got = {name: tally.accounted(OPENS, lambda: kernel_drops(url) - drops_before, deadline)
               for name, tally in tallies.items()}
        dropped = kernel_drops(url) - drops_before
        for name, tally in tallies.items():
            assert tally.ended is None, f"the {name} subscription ended: {tally.ended!r}"
            assert got[name] <= OPENS, f"{name}: {got[name]} alerts for {OPENS} opens (duplicates)"
            missing = OPENS - got[name]
            reported = dropped + tally.lost_reported
            assert missing <= reported, (
                f"{name}: {missing} of {OPENS} alerts had not arrived {ARRIVAL_LIMIT_S:g} s after the burst and the "
                f"daemon reported {dropped:.0f} kernel drops and {tally.lost_reported} lost alerts: a silent loss. "
                f"Other alerts on this stream, by rule: {tally.others}; the daemon: {hub_counts(url)}"
            )
    finally:
        for client in clients:
            client.close()
        daemon.signal(signal.SIGTERM)
        try:
            daemon.wait(60)
        finally:
            daemon.kill()
