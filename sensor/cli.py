"""`falconet capture`: the live sensor's enriched events as JSON lines, for replay and for fixtures.

The file holds exactly what the engine would have seen (`Event.to_dict()`, one object per line), so
`falconet run --source replay:FILE` evaluates it deterministically without root. Kernel drops (events the
file lacks) are reported on stderr about once a second while they happen (`falconet capture: kernel drops N
(+M)`) and in the closing line. bcc is imported only when capturing, so `falconet --help` stays fast and
root-free.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

EXAMPLES = """examples:
  falconet capture -w events.jsonl --duration 10       capture every traced syscall for 10 seconds
  falconet capture -w opens.jsonl -s openat,execve     only these event types (state keeping still runs)
  falconet capture --ebpf                              print the BPF program and its -D flags, then exit
"""


def register(sub: Any) -> None:
    p = sub.add_parser("capture", help="write the live sensor's events as JSON lines",
                       description="Capture enriched syscall events with the eBPF sensor (needs root).",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-w", "--write", metavar="FILE", type=Path, help="JSON-lines output file ('-' = stdout)")
    p.add_argument("--duration", metavar="S", type=float, default=None,
                   help="stop after S seconds (default: until Ctrl-C or SIGTERM)")
    p.add_argument("-s", "--syscalls", metavar="NAMES", default=None,
                   help="comma-separated event types to capture (default: every syscall the sensor knows)")
    p.add_argument("--ringbuf-bytes", metavar="N", type=int, default=8 << 20,
                   help="BPF ring buffer size, a power of two (default 8 MiB)")
    p.add_argument("--ebpf", action="store_true", help="print the BPF program with its cflags and exit")
    p.set_defaults(func=run_capture)


def _report_drops(total: int, reported: int) -> int:
    """Says on stderr, as it happens, that the capture lost events (a file with gaps is not what the kernel
    did: whoever reads it, a script or a test, should know when); returns the total now reported."""
    if total > reported:
        print(f"falconet capture: kernel drops {total} (+{total - reported})", file=sys.stderr, flush=True)
    return max(total, reported)


def run_capture(args: argparse.Namespace) -> int:
    from falconet.sensor.sensor import Sensor, SensorConfig, SensorError, program_text

    names = {n.strip() for n in args.syscalls.split(",") if n.strip()} if args.syscalls else None
    try:
        config = SensorConfig(ringbuf_bytes=args.ringbuf_bytes, syscalls=names)
        config.validate()
        if args.ebpf:
            text, cflags = program_text(config)
            sys.stdout.write("// cflags: " + " ".join(cflags) + "\n" + text)
            return 0
        if args.write is None:
            print("falconet capture: -w FILE is required (or --ebpf)", file=sys.stderr)
            return 2
        sensor = Sensor(config)
        sensor.start()
    except (SensorError, OSError) as exc:
        print(f"falconet capture: {exc}", file=sys.stderr)
        return 1
    if sensor.untraced:
        print(f"falconet capture: not traced (unknown to the sensor): {', '.join(sorted(sensor.untraced))}",
              file=sys.stderr)
    stop = False

    def _stop(_sig: int, _frame: Any) -> None:
        nonlocal stop
        stop = True

    old_term = signal.signal(signal.SIGTERM, _stop)
    old_int = signal.signal(signal.SIGINT, _stop)
    out = sys.stdout if str(args.write) == "-" else open(args.write, "w", encoding="utf-8")  # noqa: SIM115
    written = 0
    try:
        # Ready line on stderr, flushed: scripts and tests wait for it before doing what they capture.
        print("capturing", file=sys.stderr, flush=True)
        deadline = time.monotonic() + args.duration if args.duration is not None else None
        drops, next_check = 0, time.monotonic() + 1.0
        while not stop and (deadline is None or time.monotonic() < deadline):
            for ev in sensor.poll(100):
                out.write(json.dumps(ev.to_dict(), separators=(",", ":")) + "\n")
                written += 1
            out.flush()
            if time.monotonic() >= next_check:
                drops, next_check = _report_drops(sensor.stats().kernel_drops, drops), time.monotonic() + 1.0
        for ev in sensor.drain():  # everything the kernel still holds belongs to the capture
            out.write(json.dumps(ev.to_dict(), separators=(",", ":")) + "\n")
            written += 1
    finally:
        st = sensor.stats()
        sensor.close()
        if out is not sys.stdout:
            out.close()
        signal.signal(signal.SIGTERM, old_term)
        signal.signal(signal.SIGINT, old_int)
    print(f"captured {written} events; kernel drops {st.kernel_drops}", file=sys.stderr)
    return 0
