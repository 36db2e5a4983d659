"""What containers cost and how fast their metadata comes (issue 9), in one run on this machine.

1. Engine: events per CPU second of the engine on bench.engine's stream (upstream stable rules, the packaged
   append_output), host-only against the same stream with 20% of events in two containers whose events
   arrive as the sensor makes them (container.id only) and go through the daemon's metadata hold (cached
   metadata attached) before the engine: the price of metadata per event.
2. Daemon overhead, in a container and on the host: the open/read/close loop of bench/daemon_loops.c (static)
   run on the host and inside a Docker container, each bare and under `falconet run` with the stable rules
   and the container engines on: the overhead ratio inside against outside.
3. First-alert metadata: N short-lived containers (Docker and Podman), each running `nc -e` (Falco's "Netcat
   Remote Code Execution in Container") as its first action right after start; the share of those alerts
   whose container.name and container.image.repository are filled. Target: 100%.

Parts 2 and 3 need root and the runtimes (make test installs them; the test fixtures start them).

Run: python -m bench.containers [--part engine|overhead|first] [--containers N] [--seconds S]
"""

from __future__ import annotations

import argparse
import importlib
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests" / "containers"), str(REPO / "tests")]


def _helpers(name: str) -> Any:
    """A module of tests/containers (the runtimes, image and live daemon the tests use), imported by name at
    run time: the benchmark drives the same real runtimes the tests do."""
    return importlib.import_module(name)


def part_engine(seconds: float) -> None:
    import yaml

    from bench.engine import RESOLVERS, STABLE, _rate, make_stream
    from falconet.model.event import Container, Event
    from falconet.rules.engine import Engine
    from falconet.sensor.containers.hold import MetadataHold
    from falconet.sensor.containers.service import MetadataService
    from falconet.server.daemon_config import PACKAGED_CONFIG

    append = yaml.safe_load(PACKAGED_CONFIG.read_text())["append_output"]
    engine = Engine.from_files([STABLE], resolvers=RESOLVERS, append_output=append)
    lines = make_stream(50_000)
    mixed = [Event.from_dict(json.loads(line)) for line in lines]
    svc = MetadataService({}, lambda _line: None, clients=[])
    for ev in mixed:
        c = ev.container
        if c.id != "host" and svc.get(c.id) is None:
            svc.store.put(Container(id=c.id, full_id=c.id * 5 + c.id[:4], type="docker", name=c.name,
                                    image=c.image, image_repository=c.image_repository, image_tag="1",
                                    privileged=False, labels={"app": c.name or ""}))
        ev.container = Container(id=c.id)  # as the sensor makes it: the id from the cgroup, nothing else
    share = sum(ev.container.id != "host" for ev in mixed) / len(mixed)
    host_only = [Event.from_dict(json.loads(line)) for line in lines]
    for ev in host_only:
        ev.container = Container()
    hold = MetadataHold(svc)
    batch = 512

    def run(events: list[Event], through_hold: bool) -> Any:
        def one() -> int:
            for i in range(0, len(events), batch):
                chunk = events[i : i + batch]
                for ev in hold.feed(chunk) if through_hold else chunk:
                    engine.process(ev)
            return len(events)

        return one

    rows = []
    for _ in range(3):  # interleaved, so a noisy neighbour weighs on both alike
        rows.append((_rate(run(host_only, False), seconds), _rate(run(host_only, True), seconds),
                     _rate(run(mixed, True), seconds)))
    host, host_hold, mix = (statistics.median(r[i] for r in rows) for i in range(3))
    print(f"engine, upstream stable rules + packaged append_output, {len(lines)} events, "
          f"{share:.0%} in containers, median of 3 interleaved runs (events per CPU second):")
    print(f"  host-only, engine alone            {host:10,.0f}/s")
    print(f"  host-only, through the hold        {host_hold:10,.0f}/s  ({host_hold / host - 1:+.1%})")
    print(f"  {share:.0%} in containers, through hold {mix:10,.0f}/s  ({mix / host - 1:+.1%} vs host-only)")


def _loops_static(directory: Path) -> Path:
    out = directory / "daemon_loops"
    subprocess.run(["gcc", "-O2", "-static", "-o", str(out), str(REPO / "bench" / "daemon_loops.c")], check=True)
    return out


