"""Raw kernel records of a recorded mixed workload, and the events the Enricher made of them when recorded.

The fixture (fixtures/mixed_records.bin.gz, fixtures/mixed_events.jsonl.gz) is the oracle of the differential
test of the sensor's batch path (test_enricher_batch.py): the records were taken from the live probe while
fields_workload.py (files, sockets, pipes, fork/exec, identity changes, a thread, memfd and overlayfs execs) and
a loop of candidate opens ran, keeping only that workload's process tree; the events are what the one-record-
at-a-time path (`Enricher.feed`) made of them with the code of that day, with fixed passwd/group files and a
fixed clock offset, so replaying them needs no kernel and gives the same values on any machine.

Regenerate (as root, only when the record layout changes): python tests/sensor/replay_records.py record
(then `expected`, run with the code whose output is the reference).
"""

from __future__ import annotations

import gzip
import json
import struct
import sys
from pathlib import Path

FIXTURES = Path(__file__).with_name("fixtures")
RECORDS = FIXTURES / "mixed_records.bin.gz"
EVENTS = FIXTURES / "mixed_events.jsonl.gz"
PASSWD = "root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
GROUP = "root:x:0:\nnogroup:x:65534:\n"
OFFSET_NS = 1_765_000_000_000_000_000  # the clock offset (monotonic -> epoch) the events were made with
_LEN = struct.Struct("<I")


def load_records(path: Path = RECORDS) -> list[bytes]:
    data = gzip.decompress(path.read_bytes())
    out: list[bytes] = []
    pos = 0
    while pos < len(data):
        (n,) = _LEN.unpack_from(data, pos)
        out.append(data[pos + 4 : pos + 4 + n])
        pos += 4 + n
    return out


def save_records(records: list[bytes], path: Path = RECORDS) -> None:
    path.write_bytes(gzip.compress(b"".join(_LEN.pack(len(r)) + r for r in records), mtime=0))


NEWER_PROC_FIELDS = ("args_known",)
"""Process fields added after the recording: not in the oracle, so left out of the comparison (the batch
path's values of them are compared with the one-record path's of today, test_enricher_batch.py)."""


def event_json(data: dict[str, object]) -> str:
    """One event's line: Event.to_dict(), whose data buffers are text with surrogate escapes (as in captures),
    without NEWER_PROC_FIELDS."""
    data = json.loads(json.dumps(data))
    proc = data.get("proc")
    while isinstance(proc, dict):
        for name in NEWER_PROC_FIELDS:
            proc.pop(name, None)
        proc = proc.get("parent")
    return json.dumps(data, sort_keys=True)


def load_events(path: Path = EVENTS) -> list[dict[str, object]]:
    return [json.loads(line) for line in gzip.decompress(path.read_bytes()).decode().splitlines()]


def record() -> None:  # pragma: no cover - a maintainer's tool, run by hand as root
    import os
    import subprocess
    import tempfile
    import time

    from falconet.sensor import Sensor, SensorConfig
    from falconet.sensor.record import REC_FORK, decode

    sensor = Sensor(SensorConfig(ringbuf_bytes=64 << 20, syscalls=None, seed_from_proc=False))
    sensor.start()
    raw: list[bytes] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            workload = str(Path(__file__).with_name("fields_workload.py"))
            script = (f"import os, runpy, sys\nsys.argv = ['w', {tmp!r}]\ntry:\n"
                      f" runpy.run_path({workload!r}, run_name='__main__')\nexcept SystemExit:\n pass\n"
                      "for _ in range(300):\n os.close(os.open('/tmp/falconet-replay-x', os.O_RDONLY))\n")
            open("/tmp/falconet-replay-x", "w").close()
            proc = subprocess.Popen([sys.executable, "-c", script])
            while proc.poll() is None:
                raw += sensor.consume_raw()
                time.sleep(0.005)
            deadline = time.monotonic() + 1
            while time.monotonic() < deadline:
                raw += sensor.consume_raw()
                time.sleep(0.01)
            os.unlink("/tmp/falconet-replay-x")
    finally:
        sensor.close()
    tree = {proc.pid}
    kept: list[bytes] = []
    for data in raw:
        rec = decode(data)
        if rec.tgid in tree:
            kept.append(data)
            if rec.kind == REC_FORK:
                tree.add(rec.args[0])
    save_records(kept)
    print(f"{len(kept)} of {len(raw)} records kept ({sum(map(len, kept)):,} bytes)")


def expected() -> None:  # pragma: no cover - a maintainer's tool
    import tempfile

    from falconet.sensor.enricher import Enricher
    from falconet.sensor.state import NameDb

    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "passwd").write_text(PASSWD)
        Path(tmp, "group").write_text(GROUP)
        enricher = Enricher(names=NameDb(Path(tmp, "passwd"), Path(tmp, "group")), mono_to_epoch_ns=OFFSET_NS)
        lines = []
        for data in load_records():
            ev = enricher.feed(data)
            if ev is not None:
                lines.append(event_json(ev.to_dict()))
    EVENTS.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode(), mtime=0))
    print(f"{len(lines)} events")


if __name__ == "__main__":  # pragma: no cover
    {"record": record, "expected": expected}[sys.argv[1]]()
