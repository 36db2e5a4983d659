"""Falco's k8s_audit rules (0.25's file and the k8saudit plugin's current one) load and fire on Falco's samples.

The expectations are Falco 0.25's own k8s audit regression cases (test/falco_k8s_audit_tests.yaml at 0.25.0):
which trace file raises which rule, with which small local override. Falco 0.25 matched the first rule only;
here every rule is evaluated (rule_matching: all) and a case checks its rule fired (its count) or did not.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from audit_support import (
    engine,
    events_dir,
    falco025_rules,
    falco025_syscall_rules,
    matches,
    plugin_rules,
    read_events,
)

from falconet.model.audit import JsonObject, decode_audit_object
from falconet.rules.loader import Loader

pytestmark = [pytest.mark.k8saudit, pytest.mark.upstream]

# The local overrides Falco's cases load after the rules (test/rules/k8s_audit/*.yaml), restated.
ALLOW_NS_FOO = "- list: allowed_namespaces\n  items: [foo]\n  append: true\n"
ALLOW_SOME_USER = "- list: allowed_k8s_users\n  items: [some-user]\n  append: true\n"
NO_ACTIVITY = "- macro: consider_activity_events\n  condition: (not jevt.rawtime exists)\n"
TRUST_NGINX = "".join(
    f"- list: {name}\n  items: [nginx]\n  append: true\n"
    for name in ("falco_sensitive_mount_images", "falco_privileged_images", "falco_hostnetwork_images")
)
ONLY_APACHE = "- macro: allowed_k8s_containers\n  condition: (ka.req.pod.containers.image.repository in (apache))\n"
ONLY_NGINX = "- macro: allowed_k8s_containers\n  condition: (ka.req.pod.containers.image.repository in (nginx))\n"

# (trace file, rule, expected count (0: must not fire), local override)
CASES: list[tuple[str, str, int, str]] = [
    ("some-user_creates_namespace_foo", "Disallowed K8s User", 1, ALLOW_NS_FOO),
    ("some-user_creates_namespace_foo", "Disallowed K8s User", 0, ALLOW_NS_FOO + ALLOW_SOME_USER + NO_ACTIVITY),
    ("create_nginx_pod_unprivileged", "Create Disallowed Pod", 1, ONLY_APACHE),
    ("create_nginx_pod_unprivileged", "Create Disallowed Pod", 0, ONLY_NGINX),
    ("create_nginx_pod_privileged", "Create Privileged Pod", 1, ""),
    ("create_nginx_pod_privileged_2nd_container", "Create Privileged Pod", 1, ""),
    ("create_nginx_pod_privileged", "Create Privileged Pod", 0, TRUST_NGINX),
    ("create_nginx_pod_unprivileged", "Create Privileged Pod", 0, ""),
    ("create_nginx_pod_sensitive_mount", "Create Sensitive Mount Pod", 1, ""),
    ("create_nginx_pod_sensitive_mount_2nd_container", "Create Sensitive Mount Pod", 1, ""),
    ("create_nginx_pod_sensitive_mount", "Create Sensitive Mount Pod", 0, TRUST_NGINX),
    ("create_nginx_pod_unsensitive_mount", "Create Sensitive Mount Pod", 0, ""),
    ("create_nginx_pod_hostnetwork", "Create HostNetwork Pod", 1, ""),
    ("create_nginx_pod_hostnetwork", "Create HostNetwork Pod", 0, TRUST_NGINX),
    ("create_nginx_pod_nohostnetwork", "Create HostNetwork Pod", 0, ""),
    ("create_nginx_service_nodeport", "Create NodePort Service", 1, NO_ACTIVITY),
    ("create_nginx_service_nonodeport", "Create NodePort Service", 0, NO_ACTIVITY),
    ("create_configmap_sensitive_values", "Create/Modify Configmap With Private Credentials", 6, NO_ACTIVITY),
    ("create_configmap_no_sensitive_values", "Create/Modify Configmap With Private Credentials", 0, NO_ACTIVITY),
    ("anonymous_creates_namespace_foo", "Anonymous Request Allowed", 1, ""),
    ("exec_pod", "Attach/Exec Pod", 1, ""),
    ("attach_pod", "Attach/Exec Pod", 1, ""),
    ("some-user_creates_namespace_foo", "Create Disallowed Namespace", 1, ALLOW_SOME_USER),
    ("minikube_creates_namespace_foo", "Create Disallowed Namespace", 0, ALLOW_NS_FOO + NO_ACTIVITY),
    ("create_pod_kube_system_namespace", "Pod Created in Kube Namespace", 1, ""),
    ("create_pod_kube_public_namespace", "Pod Created in Kube Namespace", 1, ""),
    ("create_serviceaccount_kube_system_namespace", "Service Account Created in Kube Namespace", 1, ""),
    ("create_serviceaccount_kube_public_namespace", "Service Account Created in Kube Namespace", 1, ""),
    ("delete_cluster_role_kube_aggregator", "System ClusterRole Modified/Deleted", 1, ""),
    ("modify_cluster_role_node_problem_detector", "System ClusterRole Modified/Deleted", 1, ""),
    ("attach_cluster_admin_role", "Attach to cluster-admin Role", 1, ""),
    ("create_cluster_role_wildcard_resources", "ClusterRole With Wildcard Created", 1, ""),
    ("create_cluster_role_wildcard_verbs", "ClusterRole With Wildcard Created", 1, ""),
    ("create_cluster_role_write_privileges", "ClusterRole With Write Privileges Created", 1, ""),
    ("create_cluster_role_pod_exec", "ClusterRole With Pod Exec Created", 1, ""),
    ("create_deployment", "K8s Deployment Created", 1, ""),
    ("delete_deployment", "K8s Deployment Deleted", 1, ""),
    ("create_service", "K8s Service Created", 1, ""),
    ("delete_service", "K8s Service Deleted", 1, ""),
    ("create_configmap", "K8s ConfigMap Created", 1, ""),
    ("delete_configmap", "K8s ConfigMap Deleted", 1, ""),
    ("some-user_creates_namespace_foo", "K8s Namespace Created", 1, ALLOW_NS_FOO + ALLOW_SOME_USER),
    ("delete_namespace_foo", "K8s Namespace Deleted", 1, ""),
    ("create_serviceaccount", "K8s Serviceaccount Created", 1, ""),
    ("delete_serviceaccount", "K8s Serviceaccount Deleted", 1, ""),
    ("create_clusterrole", "K8s Role/Clusterrole Created", 1, ""),
    ("delete_clusterrole", "K8s Role/Clusterrole Deleted", 1, ""),
    ("create_clusterrolebinding", "K8s Role/Clusterrolebinding Created", 1, ""),
    ("delete_clusterrolebinding", "K8s Role/Clusterrolebinding Deleted", 1, ""),
    ("create_secret", "K8s Secret Created", 1, ""),
    ("create_service_account_token_secret", "K8s Secret Created", 0, ""),
    ("create_kube_system_secret", "K8s Secret Created", 0, ""),
    ("delete_secret", "K8s Secret Deleted", 1, ""),
]

# The plugin's current rules renamed a few (Role/Clusterrole -> ClusterRole); on the same samples.
PLUGIN_CASES: list[tuple[str, str, int]] = [
    ("create_nginx_pod_privileged", "Create Privileged Pod", 1),
    ("create_nginx_pod_privileged_2nd_container", "Create Privileged Pod", 1),
    ("create_nginx_pod_unprivileged", "Create Privileged Pod", 0),
    ("create_nginx_pod_sensitive_mount", "Create Sensitive Mount Pod", 1),
    ("create_nginx_pod_unsensitive_mount", "Create Sensitive Mount Pod", 0),
    ("create_nginx_pod_hostnetwork", "Create HostNetwork Pod", 1),
    ("create_nginx_pod_nohostnetwork", "Create HostNetwork Pod", 0),
    ("create_nginx_service_nodeport", "Create NodePort Service", 1),
    ("create_nginx_service_nonodeport", "Create NodePort Service", 0),
    ("create_configmap_sensitive_values", "Create/Modify Configmap With Private Credentials", 6),
    ("create_configmap_no_sensitive_values", "Create/Modify Configmap With Private Credentials", 0),
    ("anonymous_creates_namespace_foo", "Anonymous Request Allowed", 1),
    ("exec_pod", "Attach/Exec Pod", 1),
    ("attach_pod", "Attach/Exec Pod", 1),
    ("create_pod_kube_system_namespace", "Pod Created in Kube Namespace", 1),
    ("create_serviceaccount_kube_public_namespace", "Service Account Created in Kube Namespace", 1),
    ("delete_cluster_role_kube_aggregator", "System ClusterRole Modified/Deleted", 1),
    ("attach_cluster_admin_role", "Attach to cluster-admin Role", 1),
    ("create_cluster_role_wildcard_verbs", "ClusterRole With Wildcard Created", 1),
    ("create_cluster_role_write_privileges", "ClusterRole With Write Privileges Created", 1),
    ("create_cluster_role_pod_exec", "ClusterRole With Pod Exec Created", 1),
    ("create_clusterrole", "K8s ClusterRole Created", 1),
    ("delete_clusterrolebinding", "K8s ClusterRoleBinding Deleted", 1),
    ("create_secret", "K8s Secret Created", 1),
    ("create_kube_system_secret", "K8s Secret Created", 0),
]


def test_both_rules_files_load_with_no_error_and_every_rule() -> None:
    for path, n_rules in ((falco025_rules(), 39), (plugin_rules(), 48)):
        loader = Loader()
        loader.add_file(path)
        ruleset = loader.compile()
        assert ruleset.result.errors == [], ruleset.result.format()
        codes = {d.code.value for d in ruleset.result.warnings}
        assert not codes & {"LOAD_UNKNOWN_SOURCE", "LOAD_WARNING_EXTENSION", "LOAD_UNKNOWN_FILTER", "LOAD_NO_EVTTYPE"}
        assert len(ruleset.rules) == n_rules and {r.source for r in ruleset.rules} == {"k8s_audit"}


@pytest.mark.parametrize(("trace", "rule", "count", "local"), CASES, ids=[f"{c[0]}-{c[2]}" for c in CASES])
def test_falco_025_rules_on_falco_samples(trace: str, rule: str, count: int, local: str) -> None:
    # As Falco's cases: its syscall rules first (they define the image lists), then the k8s_audit rules.
    eng = engine([falco025_syscall_rules(), falco025_rules()], local, rule_matching="all")
    got = Counter(matches(eng, read_events(events_dir() / f"{trace}.json")))
    assert got[rule] == count, dict(got)
    assert eng.stats.eval_errors == 0


@pytest.mark.parametrize(("trace", "rule", "count"), PLUGIN_CASES, ids=[f"{c[0]}-{c[2]}" for c in PLUGIN_CASES])
def test_plugin_rules_on_falco_samples(trace: str, rule: str, count: int) -> None:
    eng = engine([plugin_rules()], rule_matching="all")
    got = Counter(matches(eng, read_events(events_dir() / f"{trace}.json")))
    assert got[rule] == count, dict(got)
    assert eng.stats.eval_errors == 0


def test_rules_test_cli_reads_audit_files_without_flags(tmp_path: Path) -> None:
    events = tmp_path / "audit.jsonl"
    events.write_text(
        "".join((events_dir() / f"{n}.json").read_text() for n in ("create_nginx_pod_privileged", "exec_pod")),
        encoding="utf-8",
    )
    proc = subprocess.run(
        [sys.executable, "-m", "falconet.server.cli", "rules", "test", str(events), "-r", str(falco025_rules())],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    alerts = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [(a["rule"], a["source"]) for a in alerts] == [
        ("Create Privileged Pod", "k8s_audit"), ("Attach/Exec Pod", "k8s_audit"),
    ]  # fmt: skip
    assert "2 events, 2 alerts, 0 malformed lines" in proc.stderr


def test_the_verb_and_resource_index_never_changes_an_answer() -> None:
    # matching_rules() evaluates every rule; process() only the index's candidates. Every sample, and the
    # samples with their verb and resource changed (to ones no rule names, to a hostile array, removed).
    for rules in ([falco025_syscall_rules(), falco025_rules()], [plugin_rules()]):
        eng = engine(rules, rule_matching="all")
        for path in sorted(events_dir().glob("*.json")):
            for ev in read_events(path):
                variants: list[JsonObject] = [ev.data, {**ev.data, "verb": "frobnicate"}, {**ev.data, "verb": ["create"]},
                            {k: v for k, v in ev.data.items() if k != "objectRef"}]  # fmt: skip
                for data in variants:
                    (variant,) = decode_audit_object(data)
                    assert [a.rule for a in eng.process(variant)] == eng.matching_rules(variant), path.name
