"""k8s audit throughput: events/s posted to the real endpoint and evaluated by the engine, against parsing the
same JSON alone, in one run.

The stream (deterministic, seed 42) is what an API server's audit webhook sends a busy cluster's Falco: mostly
Metadata-level reads (get/list/watch of pods, configmaps, nodes, leases... by controllers and kubelets, ~700
bytes each) and, 5% of the time, one of Falco's sample events (pod creations with full request/response
objects, ~3 KB, many of which alert). Events go in EventList batches of 100 (the webhook's default batching).

Figures, all in this process except the HTTP client:
- parse only: json.loads of the same bodies (the floor any JSON endpoint pays);
- parse + decode: the same, then model.audit's decoding into AuditEvents (what replay and the endpoint do);
- engine only: engine.process() over decoded events, with the k8saudit plugin's current rules (48) and with
  Falco 0.25's k8s_audit rules (39), rule_matching first;
- endpoint -> engine: a client process posts the bodies over HTTP keep-alive connections to a
  K8sAuditEndpoint (aiohttp) in this process, whose engine thread drains the queue as the daemon's does;
  events/s from the first request to the last event evaluated. Endpoint and engine share this process's one
  interpreter lock, so the figure is one core's worth.

Run: python -m bench.k8s_audit [--seconds S] [--batches N] [--clients C]
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import http.client
import json
import multiprocessing
import random
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from falconet.model.audit import decode_audit_object
from falconet.rules.engine import Engine, Resolvers
from falconet.server.k8s_audit import IdleSource, K8sAuditEndpoint
from falconet.server.k8s_audit_config import K8sAuditConfig

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
EVENTS = SHARED / "upstream-k8saudit" / "events"
PLUGIN_RULES = SHARED / "upstream-k8saudit" / "rules" / "k8saudit_rules.yaml"
FALCO025_RULES = SHARED / "upstream-rules" / "falco-0.25" / "k8s_audit_rules.yaml"
RESOLVERS = Resolvers(hostname=lambda: "bench", dns=lambda _n: [])

READERS = ["system:node:worker-1", "system:serviceaccount:kube-system:replicaset-controller",
           "system:kube-scheduler", "system:serviceaccount:kube-system:endpoint-controller", "kubelet"]  # fmt: skip
RESOURCES = ["pods", "configmaps", "nodes", "leases", "endpoints", "secrets", "services", "deployments"]


def samples() -> list[dict[str, Any]]:
    out = []
    for path in sorted(EVENTS.glob("*.json")):
        out += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return out


def stream(n: int, rng: random.Random) -> list[dict[str, Any]]:
    """`n` events: 95% Metadata-level reads built from the samples' shape, 5% the samples themselves."""
    base = samples()
    out = []
    for i in range(n):
        if rng.random() < 0.05:
            ev = copy.deepcopy(rng.choice(base))
        else:
            ev = copy.deepcopy(rng.choice(base))
            for key in ("requestObject", "responseObject"):
                ev.pop(key, None)
            resource = rng.choice(RESOURCES)
            ev.update(level="Metadata", verb=rng.choice(["get", "list", "watch"]),
                      user={"username": rng.choice(READERS), "groups": ["system:authenticated"]},
                      objectRef={"resource": resource, "namespace": rng.choice(["default", "kube-system", "prod"]),
                                 "apiVersion": "v1"},
                      requestURI=f"/api/v1/namespaces/default/{resource}", responseStatus={"code": 200})  # fmt: skip
        ev["auditID"] = f"00000000-0000-4000-8000-{i:012d}"
        out.append(ev)
    return out


