"""The declaration of what the live sensor fills (falconet.model.sensor_fields) checked against the real sensor.

A workload (fields_workload.py) runs under the real BPF program with every syscall delivered; a field counts as
filled when one of the workload's events gives it a value (not unset, not empty) that an empty event does not
have. Both directions are required: a declared field the workload never fills is a false promise (a rule
relying on it would be blind without a warning), and a filled field not declared is a stale declaration
(a rule would be warned about for nothing): make the sensor fill a new field and this test names the line to
add. container.* and k8s.* need a container and its runtime: they are declared exactly when a container described
as the live source describes one (identity from the cgroup path, the rest from the runtime's records) gives
them a value.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from .conftest import start_or_skip
from falconet.model.event import Container, Event, Fd, Process
from falconet.model.sensor_fields import SENSOR_FILLS
from falconet.rules.engine import Resolvers
from falconet.rules.fields import FieldInfo, catalog, resolve
from falconet.rules.sources import SYSCALL, field_allowed
from falconet.sensor import SensorConfig

from resources import require_root

pytestmark = [pytest.mark.bpf, pytest.mark.root]

WORKLOAD = Path(__file__).with_name("fields_workload.py")
CONTAINER_FAMILIES = ("container.", "k8s.")

# An argument for every field that takes one (a field missing here fails the test, so new ones are not skipped).
SAMPLE_ARGS = {
    "container.label": "app", "container.label.": "app", "container.mount": "0", "container.mount.dest": "0",
    "container.mount.mode": "0", "container.mount.propagation": "0", "container.mount.rdwr": "0",
    "container.mount.source": "0", "evt.arg": "0", "evt.arg.": "name", "evt.rawarg.": "name",
    "k8s.deployment.label": "app", "k8s.ns.label": "app", "k8s.pod.label": "app", "k8s.pod.label.": "app",
    "k8s.rc.label": "app", "k8s.rs.label": "app", "k8s.svc.label": "app", "proc.aargs": "1", "proc.acmdline": "1",
    "proc.aenv": "1", "proc.aexe": "1", "proc.aexepath": "1", "proc.aname": "1", "proc.apid": "1",
    "proc.avpid": "1", "proc.env": "PATH", "thread.cgroup": "cpu",
}  # fmt: skip

BLANK = Event(num=0, ts=0, type="", tid=0, res=0, proc=Process(pid=0))
BLANK_FD = Event(num=0, ts=0, type="", tid=0, res=0, proc=Process(pid=0), fd=Fd(num=-1))
# A container as the live source describes one: identity and runtime type from the cgroup path (the sensor), the
# rest from the runtime's records (sensor/containers: Docker, Podman and containerd/CRI each build a model
# Container with every attribute below; tests/containers checks them against real runtimes).
SENSOR_CONTAINER = Container(
    id="0123456789ab", full_id="0123456789ab" * 5 + "cdef", name="web", image="docker.io/library/busybox:1",
    image_repository="docker.io/library/busybox", image_tag="1", image_digest="sha256:" + "0" * 64,
    image_id="1" * 64, type="containerd", privileged=True,
    mounts=[{"source": "/srv", "dest": "/data", "mode": "rw", "rdwr": True, "propagation": "rprivate"}],
    start_ts=10**18, host_pid=True, host_network=True, host_ipc=True, ip="192.0.2.1", labels={"app": "web"},
    k8s_ns_name="ns", k8s_pod_name="pod", k8s_pod_uid="uid", k8s_pod_labels={"app": "web"},
    k8s_pod_ip="192.0.2.2", k8s_pod_sandbox_id="0123456789ab" * 5 + "cdef",
)  # fmt: skip


def _extractor(info: FieldInfo) -> Any:
    if info.arg != "none" and info.arg != "optional":
        assert info.name in SAMPLE_ARGS, f"give {info.name} a sample argument in SAMPLE_ARGS"
    if info.name.endswith("."):
        return resolve(info.name + SAMPLE_ARGS[info.name], None, Resolvers.local()).extract
    arg = SAMPLE_ARGS[info.name] if info.arg == "required" else None
    return resolve(info.name, arg, Resolvers.local()).extract


def _gives_value(extract: Any, events: list[Event]) -> bool:
    """Some event's value is set, not empty, and not what an empty event (with or without an empty fd) gives:
    a default such as fd.name_changed's False is not "filled"."""
    empties = [extract(BLANK), extract(BLANK_FD), None, [], "", {}, "N/A"]  # N/A: Falco's "no such mount"
    return any(not any(extract(event) == empty for empty in empties) for event in events)


def _workload_events(tmp_path: Path) -> list[Event]:
    sensor = start_or_skip(SensorConfig(ringbuf_bytes=64 << 20))  # every syscall the sensor knows
    events: list[Event] = []
    try:
        proc = subprocess.Popen([sys.executable, str(WORKLOAD), str(tmp_path)])
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            events.extend(sensor.poll(50))
        assert proc.wait(10) == 0, "the workload failed"
        events.extend(sensor.drain())
        drops = sensor.stats().kernel_drops
    finally:
        sensor.close()
    assert drops == 0, f"{drops} kernel drops: the capture is incomplete, so absence proves nothing"

    def from_workload(event: Event) -> bool:
        p: Process | None = event.proc
        while p is not None:
            if p.pid == proc.pid:
                return True
            p = p.parent
        return False

    return [e for e in events if from_workload(e)]


def test_the_declared_fields_are_exactly_those_the_live_sensor_fills(tmp_path: Path) -> None:
    require_root("the workload (mount, loginuid)")
    events = _workload_events(tmp_path)
    assert {"execve", "connect", "openat", "sendto"} <= {e.type for e in events}, "the workload was not seen"
    host = [i for i in catalog() if field_allowed(SYSCALL, i.name) and not i.name.startswith(CONTAINER_FAMILIES)]
    filled = {i.name for i in host if _gives_value(_extractor(i), events)}
    declared = {n for n in SENSOR_FILLS if not n.startswith(CONTAINER_FAMILIES)}
    assert sorted(declared - filled) == [], "declared in model/sensor_fields.py but never filled live"
    assert sorted(filled - declared) == [], "filled live: add these to SENSOR_FILLS in model/sensor_fields.py"


def test_the_declared_container_fields_are_those_the_sensors_container_description_gives() -> None:
    event = Event(num=1, ts=10**18, type="openat", tid=1, res=0,
                  proc=Process(pid=1, container_id=SENSOR_CONTAINER.id), container=SENSOR_CONTAINER)  # fmt: skip
    families = [i for i in catalog() if i.name.startswith(CONTAINER_FAMILIES)]
    given = {i.name for i in families if _gives_value(_extractor(i), [event])}
    assert given == {n for n in SENSOR_FILLS if n.startswith(CONTAINER_FAMILIES)}


def test_every_declared_name_is_a_field_the_engine_knows() -> None:
    assert sorted(SENSOR_FILLS - {i.name for i in catalog()}) == []
