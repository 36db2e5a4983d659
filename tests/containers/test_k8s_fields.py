"""The k8s.* fields read the pod identity the containerd client fills (sandbox id truncated as Falco does)."""

from __future__ import annotations

from falconet.model.event import Container, Event, Process
from falconet.rules.fields import resolve

SANDBOX = "cbfc1928b62cf9a14c0d9ed16917bb0dba3063052d65e24c78f961ea3899b4d4"


def test_pod_sandbox_and_ip_fields() -> None:
    c = Container(id="1729afd5da41", full_id="1729afd5da41" + "0" * 52, k8s_ns_name="team-a", k8s_pod_name="web-1",
                  k8s_pod_uid="e1874ae9-1515-40bf-acfe-663ad9e6698d", k8s_pod_sandbox_id=SANDBOX,
                  k8s_pod_ip="192.0.2.30", k8s_pod_labels={"app": "web", "tier": "front"})
    e = Event(num=1, ts=1, type="execve", tid=5, res=0, proc=Process(pid=5), container=c)
    got = {f: resolve(f).extract(e) for f in ("k8s.pod.sandbox_id", "k8s.pod.full_sandbox_id", "k8s.pod.ip",
                                              "k8s.ns.name", "k8s.pod.name", "k8s.pod.uid", "k8s.pod.labels")}
    assert got == {"k8s.pod.sandbox_id": SANDBOX[:12], "k8s.pod.full_sandbox_id": SANDBOX,
                   "k8s.pod.ip": "192.0.2.30", "k8s.ns.name": "team-a", "k8s.pod.name": "web-1",
                   "k8s.pod.uid": "e1874ae9-1515-40bf-acfe-663ad9e6698d", "k8s.pod.labels": "app:web, tier:front"}
    host = Event(num=2, ts=1, type="execve", tid=6, res=0, proc=Process(pid=6))
    assert {resolve(f).extract(host) for f in ("k8s.pod.sandbox_id", "k8s.pod.full_sandbox_id", "k8s.pod.ip")} == {None}
