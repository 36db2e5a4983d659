"""`falconet rules from-psp`: Falco 0.25's PodSecurityPolicy cases (test/falco_tests_psp.yaml at 0.25.0), each
PSP against a violating and a conforming pod event; only the violating one alerts, with falcoctl's rule name.

The syscall ("System Activity") variants, which Falco tested with .scap captures, are checked on syscall
events built here: a process in one of the pod's containers that shows the restriction was not applied.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml
from audit_support import RESOLVERS, psp_dir, read_events

from falconet.model.event import Container, Event, Fd, Group, Process, User
from falconet.rules.engine import Engine
from falconet.rules.psp import PspError, convert_psp

pytestmark = pytest.mark.k8saudit

# (PSP file, audit trace, the rule that must fire, or "" for: no alert at all)
CASES = [
    ("privileged", "privileged", "PSP no_privileged Violation (privileged) K8s Audit"),
    ("privileged", "create_vanilla_nginx_deployment", ""),
    ("host_pid", "host_pid", "PSP no_host_pid Violation (hostPID)"),
    ("host_pid", "create_vanilla_nginx_deployment", ""),
    ("host_ipc", "host_ipc", "PSP no_host_ipc Violation (hostIPC)"),
    ("host_ipc", "create_vanilla_nginx_deployment", ""),
    ("host_network", "host_network", "PSP no_host_network Violation (hostNetwork)"),
    ("host_network", "create_vanilla_nginx_deployment", ""),
    ("host_network_ports", "host_network_ports", "PSP host_ports_100_200_only Violation (hostPorts)"),
    ("host_network_ports", "create_vanilla_nginx_deployment", ""),
    ("volumes", "mount_etc_using_host_path", "PSP only_secret_volumes Violation (volumes)"),
    ("volumes", "create_vanilla_nginx_deployment", ""),
    ("allowed_host_paths", "mount_etc_using_host_path", "PSP only_mount_host_usr Violation (allowedHostPaths)"),
    ("allowed_host_paths", "create_vanilla_nginx_deployment", ""),
    ("flex_volumes", "flex_volumes", "PSP only_lvm_cifs_flex_volumes Violation (allowedFlexVolumes)"),
    ("flex_volumes", "create_vanilla_nginx_deployment", ""),
    ("fs_group_must_run_as", "create_vanilla_nginx_deployment", "PSP fs_group_must_run_as_30 Violation (fsGroup)"),
    ("fs_group_must_run_as", "fs_group", "PSP fs_group_must_run_as_30 Violation (fsGroup)"),
    ("fs_group_may_run_as", "fs_group", "PSP fs_group_may_run_as_30 Violation (fsGroup)"),
    ("fs_group_may_run_as", "create_vanilla_nginx_deployment", ""),
    ("fs_group_run_as_any", "fs_group", ""),
    ("fs_group_run_as_any", "create_vanilla_nginx_deployment", ""),
    ("read_only_root_fs", "create_vanilla_nginx_deployment",
     "PSP read_only_root_fs Violation (readOnlyRootFilesystem) K8s Audit"),
    ("read_only_root_fs", "read_only_root_fs", ""),
    ("user_must_run_as", "create_vanilla_nginx_deployment",
     "PSP user_must_run_as_30 Violation (runAsUser=MustRunAs) K8s Audit"),
    ("user_must_run_as", "run_as_user_1000_container", "PSP user_must_run_as_30 Violation (runAsUser=MustRunAs) K8s Audit"),
    ("user_must_run_as", "run_as_user_30_container", ""),
    ("user_must_run_as", "run_as_user_1000_sec_ctx", "PSP user_must_run_as_30 Violation (runAsUser=MustRunAs) K8s Audit"),
    ("user_must_run_as", "run_as_user_30_sec_ctx", ""),
    ("user_must_run_as", "run_as_user_30_sec_ctx_1000_container",
     "PSP user_must_run_as_30 Violation (runAsUser=MustRunAs) K8s Audit"),
    ("user_must_run_as", "run_as_user_1000_sec_ctx_30_container", ""),
    ("user_must_run_as_non_root", "run_as_user_0_container",
     "PSP user_must_run_as_non_root Violation (runAsUser=MustRunAsNonRoot) K8s Audit"),
    ("user_must_run_as_non_root", "run_as_user_1000_container", ""),
    ("user_must_run_as_non_root", "run_as_user_0_sec_ctx",
     "PSP user_must_run_as_non_root Violation (runAsUser=MustRunAsNonRoot) K8s Audit"),
    ("user_must_run_as_non_root", "run_as_user_1000_sec_ctx", ""),
    ("user_must_run_as_non_root", "run_as_user_1000_sec_ctx_0_container",
     "PSP user_must_run_as_non_root Violation (runAsUser=MustRunAsNonRoot) K8s Audit"),
    ("user_must_run_as_non_root", "run_as_user_0_sec_ctx_1000_container", ""),
    ("group_must_run_as", "create_vanilla_nginx_deployment",
     "PSP group_must_run_as_30 Violation (runAsGroup=MustRunAs) K8s Audit"),
    ("group_must_run_as", "run_as_group_1000_container",
     "PSP group_must_run_as_30 Violation (runAsGroup=MustRunAs) K8s Audit"),
    ("group_must_run_as", "run_as_group_30_container", ""),
    ("group_must_run_as", "run_as_group_1000_sec_ctx", "PSP group_must_run_as_30 Violation (runAsGroup=MustRunAs) K8s Audit"),
    ("group_must_run_as", "run_as_group_30_sec_ctx", ""),
    ("group_must_run_as", "run_as_group_30_sec_ctx_1000_container",
     "PSP group_must_run_as_30 Violation (runAsGroup=MustRunAs) K8s Audit"),
    ("group_must_run_as", "run_as_group_1000_sec_ctx_30_container", ""),
    ("group_may_run_as", "create_vanilla_nginx_deployment", ""),
    ("group_may_run_as", "run_as_group_1000_container", "PSP group_may_run_as_30 Violation (runAsGroup=MayRunAs)"),
    ("group_may_run_as", "run_as_group_30_container", ""),
    ("group_may_run_as", "run_as_group_1000_sec_ctx", "PSP group_may_run_as_30 Violation (runAsGroup=MayRunAs)"),
    ("group_may_run_as", "run_as_group_30_sec_ctx", ""),
    ("group_may_run_as", "run_as_group_30_sec_ctx_1000_container",
     "PSP group_may_run_as_30 Violation (runAsGroup=MayRunAs)"),
    ("group_may_run_as", "run_as_group_1000_sec_ctx_30_container", ""),
    ("supplemental_groups_must_run_as_30_40", "create_vanilla_nginx_deployment",
     "PSP supplemental_groups_must_run_as_30 Violation (supplementalGroups=MustRunAs)"),
    ("supplemental_groups_must_run_as_30_40", "supplemental_groups_10_20",
     "PSP supplemental_groups_must_run_as_30 Violation (supplementalGroups=MustRunAs)"),
    ("supplemental_groups_must_run_as_30_40_10_15", "supplemental_groups_10_20",
     "PSP supplemental_groups_must_run_as_30_10 Violation (supplementalGroups=MustRunAs)"),
    ("supplemental_groups_must_run_as_10_20", "supplemental_groups_10_20", ""),
    ("supplemental_groups_must_run_as_10_40_10_20", "supplemental_groups_10_20", ""),
    ("supplemental_groups_may_run_as_30_40", "create_vanilla_nginx_deployment", ""),
    ("supplemental_groups_may_run_as_30_40", "supplemental_groups_10_20",
     "PSP supplemental_groups_may_run_as_30 Violation (supplementalGroups=MayRunAs)"),
    ("supplemental_groups_may_run_as_30_40_10_15", "supplemental_groups_10_20",
     "PSP supplemental_groups_may_run_as_30_10 Violation (supplementalGroups=MayRunAs)"),
    ("supplemental_groups_may_run_as_10_20", "supplemental_groups_10_20", ""),
    ("supplemental_groups_may_run_as_10_40_10_20", "supplemental_groups_10_20", ""),
    ("privilege_escalation", "privilege_escalation", "PSP no_privilege_escalation Violation (allowPrivilegeEscalation)"),
    ("privilege_escalation", "create_vanilla_nginx_deployment", ""),
    ("allowed_capabilities", "capability_add_sys_time", "PSP allow_capability_sys_nice Violation (allowedCapabilities)"),
    ("allowed_capabilities", "create_vanilla_nginx_deployment", ""),
    ("allowed_capabilities", "capability_add_sys_nice", ""),
    ("allowed_proc_mount_types", "proc_mount_type_unmasked",
     "PSP allow_default_proc_mount_type Violation (allowedProcMountTypes)"),
    ("allowed_proc_mount_types", "create_vanilla_nginx_deployment", ""),
    ("allowed_proc_mount_types", "proc_mount_type_default", ""),
]


def generated(psp: str) -> Engine:
    doc = convert_psp(yaml.safe_load((psp_dir() / "psps" / f"{psp}.yaml").read_text()))
    engine = Engine.from_texts([(f"{psp}.rules.yaml", doc.text())], resolvers=RESOLVERS, rule_matching="all")
    assert engine.load_result.warnings == [], engine.load_result.format()
    return engine


@pytest.mark.parametrize(("psp", "trace", "rule"), CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_only_the_violating_pod_alerts(psp: str, trace: str, rule: str) -> None:
    engine = generated(psp)
    got = Counter(a.rule for ev in read_events(psp_dir() / "events" / f"{trace}.json") for a in engine.process(ev))
    assert got == (Counter({rule: 1}) if rule else Counter())


def _container_event(etype: str, *, uid: int = 1000, gid: int = 1000, vpid: int = 7, privileged: bool = False,
                     image: str = "nginx", fd: Fd | None = None, args: dict[str, object] | None = None) -> Event:  # fmt: skip
    proc = Process(pid=4242, vpid=vpid, name="sh", exe="sh", exepath="/bin/sh", user=User(uid), group=Group(gid),
                   container_id="abcdef012345")  # fmt: skip
    container = Container(id="abcdef012345", image="nginx:1.25", image_repository=image, privileged=privileged)
    return Event(num=1, ts=1, type=etype, tid=4242, res=3 if fd else 0, proc=proc, fd=fd, args=args or {},
                 container=container)  # fmt: skip


WRITE = Fd(num=3, type="file", name="/tmp/x", flags=1)


@pytest.mark.parametrize(
    ("psp", "event", "rule"),
    [
        ("privileged", _container_event("execve", vpid=1, privileged=True),
         "PSP no_privileged Violation (privileged) System Activity"),
        ("privileged", _container_event("execve", vpid=1), ""),
        ("privileged", _container_event("execve", vpid=1, privileged=True, image="apache"), ""),  # images annotation
        ("privileged_name_with_dashes", _container_event("execve", vpid=1, privileged=True),
         "PSP no_privileged Violation (privileged) System Activity"),
        ("privileged_name_with_spaces", _container_event("execve", vpid=1, privileged=True),
         "PSP no_privileged Violation (privileged) System Activity"),
        ("read_only_root_fs", _container_event("openat", fd=WRITE, args={"flags": 1, "fd": 3}),
         "PSP read_only_root_fs Violation (readOnlyRootFilesystem) System Activity"),
        ("read_only_root_fs", _container_event("openat", fd=Fd(num=3, type="file", name="/etc/x", flags=0),
                                               args={"flags": 0, "fd": 3}), ""),  # fmt: skip
        ("user_must_run_as", _container_event("execve", uid=65534),
         "PSP user_must_run_as_30 Violation (runAsUser=MustRunAs) System Activity"),
        ("user_must_run_as", _container_event("execve", uid=35), ""),
        ("user_must_run_as_non_root", _container_event("execve", uid=0),
         "PSP user_must_run_as_non_root Violation (runAsUser=MustRunAsNonRoot) System Activity"),
        ("user_must_run_as_non_root", _container_event("execve", uid=1000), ""),
        ("group_must_run_as", _container_event("execve", gid=65534),
         "PSP group_must_run_as_30 Violation (runAsGroup=MustRunAs) System Activity"),
        ("group_must_run_as", _container_event("execve", gid=30), ""),
    ],
)
def test_system_activity_rules_on_container_processes(psp: str, event: Event, rule: str) -> None:
    got = [a.rule for a in generated(psp).process(event)]
    assert got == ([rule] if rule else [])


def test_a_host_process_never_matches_the_syscall_rules() -> None:
    event = _container_event("execve", uid=0, vpid=1, privileged=True)
    event.container = Container()  # the host
    for psp in ("privileged", "user_must_run_as_non_root"):
        assert generated(psp).process(event) == []


def test_unsupported_fields_are_named_and_bad_documents_refused() -> None:
    doc = convert_psp({
        "apiVersion": "policy/v1beta1", "kind": "PodSecurityPolicy", "metadata": {"name": "p"},
        "spec": {"seLinux": {"rule": "MustRunAs"}, "forbiddenSysctls": ["*"], "requiredDropCapabilities": ["NET_RAW"],
                 "volumes": ["*"], "frobnicate": 1},
    })  # fmt: skip
    assert sorted(w.split(":")[0] for w in doc.warnings) == ["spec.forbiddenSysctls", "spec.frobnicate", "spec.seLinux"]
    assert "PSP p Violation (requiredDropCapabilities)" in doc.rule_names
    assert "PSP p Violation (volumes)" not in doc.rule_names  # "*" allows every volume type
    for bad in ({"kind": "Pod"}, {"apiVersion": "v1", "kind": "PodSecurityPolicy"},
                {"apiVersion": "policy/v1beta1", "kind": "PodSecurityPolicy", "spec": {"hostPorts": [{"min": 9, "max": 1}]}},
                {"apiVersion": "policy/v1beta1", "kind": "PodSecurityPolicy", "spec": {"volumes": ['a"b']}}):  # fmt: skip
        with pytest.raises(PspError):
            convert_psp(bad)


def test_required_drop_capabilities() -> None:
    doc = convert_psp({"apiVersion": "policy/v1beta1", "kind": "PodSecurityPolicy", "metadata": {"name": "drop"},
                       "spec": {"privileged": True, "hostPID": True, "hostIPC": True, "hostNetwork": True,
                                "requiredDropCapabilities": ["NET_RAW"]}})  # fmt: skip
    engine = Engine.from_texts([("d.yaml", doc.text())], resolvers=RESOLVERS)
    from audit_support import pod_event

    drops = {"containers": [{"name": "a", "image": "x", "securityContext": {"capabilities": {"drop": ["NET_RAW"]}}},
                            {"name": "b", "image": "y", "securityContext": {"capabilities": {"drop": ["ALL"]}}}]}  # fmt: skip
    keeps = {"containers": [{"name": "a", "image": "x", "securityContext": {"capabilities": {"drop": ["NET_RAW"]}}},
                            {"name": "b", "image": "y"}]}  # fmt: skip
    assert engine.process(pod_event(drops)) == []
    assert [a.rule for a in engine.process(pod_event(keeps))] == ["PSP drop Violation (requiredDropCapabilities)"]


def test_the_cli_writes_rules_that_validate(tmp_path: Path) -> None:
    out = tmp_path / "psp_rules.yaml"
    run = subprocess.run(
        [sys.executable, "-m", "falconet.server.cli", "rules", "from-psp", str(psp_dir() / "psps" / "privileged.yaml"),
         "-o", str(out)], capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    check = subprocess.run([sys.executable, "-m", "falconet.server.cli", "rules", "validate", str(out)],
                           capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    text = out.read_text()
    assert "- list: no_privileged_psp_images" in text and "- macro: no_privileged_psp_ka_container" in text
    bad = subprocess.run(
        [sys.executable, "-m", "falconet.server.cli", "rules", "from-psp", str(psp_dir() / "events" / "privileged.json")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert bad.returncode == 2 and "not a PodSecurityPolicy" in bad.stderr


def _pod(**spec: object) -> dict[str, object]:
    return {"containers": [{"name": "nginx", "image": "nginx", **spec.pop("container", {})}], **spec}  # type: ignore[dict-item]


# Conforming pods that use the field (the samples' conforming pod is a plain one), next to a violating one.
USING = [
    ("host_network_ports", _pod(hostNetwork=True, container={"ports": [{"containerPort": 150}]}), ""),
    ("host_network_ports", _pod(hostNetwork=True, container={"ports": [{"containerPort": 80}]}),
     "PSP host_ports_100_200_only Violation (hostPorts)"),
    ("host_network_ports", _pod(container={"ports": [{"containerPort": 80, "hostPort": 150}]}), ""),
    ("host_network_ports", _pod(container={"ports": [{"containerPort": 80, "hostPort": 8080}]}),
     "PSP host_ports_100_200_only Violation (hostPorts)"),
    ("host_network_ports", _pod(container={"ports": [{"containerPort": 80}]}), ""),  # no host port at all
    ("allowed_host_paths", _pod(volumes=[{"name": "v", "hostPath": {"path": "/usr/share/zoneinfo"}}]), ""),
    ("allowed_host_paths", _pod(volumes=[{"name": "v", "hostPath": {"path": "/usrx"}}]),
     "PSP only_mount_host_usr Violation (allowedHostPaths)"),
    ("volumes", _pod(volumes=[{"name": "s", "secret": {"secretName": "x"}}]), ""),
    ("volumes", _pod(volumes=[{"name": "s", "emptyDir": {}}]), "PSP only_secret_volumes Violation (volumes)"),
    ("flex_volumes", _pod(volumes=[{"name": "f", "flexVolume": {"driver": "example/lvm"}}]), ""),
    ("fs_group_must_run_as", _pod(securityContext={"fsGroup": 35}), ""),
    ("privilege_escalation", _pod(container={"securityContext": {"allowPrivilegeEscalation": False}}), ""),
    ("read_only_root_fs", _pod(container={"securityContext": {"readOnlyRootFilesystem": True}}), ""),
]


@pytest.mark.parametrize(("psp", "spec", "rule"), USING, ids=[f"{c[0]}-{i}" for i, c in enumerate(USING)])
def test_pods_that_use_the_field(psp: str, spec: dict[str, object], rule: str) -> None:
    from audit_support import pod_event

    spec = {"volumes": [], **spec}
    got = [a.rule for a in generated(psp).process(pod_event(spec))]
    assert got == ([rule] if rule else [])
