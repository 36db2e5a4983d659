"""containerd_meta without a runtime: privileged as the OCI spec grants it, hostile record contents, and a
CRI record whose extension is missing or garbage (older plugins, other writers) falling back to the spec."""

from __future__ import annotations

from falconet.sensor.containers.containerd_meta import (
    CRI_CONTAINER_EXT,
    ImageInfo,
    Record,
    _host_caps,
    spec_privileged,
    to_container,
)

ALL_DEVICES = [{"allow": False, "access": "rwm"}, {"allow": True, "access": "rwm"}]


def spec(caps: list[str], devices: list[dict[str, object]]) -> dict[str, object]:
    return {"process": {"capabilities": {"bounding": caps}}, "linux": {"resources": {"devices": devices}}}


def test_privileged_needs_every_host_capability_and_every_device() -> None:
    caps = sorted(_host_caps())
    assert spec_privileged(spec(caps, ALL_DEVICES)) is True
    assert spec_privileged(spec(caps[1:], ALL_DEVICES)) is False  # one capability short
    assert spec_privileged(spec(caps, ALL_DEVICES[:1])) is False  # devices denied
    # The last matching rule wins: a deny-all after the allow-all takes it back.
    assert spec_privileged(spec(caps, [*ALL_DEVICES, {"allow": False, "access": "rwm"}])) is False
    assert spec_privileged(spec(caps, [{"allow": True, "type": "c", "major": 1, "access": "rwm"}])) is False
    assert spec_privileged({}) is False


def test_hostile_strings_are_cleaned_and_long_labels_dropped() -> None:
    rec = Record(
        id="ab" * 32, namespace="default", image="evil/\x1b[31mimage:1\x07", spec={},
        labels={"nerdctl/name": "name\nwith\rcontrols", "ok": "v", "long": "x" * 500}, created_ns=5,
    )
    c = to_container(rec, ImageInfo(digest="sha256:" + "0" * 64, config_digest="sha256:" + "1" * 64), None)
    assert c.name == "name?with?controls"
    assert c.image == "evil/?[31mimage:1?" and c.image_repository == "evil/?[31mimage" and c.image_tag == "1?"
    assert "long" not in c.labels and c.labels["ok"] == "v"
    assert (c.image_id, c.image_digest) == ("1" * 64, "sha256:" + "0" * 64)
    assert (c.k8s_ns_name, c.k8s_pod_name, c.k8s_pod_sandbox_id) == (None, None, None)


def test_cri_record_with_a_garbage_extension_falls_back_to_annotations() -> None:
    ann = {"io.kubernetes.cri.container-type": "container", "io.kubernetes.cri.container-name": "app",
           "io.kubernetes.cri.sandbox-id": "cd" * 32, "io.kubernetes.cri.sandbox-name": "web-0",
           "io.kubernetes.cri.sandbox-namespace": "prod", "io.kubernetes.cri.sandbox-uid": "u-1",
           "io.kubernetes.cri.image-name": "registry.example:5000/team/app@sha256:" + "2" * 64}
    rec = Record(id="ef" * 32, namespace="k8s.io", image="", spec={"annotations": ann, "linux": {"namespaces": [{"type": "network"}, {"type": "pid"}]}}, labels={},
                 created_ns=None, extensions={CRI_CONTAINER_EXT: {"Metadata": "not an object"}})
    c = to_container(rec, None, None)
    assert (c.name, c.k8s_ns_name, c.k8s_pod_name, c.k8s_pod_uid) == ("app", "prod", "web-0", "u-1")
    assert c.k8s_pod_sandbox_id == "cd" * 32 and c.k8s_pod_labels == {}
    assert (c.image_repository, c.image_tag, c.image_digest) == ("registry.example:5000/team/app", None,
                                                                "sha256:" + "2" * 64)
    # Without the CRI's request, privileges and namespaces come from the OCI spec (no ipc entry: the host's).
    assert (c.privileged, c.host_network, c.host_pid, c.host_ipc) == (False, False, False, True)