def bodies(batches: int) -> list[bytes]:
    rng = random.Random(42)
    events = stream(batches * 100, rng)
    return [json.dumps({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": events[i:i + 100]},
                       separators=(",", ":")).encode() for i in range(0, len(events), 100)]  # fmt: skip


def rate(fn: Callable[[], int], seconds: float) -> float:
    """Events/s of `fn` (which returns the events it handled), repeated for about `seconds`."""
    done, start = 0, time.perf_counter()
    while True:
        done += fn()
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return done / elapsed


def engine(rules: Path) -> Engine:
    return Engine.from_files([rules], resolvers=RESOLVERS)


def _client(url: str, payloads: list[bytes], clients: int, rounds: int) -> None:
    """In a child process: post every body `rounds` times over `clients` keep-alive connections."""
    host, port = url.split("//")[1].split("/")[0].split(":")

    def worker(part: list[bytes]) -> None:
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        for _ in range(rounds):
            for body in part:
                while True:
                    conn.request("POST", "/k8s-audit", body=body, headers={"Content-Type": "application/json"})
                    resp = conn.getresponse()
                    resp.read()
                    if resp.status == 200:
                        break
                    if resp.status != 429:
                        raise SystemExit(f"unexpected HTTP {resp.status}")
                    time.sleep(0.005)  # the queue is full: back off as a webhook does
        conn.close()

    threads = [threading.Thread(target=worker, args=(payloads[i::clients],)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def through_endpoint(rules: Path, payloads: list[bytes], clients: int, rounds: int) -> tuple[float, int]:
    """(events/s from the first request to the last event evaluated, alerts)."""
    eng = engine(rules)
    endpoint = K8sAuditEndpoint(K8sAuditConfig(listen_address="127.0.0.1", port=0, queue_size=20_000),
                                log=lambda _m: None)  # fmt: skip
    source = endpoint.wrap(IdleSource())
    total = len(payloads) * 100 * rounds
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    url = asyncio.run_coroutine_threadsafe(endpoint.start(), loop).result(10)
    seen = [0]
    first = [0.0]
    finished = threading.Event()

    def engine_thread() -> None:
        while seen[0] < total:
            batch = source.poll(100) or []
            if batch and not first[0]:
                first[0] = time.perf_counter()  # the first request has arrived (the client process is up)
            for ev in batch:
                eng.process(ev)
                seen[0] += 1
        finished.set()

    threading.Thread(target=engine_thread, daemon=True).start()
    child = multiprocessing.get_context("spawn").Process(target=_client, args=(url, payloads, clients, rounds))
    child.start()
    finished.wait(600)
    elapsed = time.perf_counter() - first[0]
    child.join(60)
    asyncio.run_coroutine_threadsafe(endpoint.stop(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    if child.exitcode != 0 or seen[0] != total:
        raise SystemExit(f"the client failed (exit {child.exitcode}) or events were lost ({seen[0]}/{total})")
    return total / elapsed, eng.stats.alerts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=3.0, help="time per in-process figure")
    ap.add_argument("--batches", type=int, default=200, help="distinct EventList bodies of 100 events")
    ap.add_argument("--clients", type=int, default=4, help="concurrent HTTP connections of the client")
    ap.add_argument("--rounds", type=int, default=3, help="times the client posts every body")
    args = ap.parse_args(argv)
    if not EVENTS.is_dir():
        print(f"the sample events are missing: {EVENTS}", file=sys.stderr)
        return 2
    payloads = bodies(args.batches)
    size = sum(len(b) for b in payloads) / (len(payloads) * 100)
    print(f"{len(payloads)} EventList bodies of 100 events, {size:.0f} bytes per event on average")
    idx = [0]

    def parse() -> int:
        idx[0] = (idx[0] + 1) % len(payloads)
        return len(json.loads(payloads[idx[0]])["items"])

    def parse_decode() -> int:
        idx[0] = (idx[0] + 1) % len(payloads)
        return len(decode_audit_object(json.loads(payloads[idx[0]])))

    baseline = rate(parse, args.seconds)
    rows = [("parse only (json.loads)", baseline), ("parse + decode", rate(parse_decode, args.seconds))]
    for label, rules in (("plugin rules", PLUGIN_RULES), ("Falco 0.25 rules", FALCO025_RULES)):
        eng = engine(rules)
        decoded = [decode_audit_object(json.loads(b)) for b in payloads[:50]]

        def run(eng: Engine = eng, decoded: list[Any] = decoded) -> int:
            idx[0] = (idx[0] + 1) % len(decoded)
            for ev in decoded[idx[0]]:
                ev.memo.clear()  # as a fresh event
                eng.process(ev)
            return len(decoded[idx[0]])

        rows.append((f"engine only, {label}", rate(run, args.seconds)))
    for label, rules in (("plugin rules", PLUGIN_RULES), ("Falco 0.25 rules", FALCO025_RULES)):
        eps, alerts = through_endpoint(rules, payloads, args.clients, args.rounds)
        rows.append((f"endpoint -> engine, {label} ({alerts} alerts)", eps))
    print(f"{'figure':<58} {'events/s':>10} {'vs parse':>9}")
    for label, value in rows:
        print(f"{label:<58} {value:>10,.0f} {value / baseline:>9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
