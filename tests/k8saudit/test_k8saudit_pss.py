"""`falconet rules from-pss`: each Pod Security Standards control has a violating pod and a conforming one, and
only the violating one alerts, with that control's rule. The conforming pod meets the restricted profile."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from audit_support import RESOLVERS, pod_event

from falconet.rules.engine import Engine
from falconet.rules.pss import convert_pss


RESTRICTED_CONTAINER: dict[str, Any] = {
    "name": "web", "image": "nginx",
    "ports": [{"containerPort": 8080}],
    "securityContext": {"allowPrivilegeEscalation": False, "runAsNonRoot": True, "runAsUser": 1000,
                        "seccompProfile": {"type": "RuntimeDefault"},
                        "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}},
}  # fmt: skip
CONFORMING: dict[str, Any] = {
    "containers": [RESTRICTED_CONTAINER],
    "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
    "volumes": [{"name": "cfg", "configMap": {"name": "c"}}, {"name": "tmp", "emptyDir": {}}],
}


def _with(path: str, value: Any, container: bool = True) -> dict[str, Any]:
    """The conforming spec with one setting changed (in its container, or in the pod spec)."""
    spec = copy.deepcopy(CONFORMING)
    target = spec["containers"][0] if container else spec
    *parents, last = path.split(".")
    for key in parents:
        target = target.setdefault(key, {})
    target[last] = value
    return spec


def _init(container: dict[str, Any]) -> dict[str, Any]:
    spec = copy.deepcopy(CONFORMING)
    spec["initContainers"] = [dict(copy.deepcopy(RESTRICTED_CONTAINER), name="init", **container)]
    return spec


BASELINE = [
    ("Host Namespaces", _with("hostNetwork", True, container=False)),
    ("Host Namespaces", _with("hostPID", True, container=False)),
    ("Privileged Containers", _with("securityContext.privileged", True)),
    ("Privileged Containers", _init({"securityContext": {**RESTRICTED_CONTAINER["securityContext"], "privileged": True}})),
    ("Capabilities", _with("securityContext.capabilities.add", ["SYS_ADMIN"])),
    ("HostPath Volumes", _with("volumes", [{"name": "h", "hostPath": {"path": "/etc"}}], container=False)),
    ("Host Ports", _with("ports", [{"containerPort": 80, "hostPort": 80}])),
    ("/proc Mount Type", _with("securityContext.procMount", "Unmasked")),
    ("Seccomp", _with("securityContext.seccompProfile.type", "Unconfined", container=False)),
]
RESTRICTED = [
    ("Volume Types", _with("volumes", [{"name": "n", "nfs": {"server": "192.0.2.1", "path": "/"}}], container=False)),
    ("Privilege Escalation", _with("securityContext.allowPrivilegeEscalation", True)),
    ("Running as Non-root", _with("securityContext.runAsNonRoot", False)),
    ("Running as Non-root user", _with("securityContext.runAsUser", 0)),
    ("Seccomp (restricted)", _with("securityContext.seccompProfile.type", "Unconfined")),
    ("Capabilities (restricted)", _with("securityContext.capabilities.drop", ["NET_RAW"])),
]


def _engine(profile: str, namespaces: list[str] | None = None) -> Engine:
    doc = convert_pss(profile, namespaces or [])
    engine = Engine.from_texts([("pss.yaml", doc.text())], resolvers=RESOLVERS, rule_matching="all")
    assert engine.load_result.warnings == [], engine.load_result.format()
    return engine


def test_a_pod_meeting_the_restricted_profile_raises_nothing() -> None:
    for profile in ("baseline", "restricted"):
        assert _engine(profile).process(pod_event(CONFORMING)) == []


@pytest.mark.parametrize(("control", "spec"), BASELINE, ids=[c for c, _ in BASELINE])
def test_baseline_controls(control: str, spec: dict[str, Any]) -> None:
    assert [a.rule for a in _engine("baseline").process(pod_event(spec))] == [f"PSS baseline Violation ({control})"]
    restricted = [a.rule for a in _engine("restricted").process(pod_event(spec))]
    assert f"PSS restricted Violation ({control})" in restricted  # restricted includes baseline


@pytest.mark.parametrize(("control", "spec"), RESTRICTED, ids=[c for c, _ in RESTRICTED])
def test_restricted_controls(control: str, spec: dict[str, Any]) -> None:
    assert [a.rule for a in _engine("restricted").process(pod_event(spec))] == [f"PSS restricted Violation ({control})"]
    assert _engine("baseline").process(pod_event(spec)) == []


def test_namespaces_scope_the_rules() -> None:
    spec = _with("hostNetwork", True, container=False)
    engine = _engine("baseline", ["prod"])
    assert engine.process(pod_event(spec)) == []  # the sample pod is in "default"
    prod = pod_event(spec, objectRef={"resource": "pods", "namespace": "prod"})
    assert [a.rule for a in engine.process(prod)] == ["PSS baseline Violation (Host Namespaces)"]
    assert all("k8s-pss" in r.tags and "pss-baseline" in r.tags for r in engine.rules)


def test_the_cli_writes_rules_that_validate(tmp_path: Path) -> None:
    out = tmp_path / "pss.yaml"
    run = subprocess.run([sys.executable, "-m", "falconet.server.cli", "rules", "from-pss", "restricted",
                          "--namespace", "prod", "-o", str(out)], capture_output=True, text=True, timeout=60,
                         check=False)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "warning: not checked: AppArmor profiles" in run.stderr
    check = subprocess.run([sys.executable, "-m", "falconet.server.cli", "rules", "validate", str(out)],
                           capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert check.returncode == 0 and "0 errors, 0 warnings" in check.stdout + check.stderr