def part_overhead(n: int, repeat: int) -> None:
    IMAGE_REF = _helpers("container_images").IMAGE_REF
    runtimes = _helpers("container_runtimes")
    DOCKER, RUN_LIMITS, Dockerd = runtimes.DOCKER, runtimes.RUN_LIMITS, runtimes.Dockerd

    from bench._daemon_common import UPSTREAM_STABLE, Daemon, machine_state

    d = Dockerd()
    d.start()
    d.ensure_image()
    work = Path(tempfile.mkdtemp(prefix="falconet-bench-ct-"))
    loops = _loops_static(work)
    name = "falconet-bench-loops"
    base = [DOCKER, "-H", f"unix://{d.socket}"]
    subprocess.run([*base, "rm", "-f", name], capture_output=True)
    subprocess.run([*base, "run", "-d", "--name", name, "--network", "none", *RUN_LIMITS, "-v",
                    f"{loops}:/loops:ro", IMAGE_REF], check=True, capture_output=True)

    def host() -> float:
        return float(subprocess.run([str(loops), "open", str(n)], capture_output=True, text=True,
                                    check=True).stdout)

    def inside() -> float:
        return float(subprocess.run([*base, "exec", name, "/loops", "open", str(n)], capture_output=True,
                                    text=True, check=True).stdout)

    def both() -> tuple[float, float]:
        hs, cs = [], []
        for _ in range(repeat):
            hs.append(host())
            cs.append(inside())
        return statistics.median(hs), statistics.median(cs)

    try:
        print(machine_state())
        bare_h, bare_c = both()
        extra = f"container_engines: {{docker: {{sockets: [{d.socket}]}}, podman: {{enabled: false}}}}\n"
        with Daemon([UPSTREAM_STABLE], extra=extra):
            run_h, run_c = both()
    finally:
        subprocess.run([*base, "rm", "-f", name], capture_output=True)
        d.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"open/read/close loop, {n} iterations, median of {repeat} (ns per iteration):")
    print(f"  host:      bare {bare_h:8.0f}   under falconet run {run_h:8.0f}   overhead {run_h / bare_h - 1:+.0%}")
    print(f"  container: bare {bare_c:8.0f}   under falconet run {run_c:8.0f}   overhead {run_c / bare_c - 1:+.0%}")
    print(f"  overhead inside a container against on the host: {(run_c / bare_c) / (run_h / bare_h):.2f}x")


def part_first(count: int) -> None:
    live = _helpers("container_live")
    runtimes = _helpers("container_runtimes")
    Alerts, docker_runtime, podman_runtime = live.Alerts, live.docker_runtime, live.podman_runtime
    live_config, start_live_daemon = live.live_config, live.start_live_daemon
    Dockerd, Podman, PodmanService = runtimes.Dockerd, runtimes.Podman, runtimes.PodmanService

    d = Dockerd()
    d.start()
    d.ensure_image()
    Podman().ensure_image()
    ps = PodmanService()
    ps.start()
    work = Path(tempfile.mkdtemp(prefix="falconet-bench-first-"))
    daemon = start_live_daemon(work, live_config(work, d.socket, ps.socket))
    alerts = Alerts(work / "alerts.json")
    rule = "Netcat Remote Code Execution in Container"
    try:
        for rt in (docker_runtime(d.socket), podman_runtime()):
            ids: list[str] = []
            t0 = time.monotonic()
            for i in range(count):
                name = f"fnt-bench-{rt.kind}-{i}-{work.name[-6:]}"
                out = rt.cli("run", "-d", "--name", name, "--label", runtimes.label(), "--network", "none",
                             "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096",
                             "falconet-test/busybox:1.0", "sh", "-c",
                             "/bin/nc -w 1 127.0.0.1 9 -e /bin/true; exit 0")
                ids.append(out.stdout.strip()[:12])
            elapsed = time.monotonic() - t0
            deadline = time.monotonic() + 60
            while True:
                got = {a["output_fields"]["container.id"]: a for a in alerts.matching(lambda a: a.get("rule") == rule)
                       if a["output_fields"].get("container.id") in ids}
                if len(got) == len(ids) or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            filled = sum(1 for a in got.values() if a["output_fields"].get("container.name")
                         and a["output_fields"].get("container.image.repository"))
            print(f"{rt.kind}: {count} containers started in {elapsed:.1f}s; {len(got)} alerts; "
                  f"name and image filled in {filled}/{len(got)} = {filled / max(1, len(got)):.0%}")
            rt.cli("rm", "-f", *ids, check=False)
        metrics = subprocess.run(["curl", "-s", daemon.metrics_url], capture_output=True, text=True).stdout
        for line in metrics.splitlines():
            if line.startswith(("falconet_container_metadata_wait", "falconet_kernel_drops")):
                print(f"  {line}")
    finally:
        daemon.kill()
        ps.stop()
        d.stop()
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.containers", description=__doc__.split("\n")[0])
    ap.add_argument("--part", choices=("engine", "overhead", "first"), action="append")
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--containers", type=int, default=100)
    ap.add_argument("--open", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    parts = args.part or ["engine", "overhead", "first"]
    if "engine" in parts:
        part_engine(args.seconds)
    if "overhead" in parts:
        part_overhead(args.open, args.repeat)
    if "first" in parts:
        part_first(args.containers)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
