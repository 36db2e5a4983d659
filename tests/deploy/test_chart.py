"""deploy/helm/falconet, rendered by the pinned helm: `helm lint --strict` and `helm template` over the matrix of
values (NATS deployed or referenced, certificates by Job or cert-manager, ServiceMonitor on or off, aggregator
on or off); every core object decoded strictly into the pinned Kubernetes API types (tests/deploy/k8sdecode),
so a misspelt field fails here; and what the values must do to the objects (what the eBPF sensor needs, the
5060 Service, the NATS cluster, where the certificates come from)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy_support import NAMESPACE, Rendered, decode, lint, render, template_text
from falconet.server.daemon_config import PACKAGED_CONFIG, parse_config
from falconet.server.overrides import parse_override

pytestmark = pytest.mark.helm

FULL = "fleet-falconet"
REFERENCE_SERVERS = ["tls://nats-a.example.internal:4222", "tls://nats-b.example.internal:4222"]
REFERENCE = {"servers": REFERENCE_SERVERS, "tls": True,
             "auth": {"secretName": "nats-creds", "type": "credentials", "file": "node.creds"}}


def values(nats: str = "deploy", certs: str = "job", monitor: bool = False, aggregator: bool = True) -> dict[str, Any]:
    v: dict[str, Any] = {"nats": {"mode": nats}, "certs": {"mode": certs}, "serviceMonitor": {"enabled": monitor},
                         "aggregator": {"enabled": aggregator}}
    if nats == "reference":
        v["nats"]["reference"] = REFERENCE
    return v


MATRIX = list(itertools.product(["deploy", "reference"], ["job", "certManager"], [False, True], [True, False]))


@pytest.mark.parametrize(("nats", "certs", "monitor", "aggregator"), MATRIX,
                         ids=[f"nats-{n}-certs-{c}-monitor-{m}-aggregator-{a}" for n, c, m, a in MATRIX])
def test_every_combination_lints_renders_and_decodes_strictly(
    tmp_path: Path, nats: str, certs: str, monitor: bool, aggregator: bool
) -> None:
    v = values(nats, certs, monitor, aggregator)
    linted = lint(tmp_path, v)
    assert linted.returncode == 0, linted.stdout + linted.stderr
    r = render(tmp_path, v)
    decoded = decode(r.text)
    assert decoded.returncode == 0, decoded.stderr
    lines = decoded.stdout.splitlines()
    assert len(lines) == len(r.objects)
    crds = [o for o in r.objects if o["apiVersion"].startswith(("cert-manager.io/", "monitoring.coreos.com/"))]
    assert sum(line.startswith("skip ") for line in lines) == len(crds)
    assert all(line.startswith(("ok ", "skip ")) for line in lines)
    kinds = {(o["kind"], o["metadata"]["name"]) for o in r.objects}
    assert ("DaemonSet", f"{FULL}-node") in kinds
    assert (("Deployment", f"{FULL}-aggregator") in kinds) == aggregator
    assert (("Service", f"{FULL}-aggregator") in kinds) == aggregator
    assert (("StatefulSet", f"{FULL}-nats") in kinds) == (nats == "deploy")
    assert (("Job", f"{FULL}-certs") in kinds) == (certs == "job")
    assert any(k == "Certificate" for k, _ in kinds) == (certs == "certManager")
    assert (("ServiceMonitor", f"{FULL}-node") in kinds) == monitor
    assert (("ServiceMonitor", f"{FULL}-aggregator") in kinds) == (monitor and aggregator)
    assert all(o["metadata"].get("namespace", NAMESPACE) == NAMESPACE for o in r.objects)


def pod_spec(r: Rendered, kind: str, name: str) -> dict[str, Any]:
    spec: dict[str, Any] = r.one(kind, name)["spec"]["template"]["spec"]
    return spec


def mounts(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["mountPath"]: m for m in container["volumeMounts"]}


def test_the_node_daemonset_has_what_the_ebpf_sensor_needs(tmp_path: Path) -> None:
    r = render(tmp_path, values())
    spec = pod_spec(r, "DaemonSet", f"{FULL}-node")
    assert spec["hostPID"] is True
    (c,) = spec["containers"]
    assert c["securityContext"]["privileged"] is True
    m = mounts(c)
    volumes = {v["name"]: v for v in spec["volumes"]}
    for path, host, ro in [("/lib/modules", "/lib/modules", True), ("/usr/src", "/usr/src", True),
                           ("/sys/kernel/btf", "/sys/kernel/btf", True), ("/sys/kernel/tracing", "/sys/kernel/tracing", False),
                           ("/sys/kernel/debug", "/sys/kernel/debug", False), ("/run/containerd", "/run/containerd", True),
                           ("/var/lib/falconet", "/var/lib/falconet", False)]:
        assert path in m, f"{path} is not mounted"
        assert m[path].get("readOnly", False) is ro, path
        assert volumes[m[path]["name"]]["hostPath"]["path"] == host
    env = {e["name"]: e for e in c["env"]}
    assert env["FALCO_HOSTNAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"grpc": 5060, "metrics": 9376}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert {"operator": "Exists"} in spec["tolerations"]


def test_without_privileged_the_node_gets_the_bpf_capabilities_only(tmp_path: Path) -> None:
    r = render(tmp_path, {"node": {"privileged": False}})
    (c,) = pod_spec(r, "DaemonSet", f"{FULL}-node")["containers"]
    sc = c["securityContext"]
    assert sc["privileged"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert {"BPF", "PERFMON"} <= set(sc["capabilities"]["add"])


def node_overrides(r: Rendered) -> list[str]:
    (c,) = pod_spec(r, "DaemonSet", f"{FULL}-node")["containers"]
    args: list[str] = c["args"]
    assert args[:3] == ["run", "-c", "/etc/falconet/falconet.yaml"]
    return [args[i + 1] for i, a in enumerate(args) if a == "-o"]


def test_the_nodes_o_overrides_are_read_by_the_daemons_own_config_reader(tmp_path: Path) -> None:
    r = render(tmp_path, values(nats="reference", certs="job"))
    opts = [parse_override(o) for o in node_overrides(r)]
    by_key = {o.key: o.value for o in opts}
    assert by_key["webserver.listen_address"] == "0.0.0.0"
    assert by_key["grpc.bind_address"] == ["unix:///run/falconet/falconet.sock", "0.0.0.0:5060"]
    nats = by_key["nats_output"]
    assert nats["servers"] == REFERENCE_SERVERS and nats["credentials"] == "/etc/falconet/nats/node.creds"
    assert nats["tls"] == {"ca": "/etc/falconet/client-tls/ca.crt", "cert": "/etc/falconet/client-tls/tls.crt",
                           "key": "/etc/falconet/client-tls/tls.key"}
    assert (nats["stream"], nats["subject_prefix"], nats["replicas"]) == ("FALCONET_ALERTS", "falconet.alerts", 3)
    # Through the daemon's reader, over the packaged file the image carries, with the files the pod mounts made
    # here (the NATS readers check that they exist).
    pod_root = tmp_path / "pod"
    for sub, names in {"client-tls": ("ca.crt", "tls.crt", "tls.key"), "nats": ("node.creds",)}.items():
        (pod_root / sub).mkdir(parents=True)
        for name in names:
            (pod_root / sub / name).write_text("made by the test\n")
    here = [parse_override(o.replace("/etc/falconet/", f"{pod_root}/")) for o in node_overrides(r)]
    config = parse_config(PACKAGED_CONFIG.read_text(), overrides=here)
    assert (config.metrics.listen_address, config.metrics.listen_port) == ("0.0.0.0", 9376)
    assert str(config.grpc.cert_chain) == f"{pod_root}/server-tls/tls.crt"
    assert config.fleet_rules is not None
    assert config.fleet_rules.bucket == "falconet_rules"
    assert config.fleet_rules.connection.servers == tuple(REFERENCE_SERVERS)
    assert config.fleet_rules.connection.credentials == pod_root / "nats/node.creds"
    out = config.nats_output
    assert out.enabled and out.connection.servers == tuple(REFERENCE_SERVERS)
    assert out.connection.tls is not None and out.connection.tls.cert == pod_root / "client-tls/tls.crt"
    assert (out.stream, out.subject_prefix, out.shape.replicas) == ("FALCONET_ALERTS", "falconet.alerts", 3)


def test_the_node_console_is_off_by_default_and_exposed_with_mtls_when_asked(tmp_path: Path) -> None:
    off = render(tmp_path, values())
    assert not [o for o in node_overrides(off) if o.startswith("web_console=")]
    (c,) = pod_spec(off, "DaemonSet", f"{FULL}-node")["containers"]
    assert "console" not in {p["name"] for p in c["ports"]}

    asked = {"node": {"console": {"enabled": True, "allowedCommonNames": ["ops-alice"]}}}
    linted = lint(tmp_path, asked)
    assert linted.returncode == 0, linted.stdout + linted.stderr
    on = render(tmp_path, asked)
    decoded = decode(on.text)
    assert decoded.returncode == 0, decoded.stderr
    (c,) = pod_spec(on, "DaemonSet", f"{FULL}-node")["containers"]
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"grpc": 5060, "metrics": 9376, "console": 9380}
    # Through the daemon's own reader: HTTPS with the node's server certificate, mutual TLS with the chart's CA.
    pod_root = tmp_path / "pod"  # the files the pod mounts, made here (the reader checks that they exist)
    (pod_root / "server-tls").mkdir(parents=True)
    for name in ("ca.crt", "tls.crt", "tls.key"):
        (pod_root / "server-tls" / name).write_text("made by the test\n")
    (opt,) = [parse_override(o.replace("/etc/falconet/", f"{pod_root}/")) for o in node_overrides(on)
              if o.startswith("web_console=")]
    config = parse_config(PACKAGED_CONFIG.read_text(), overrides=[opt]).web_console
    assert (config.enabled, config.listen_address, config.listen_port) == (True, "0.0.0.0", 9380)
    assert config.cert_chain == pod_root / "server-tls/tls.crt"
    assert config.client_ca == pod_root / "server-tls/ca.crt"
    assert config.allowed_common_names == frozenset({"ops-alice"})
    mounted = mounts(c)["/etc/falconet/server-tls"]
    assert mounted["readOnly"] is True

    with pytest.raises(AssertionError, match="node.console.allowedCommonNames must list"):
        template_text(tmp_path, {"node": {"console": {"enabled": True}}})


def test_user_config_keys_become_overrides_after_the_charts(tmp_path: Path) -> None:
    r = render(tmp_path, {"node": {"config": {"priority": "warning", "syscall_event_drops": {"actions": ["log"]}}}})
    opts = node_overrides(r)
    assert opts[-2:] == ["priority=\"warning\"", 'syscall_event_drops={"actions":["log"]}']
    config = parse_config(PACKAGED_CONFIG.read_text(), overrides=[parse_override(o) for o in opts[-2:]])
    assert config.syscall_event_drops.actions == ("log",)


def test_the_aggregator_is_served_on_5060_by_a_service_over_its_pods(tmp_path: Path) -> None:
    r = render(tmp_path, values())
    svc = r.one("Service", f"{FULL}-aggregator")
    (port,) = svc["spec"]["ports"]
    assert (port["port"], port["targetPort"], port["protocol"]) == (5060, "grpc", "TCP")
    deploy = r.one("Deployment", f"{FULL}-aggregator")
    pod_labels = deploy["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    assert deploy["spec"]["selector"]["matchLabels"] == svc["spec"]["selector"]
    node_labels = r.one("DaemonSet", f"{FULL}-node")["spec"]["template"]["metadata"]["labels"]
    assert not svc["spec"]["selector"].items() <= node_labels.items()  # the Service never reaches node pods
    (c,) = deploy["spec"]["template"]["spec"]["containers"]
    assert c["args"] == ["aggregate", "-c", "/etc/falconet/aggregate/aggregate.yaml"]
    assert {"name": "grpc", "containerPort": 5060, "protocol": "TCP"} in c["ports"]
    assert {"name": "metrics", "containerPort": 9377, "protocol": "TCP"} in c["ports"]
    for probe, url_path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"),
                            ("readinessProbe", "/readyz")):
        assert c[probe]["httpGet"] == {"path": url_path, "port": "metrics"}, probe
    block = yaml.safe_load(r.one("ConfigMap", f"{FULL}-aggregator")["data"]["aggregate.yaml"])["aggregate"]
    assert block["grpc"]["bind_address"] == ["unix:///run/falconet/aggregate.sock", "0.0.0.0:5060"]
    assert block["servers"] == [f"tls://{FULL}-nats.{NAMESPACE}.svc:4222"]
    assert block["stream"] == "FALCONET_ALERTS" and block["tls"]["cert"] == "/etc/falconet/client-tls/tls.crt"
    # The file as `falconet aggregate -c` reads it, with the files the pod mounts made here.
    from falconet.server.fleet.aggregate_config import load_aggregate

    pod_root = tmp_path / "pod"
    for sub in ("client-tls", "server-tls"):
        (pod_root / sub).mkdir(parents=True)
        for name in ("ca.crt", "tls.crt", "tls.key"):
            (pod_root / sub / name).write_text("made by the test\n")
    path = tmp_path / "aggregate.yaml"
    path.write_text(r.one("ConfigMap", f"{FULL}-aggregator")["data"]["aggregate.yaml"].replace(
        "/etc/falconet/", f"{pod_root}/"))
    cfg = load_aggregate(path)
    assert cfg.nats.servers == (f"tls://{FULL}-nats.{NAMESPACE}.svc:4222",)
    assert cfg.grpc.bind_address == ("unix:///run/falconet/aggregate.sock", "0.0.0.0:5060")
    assert cfg.grpc.cert_chain == pod_root / "server-tls/tls.crt" and cfg.silence_timeout == 30
    # The probes' port is where the aggregator's own reader says its endpoint listens.
    assert (cfg.metrics.enabled, cfg.metrics.listen_address, cfg.metrics.listen_port) == (True, "0.0.0.0", 9377)


def test_deployed_nats_is_a_jetstream_cluster_of_three_with_routes_to_each(tmp_path: Path) -> None:
    r = render(tmp_path, values(nats="deploy"))
    sts = r.one("StatefulSet", f"{FULL}-nats")
    assert sts["spec"]["replicas"] == 3 and sts["spec"]["serviceName"] == f"{FULL}-nats-headless"
    assert r.one("Service", f"{FULL}-nats-headless")["spec"]["clusterIP"] == "None"
    conf = r.one("ConfigMap", f"{FULL}-nats")["data"]["nats.conf"]
    assert "jetstream {" in conf and "verify: true" in conf
    routes = [line.strip() for line in conf.splitlines() if line.strip().startswith("nats://")]
    assert routes == [f"nats://{FULL}-nats-{i}.{FULL}-nats-headless.{NAMESPACE}.svc:6222" for i in range(3)]
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "10Gi"
    node_nats = json.loads(next(o for o in node_overrides(r) if o.startswith("nats_output="))[len("nats_output="):])
    assert node_nats["servers"] == [f"tls://{FULL}-nats.{NAMESPACE}.svc:4222"]


def test_referenced_nats_deploys_no_server_and_mounts_its_credentials(tmp_path: Path) -> None:
    r = render(tmp_path, values(nats="reference"))
    assert not r.find("StatefulSet") and not r.find("ConfigMap", f"{FULL}-nats")
    spec = pod_spec(r, "DaemonSet", f"{FULL}-node")
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["nats-auth"]["secret"]["secretName"] == "nats-creds"
    assert mounts(spec["containers"][0])["/etc/falconet/nats"]["readOnly"] is True


def test_referenced_nats_without_servers_is_refused_saying_so(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match="nats.reference.servers must list the existing cluster's URLs"):
        template_text(tmp_path, {"nats": {"mode": "reference"}})


def tls_secrets(r: Rendered) -> set[str]:
    names = set()
    for kind, name in [("DaemonSet", f"{FULL}-node"), ("Deployment", f"{FULL}-aggregator")]:
        for v in pod_spec(r, kind, name)["volumes"]:
            if "secret" in v and v["name"].endswith("-tls"):
                names.add(v["secret"]["secretName"])
    return names


def test_the_certificate_job_makes_the_secrets_the_pods_mount(tmp_path: Path) -> None:
    r = render(tmp_path, values(certs="job"))
    job = r.one("Job", f"{FULL}-certs")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    env = {e["name"]: e["value"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    made = json.loads(env["FALCONET_SECRETS"])
    assert tls_secrets(r) == {made["server"], made["client"]}
    sans = json.loads(env["FALCONET_SANS"])
    assert f"{FULL}-aggregator.{NAMESPACE}.svc" in sans and f"*.{FULL}-nats-headless.{NAMESPACE}.svc" in sans
    role = r.one("Role", f"{FULL}-certs")
    assert {v for rule in role["rules"] for v in rule["verbs"]} == {"create", "get"}
    assert all(rule["resources"] == ["secrets"] for rule in role["rules"])
    script = r.one("ConfigMap", f"{FULL}-certs")["data"]["certs-job.py"]
    assert script == (Path(__file__).resolve().parents[2] / "deploy/helm/falconet/files/certs-job.py").read_text()


def test_cert_manager_certificates_fill_the_secrets_the_pods_mount(tmp_path: Path) -> None:
    r = render(tmp_path, values(certs="certManager"))
    assert not r.find("Job")
    certs = {c["metadata"]["name"]: c["spec"] for c in r.find("Certificate")}
    assert tls_secrets(r) == {certs[f"{FULL}-server"]["secretName"], certs[f"{FULL}-client"]["secretName"]}
    assert certs[f"{FULL}-ca"]["isCA"] is True
    assert f"{FULL}-aggregator.{NAMESPACE}.svc" in certs[f"{FULL}-server"]["dnsNames"]
    assert "client auth" in certs[f"{FULL}-client"]["usages"]
    issuers = {i["metadata"]["name"]: i["spec"] for i in r.find("Issuer")}
    assert issuers[f"{FULL}-ca"] == {"ca": {"secretName": f"{FULL}-ca"}}
    # An existing issuer replaces the chart's own CA.
    r2 = render(tmp_path, {"certs": {"mode": "certManager",
                                     "certManager": {"issuerRef": {"name": "corp-ca", "kind": "ClusterIssuer"}}}})
    assert not r2.find("Issuer")
    assert {c["spec"]["issuerRef"]["name"] for c in r2.find("Certificate")} == {"corp-ca"}


def test_the_servicemonitor_scrapes_every_nodes_metrics_port(tmp_path: Path) -> None:
    r = render(tmp_path, values(monitor=True))
    sm = r.one("ServiceMonitor", f"{FULL}-node")
    assert sm["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "30s"}]
    svc = r.one("Service", f"{FULL}-node-metrics")
    assert svc["spec"]["ports"][0]["port"] == 9376 and svc["spec"]["ports"][0]["targetPort"] == "metrics"
    agg = r.one("ServiceMonitor", f"{FULL}-aggregator")
    assert agg["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "30s"}]
    agg_svc = r.one("Service", f"{FULL}-aggregator-metrics")
    assert agg_svc["spec"]["clusterIP"] == "None"
    assert agg_svc["spec"]["ports"][0]["port"] == 9377 and agg_svc["spec"]["ports"][0]["targetPort"] == "metrics"
    pods = r.one("Deployment", f"{FULL}-aggregator")["spec"]["template"]["metadata"]["labels"]
    assert agg_svc["spec"]["selector"].items() <= pods.items()
    assert agg["spec"]["selector"]["matchLabels"] == agg_svc["spec"]["selector"]
    node_labels = r.one("DaemonSet", f"{FULL}-node")["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= node_labels.items()
    assert sm["spec"]["selector"]["matchLabels"] == svc["spec"]["selector"]


@pytest.mark.parametrize(("edit", "says"), [
    (("hostPID: true", "hostPId: true"), 'unknown field "spec.template.spec.hostPId"'),
    (("readOnly: true", "readonly: true"), 'unknown field "spec.template.spec.containers[0].volumeMounts[0].readonly"'),
    (("replicas: 2", "replicas: two"), "Deployment fleet-falconet-aggregator: json: cannot unmarshal string into Go struct field DeploymentSpec.spec.replicas"),
    (("kind: DaemonSet", "kind: Daemonset"), "apps/v1 Daemonset is not a kind this decoder knows"),
])
def test_a_misspelt_manifest_fails_the_strict_decode(tmp_path: Path, edit: tuple[str, str], says: str) -> None:
    text = template_text(tmp_path, values())
    assert decode(text).returncode == 0
    old, new = edit
    assert old in text
    broken = decode(text.replace(old, new, 1))
    assert broken.returncode == 1
    assert says in broken.stderr, broken.stderr


def test_a_misspelt_value_fails_lint_by_the_schema(tmp_path: Path) -> None:
    done = lint(tmp_path, {"node": {"privilged": False}})
    assert done.returncode != 0
    assert "additional properties 'privilged' not allowed" in done.stdout + done.stderr


def test_custom_rules_are_mounted_as_rules_d_verbatim(tmp_path: Path) -> None:
    text = ("- rule: Chart rule\n  desc: from the chart\n  condition: evt.type = openat and fd.name = /etc/shadow\n"
            "  output: \"shadow %proc.name\"\n  priority: WARNING\n")
    r = render(tmp_path, {"node": {"customRules": {"site.yaml": text}}})
    assert r.one("ConfigMap", f"{FULL}-rules")["data"] == {"site.yaml": text}
    spec = pod_spec(r, "DaemonSet", f"{FULL}-node")
    assert mounts(spec["containers"][0])["/etc/falconet/rules.d"]["readOnly"] is True
    assert {"name": "rules-d", "configMap": {"name": f"{FULL}-rules"}} in spec["volumes"]
    # The file is one the engine loads (the image's config lists rules.d after the default rules).
    from falconet.rules.engine import Engine

    path = tmp_path / "site.yaml"
    path.write_text(r.one("ConfigMap", f"{FULL}-rules")["data"]["site.yaml"])
    assert [rule.name for rule in Engine.from_files([path]).enabled_rules] == ["Chart rule"]


def test_fleet_rules_are_watched_unless_turned_off(tmp_path: Path) -> None:
    on = [o for o in node_overrides(render(tmp_path, values())) if o.startswith("fleet_rules=")]
    (block,) = [json.loads(o[len("fleet_rules="):]) for o in on]
    assert block["bucket"] == "falconet_rules" and block["cache_dir"] == "/var/lib/falconet/fleet_rules"
    off = node_overrides(render(tmp_path, {"fleetRules": {"enabled": False}}))
    assert not [o for o in off if o.startswith("fleet_rules=")]
