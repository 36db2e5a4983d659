"""Helpers for the k8s_audit tests: the shared sample events and rules, read from ../shared, and small audit
objects built by hand for the field semantics."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from resources import shared_path

from falconet.model.audit import AuditEvent, decode_audit_object
from falconet.rules.engine import Engine, Resolvers

RESOLVERS = Resolvers(hostname=lambda: "test-host", dns=lambda _name: [])


def events_dir() -> Path:
    return shared_path("upstream-k8saudit", "events")


def psp_dir() -> Path:
    return shared_path("upstream-k8saudit", "psp")


def falco025_rules() -> Path:
    return shared_path("upstream-rules", "falco-0.25", "k8s_audit_rules.yaml")


def falco025_syscall_rules() -> Path:
    return shared_path("upstream-rules", "falco-0.25", "falco_rules.yaml")


def plugin_rules() -> Path:
    return shared_path("upstream-k8saudit", "rules", "k8saudit_rules.yaml")


def read_events(path: Path) -> list[AuditEvent]:
    """Every event of a sample file (one JSON object per line)."""
    out: list[AuditEvent] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            out.extend(decode_audit_object(json.loads(line), len(out) + 1))
    return out


def engine(files: list[Path], extra: str = "", **options: Any) -> Engine:
    texts = [(str(f), f.read_text(encoding="utf-8")) for f in files]
    if extra:
        texts.append(("local.yaml", extra))
    options.setdefault("resolvers", RESOLVERS)
    return Engine.from_texts(texts, **options)


def matches(eng: Engine, events: list[AuditEvent]) -> list[str]:
    """Rule names of every alert over the events, in order (rule_matching as the engine was built)."""
    return [a.rule for ev in events for a in eng.process(ev)]


POD: dict[str, Any] = {
    "kind": "Event",
    "apiVersion": "audit.k8s.io/v1",
    "auditID": "0b8b3bf1-0000-4000-8000-000000000001",
    "stage": "ResponseComplete",
    "requestURI": "/api/v1/namespaces/default/pods",
    "verb": "create",
    "user": {"username": "alice", "groups": ["dev", "system:authenticated"]},
    "objectRef": {"resource": "pods", "namespace": "default", "apiVersion": "v1"},
    "responseStatus": {"code": 201},
    "requestObject": {
        "kind": "Pod",
        "spec": {"containers": [{"name": "web", "image": "docker.io/library/nginx:1.25"}]},
    },
    "responseObject": {"metadata": {"name": "web-1"}},
    "stageTimestamp": "2024-05-01T10:00:00.123456Z",
}


def pod_event(spec: dict[str, Any] | None = None, **top: Any) -> AuditEvent:
    """A pod-create audit event whose requestObject.spec is POD's with `spec` merged over it."""
    data = copy.deepcopy(POD)
    if spec is not None:
        data["requestObject"]["spec"].update(copy.deepcopy(spec))
    data.update(copy.deepcopy(top))
    return decode_audit_object(data)[0]
