"""The ka.*/jevt.* fields and Falco's comparisons over them, on hand-built audit events (no shared data needed)."""

from __future__ import annotations

import pytest
from audit_support import RESOLVERS, pod_event

from falconet.model.audit import AuditDecodeError, AuditEvent, JsonValue, decode_audit_object
from falconet.model.event import Event, Process
from falconet.rules.engine import Engine
from falconet.rules.errors import RulesLoadError



def _rule(cond: str, source: str = "k8s_audit", output: str = "o") -> str:
    return f"- rule: r\n  desc: d\n  output: {output}\n  priority: INFO\n  source: {source}\n  condition: {cond}\n"


def _hits(cond: str, event: AuditEvent) -> bool:
    engine = Engine.from_texts([("t.yaml", _rule(cond))], resolvers=RESOLVERS)
    return bool(engine.process(event))


PRIV_2ND = {"containers": [{"name": "a", "image": "nginx"},
                           {"name": "b", "image": "quay.io/x/y@sha256:ab", "securityContext": {"privileged": True}}]}  # fmt: skip
PORTS = {"hostNetwork": True, "containers": [{"name": "a", "image": "nginx",
                                              "ports": [{"containerPort": 80}, {"containerPort": 150, "hostPort": 150}]}]}  # fmt: skip
VOLS = {"volumes": [{"name": "v1", "hostPath": {"path": "/usr/share"}}, {"name": "v2", "secret": {"secretName": "s"}}]}


@pytest.mark.parametrize(
    ("cond", "spec", "expected"),
    [
        # plain single values; = is set equality; != on a missing value compares with <NA> (Falco 0.25)
        ("ka.verb = create", None, True),
        ("ka.verb in (create, update)", None, True),
        ("ka.target.subresource exists", None, False),
        ("not ka.target.subresource exists", None, True),
        ("ka.target.subresource = \"<NA>\"", None, True),
        ("ka.target.namespace != kube-system", None, True),
        ("ka.user.name startswith ali", None, True),
        ("ka.uri contains namespaces/default", None, True),
        ("ka.response.code >= 200 and ka.response.code < 300", None, True),
        ("ka.response.code startswith 2", None, True),
        # list fields: in = every value, intersects = some value
        ("ka.user.groups intersects (dev)", None, True),
        ("ka.user.groups in (dev)", None, False),
        ("ka.user.groups in (dev, system:authenticated)", None, True),
        ("ka.req.pod.containers.privileged intersects (true)", PRIV_2ND, True),  # a 2nd privileged container
        ("ka.req.pod.containers.privileged in (true)", PRIV_2ND, False),  # the 1st has no flag: <NA>
        ("ka.req.pod.containers.privileged[1] = true", PRIV_2ND, True),
        ("ka.req.pod.containers.privileged[0] = true", PRIV_2ND, False),
        ("ka.req.pod.containers.privileged[7] exists", PRIV_2ND, False),
        ("ka.req.container.privileged = true", PRIV_2ND, True),
        ("ka.req.pod.containers.image.repository in (nginx, x/y)", PRIV_2ND, True),
        ("ka.req.pod.containers.image.repository = library/nginx", None, True),
        ("ka.req.container.image = docker.io/library/nginx:1.25", None, True),
        # integers compare with LO:HI ranges (PSP host ports, uid ranges)
        ("ka.req.pod.containers.host_port in (80:80, 100:200)", PORTS, True),
        ("ka.req.pod.containers.host_port in (100:200)", PORTS, False),
        ("ka.req.pod.containers.eff_run_as_user intersects (\"0:0\")", None, True),
        ("ka.req.pod.containers.eff_run_as_user in (1000:2000)",
         {"securityContext": {"runAsUser": 1500}}, True),  # fmt: skip
        ("ka.req.pod.host_network intersects (true)", PORTS, True),
        # pmatch: every host path at or below an allowed prefix, <NA> ignored
        ("ka.req.pod.volumes.hostpath pmatch (/usr)", VOLS, True),
        ("ka.req.pod.volumes.hostpath pmatch (/us)", VOLS, False),
        ("ka.req.pod.volumes.hostpath pmatch (/etc, \"<NA>\")", VOLS, False),
        ("ka.req.pod.volumes.volume_type in (hostPath, secret)", VOLS, True),
        ("ka.req.volume.hostpath[/usr*] = true", VOLS, True),
        # jevt.*
        ("jevt.value[/stage] = ResponseComplete", None, True),
        ("jevt.value[/requestObject/spec/containers/0/name] = web", None, True),
        ("jevt.value[/user/groups] = '[\"dev\",\"system:authenticated\"]'", None, True),
        ("jevt.rawtime exists", None, True),
        ("jevt.rawtime = 1714557600123456000", None, True),
        ("jevt.obj contains alice", None, True),
    ],
)
def test_field_semantics(cond: str, spec: dict[str, object] | None, expected: bool) -> None:
    assert _hits(cond, pod_event(spec)) is expected


