"""Helpers for the engine's tests: events from compact specs, fixed resolvers, and where the upstream files are.

Events are written as the documented JSON-lines form (docs/events.md, `Event.from_dict`) deep-merged over a
benign base event, so a test case states only what matters to it: `{type: openat, fd: {name: /etc/shadow}}`.
`ancestors: [a, b, ...]` under `proc` is shorthand for the parent chain (parent first).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from resources import SHARED

from falconet.rules.engine import Resolvers
from falconet.model.event import Event

REPO = Path(__file__).resolve().parents[2]
UPSTREAM = SHARED / "upstream-rules"  # read only after `resources.shared_path` (skip or CI failure)
CURRENT = UPSTREAM / "current"
STABLE = CURRENT / "falco_rules.yaml"
INCUBATING = CURRENT / "falco-incubating_rules.yaml"
SANDBOX = CURRENT / "falco-sandbox_rules.yaml"
FALCO_025 = UPSTREAM / "falco-0.25" / "falco_rules.yaml"
FALCO_025_K8S = UPSTREAM / "falco-0.25" / "k8s_audit_rules.yaml"

DNS: dict[str, list[str]] = {
    "kubernetes.default.svc.cluster.local": ["10.96.0.1"],
    "xmr.pool.minergate.com": ["94.130.12.27"],
    "pool.example.org": ["203.0.113.9"],
}
RESOLVERS = Resolvers(hostname=lambda: "test-host", dns=lambda name: list(DNS.get(name, [])))

BASE: dict[str, Any] = {
    "num": 1,
    "ts": 1_700_000_000_123_456_789,
    "type": "execve",
    "tid": 4242,
    "res": 0,
    "proc": {
        "pid": 4242,
        "ppid": 4241,
        "name": "bash",
        "exe": "bash",
        "exepath": "/usr/bin/bash",
        "args": [],
        "cwd": "/home/alice",
        "tty": 0,
        "start_ts": 1_699_999_000_000_000_000,
        "user": {
            "uid": 1000,
            "name": "alice",
            "homedir": "/home/alice",
            "shell": "/bin/bash",
            "loginuid": 1000,
        },
        "group": {"gid": 1000, "name": "alice"},
    },
    "args": {},
    "container": {"id": "host"},
}


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _chain(proc: dict[str, Any]) -> dict[str, Any]:
    """Expands `ancestors: [parent, grandparent, ...]` (names, or dicts of process keys) into `parent` links."""
    proc = dict(proc)
    ancestors = proc.pop("ancestors", None)
    if ancestors is None:
        if proc.get("parent"):
            proc["parent"] = _chain(proc["parent"])
        return proc
    parent: dict[str, Any] | None = None
    pid = 4000
    for item in reversed(ancestors):
        spec = {"name": item} if isinstance(item, str) else dict(item)
        name = spec.get("name", "init")
        node = {"pid": pid, "ppid": pid - 1, "name": name, "exe": name, "exepath": f"/usr/bin/{name}"}
        node.update(spec)
        if parent is not None:
            node["parent"] = parent
        parent = node
        pid += 1
    if parent is not None:
        proc["parent"] = parent
    else:
        proc.pop("parent", None)
    return proc


def make_event(spec: dict[str, Any] | None = None) -> Event:
    """An Event from a compact spec merged over BASE (a benign `bash` exec by alice on the host)."""
    spec = dict(spec or {})
    proc_spec = spec.get("proc") or {}
    data = _merge(BASE, spec)
    if "ancestors" not in proc_spec and "parent" not in proc_spec:
        data["proc"]["ancestors"] = ["sshd", "systemd"]
    data["proc"] = _chain(data["proc"])
    return Event.from_dict(data)
