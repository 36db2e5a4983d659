"""falco-client's text form names the container and pod an alert came from (the JSON form has them in
output_fields, docs/alert-json.md)."""

from __future__ import annotations

from falconet.model.alert import Alert, Priority
from falconet.sdk.cli import _render


def alert(fields: dict[str, object], output: str = "Packet socket was created in a container") -> Alert:
    return Alert(time_ns=1_700_000_000_000_000_000, rule="R", priority=Priority.NOTICE, source="syscall",
                 output=output, output_fields=fields)  # type: ignore[arg-type]


def test_container_identity_is_appended_to_the_text() -> None:
    line = _render(alert({"container.id": "0123456789ab", "container.name": "web\x1b[2J",
                          "container.image.repository": "nginx", "container.image.tag": "1.27",
                          "k8s.ns.name": "prod", "k8s.pod.name": None}), "text")
    assert line.endswith("a container container_id=0123456789ab container_name=web\\x1b[2J container_image=nginx "
                         "container_image_tag=1.27 k8s_ns=prod")


def test_host_alerts_and_outputs_that_name_the_container_already_are_unchanged() -> None:
    assert _render(alert({"container.id": "host", "container.name": "host"}), "text").endswith("in a container")
    line = _render(alert({"container.id": "0123456789ab"}, output="x container_id=0123456789ab"), "text")
    assert line.endswith("x container_id=0123456789ab")
    json_line = _render(alert({"container.id": "0123456789ab", "container.name": "web"}), "json")
    assert '"container.name":"web"' in json_line.replace(" ", "")