def test_uri_query_parameters_are_decoded() -> None:
    ev = pod_event(requestURI="/api/v1/namespaces/d/pods/p/exec?command=sh&command=-c&container=web%20x")
    assert _hits("ka.uri.param[container] = \"web x\"", ev)
    assert _hits("ka.uri.param[command] = sh", ev)
    assert not _hits("ka.uri.param[stdin] exists", ev)


def test_outputs_print_lists_as_falco_025_did() -> None:
    engine = Engine.from_texts(
        [("t.yaml", _rule("ka.verb=create", output="imgs=%ka.req.pod.containers.image sub=%ka.target.subresource"))],
        resolvers=RESOLVERS,
    )
    (alert,) = engine.process(pod_event(PRIV_2ND))
    assert alert.output == "imgs=(nginx,quay.io/x/y@sha256:ab) sub=<NA>"
    assert alert.source == "k8s_audit" and alert.time_ns == 1714557600123456000
    assert alert.output_fields["ka.target.subresource"] is None


def test_fields_belong_to_their_source() -> None:
    with pytest.raises(RulesLoadError, match="not a field of source k8s_audit"):
        Engine.from_texts([("t.yaml", _rule("proc.name = bash"))], resolvers=RESOLVERS)
    with pytest.raises(RulesLoadError, match="not a field of source syscall"):
        Engine.from_texts([("t.yaml", _rule("ka.verb = create", source="syscall"))], resolvers=RESOLVERS)


def test_a_macro_shared_by_both_sources_compiles_for_each() -> None:
    text = "- macro: never\n  condition: evt.num = 0\n" + _rule("never or ka.verb = create").replace(
        "- rule: r", "- rule: audit"
    ) + _rule("evt.type = execve and (never or proc.name = bash)", source="syscall").replace("- rule: r", "- rule: sys")  # fmt: skip
    engine = Engine.from_texts([("t.yaml", text)], resolvers=RESOLVERS, rule_matching="all")
    assert [a.rule for a in engine.process(pod_event())] == ["audit"]
    sys_event = Event(num=1, ts=1, type="execve", tid=1, res=0, proc=Process(pid=1, name="bash"))
    assert [a.rule for a in engine.process(sys_event)] == ["sys"]
    assert engine.event_types == frozenset({"execve"})  # k8s_audit rules ask the sensor for no syscall


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ({"kind": "Pod"}, "not an audit Event"),
        ({"kind": "Event", "apiVersion": "v1"}, "not an audit API version"),
        ({"kind": "Event"}, "no stageTimestamp"),
        ({"kind": "Event", "stageTimestamp": "yesterday"}, "not an RFC 3339 time"),
        ({"kind": "EventList", "items": {"a": 1}}, "must be a list"),
        ({"kind": "EventList", "items": [{"kind": "Pod"}]}, "expected Event"),
        ([1], "got a number"),
    ],
)
def test_malformed_audit_objects_are_refused_with_a_reason(obj: object, message: str) -> None:
    with pytest.raises(AuditDecodeError, match=message):
        decode_audit_object(obj)  # type: ignore[arg-type]


def test_an_event_list_splits_into_events() -> None:
    item: JsonValue = {"auditID": "x", "verb": "get", "stageTimestamp": "2024-05-01T10:00:00Z"}
    events = decode_audit_object({"kind": "EventList", "apiVersion": "audit.k8s.io/v1beta1", "items": [item] * 3})
    assert [e.num for e in events] == [0, 1, 2] and all(e.data["kind"] == "Event" for e in events)
    with pytest.raises(AuditDecodeError, match="more than 2"):
        decode_audit_object({"kind": "EventList", "items": [item] * 3}, max_events=2)
