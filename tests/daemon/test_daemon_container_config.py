"""The daemon's container settings: Falco's container_engines and append_output keys, and the shipped
default that gives every syscall alert the container and pod identity."""

from __future__ import annotations

import pytest

from falconet.rules.engine import Engine
from falconet.server.config_containers import SUGGESTED_FIELDS
from falconet.server.daemon_config import PACKAGED_CONFIG, ConfigError, load_config, parse_config
from falconet.model.event import Container, Event, Process


def engines(text: str) -> dict[str, object]:
    return dict(parse_config(text).container_engines)


def test_defaults_work_on_a_normal_host() -> None:
    got = engines("{}")
    assert got["docker"].sockets == ("/var/run/docker.sock",)  # type: ignore[attr-defined]
    assert got["podman"].sockets == ("/run/podman/podman.sock",)  # type: ignore[attr-defined]
    assert all(s.enabled for s in got.values())  # type: ignore[attr-defined]


def test_falco_keys_and_ours() -> None:
    cfg = parse_config("""
container_engines:
  docker: {enabled: false}
  podman: {sockets: ["unix:///run/user/1000/podman/podman.sock"], timeout: 1.5,
           storage_root: /srv/containers}
  lxc: {enabled: true}
""")
    got = dict(cfg.container_engines)
    assert got["docker"].enabled is False
    assert got["podman"].sockets == ("/run/user/1000/podman/podman.sock",) and got["podman"].timeout == 1.5
    assert got["podman"].extra["storage_root"] == "/srv/containers"
    assert any("lxc" in w for w in cfg.warnings)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("container_engines: [docker]", "container_engines must be a mapping"),
        ("container_engines: {rkt: {}}", "container_engines.rkt is not a known engine"),
        ("container_engines: {docker: {enabled: yes please}}", "container_engines.docker.enabled"),
        ("container_engines: {docker: {sockets: relative.sock}}", "must be an absolute path"),
        ("container_engines: {docker: {timeout: 0}}", "container_engines.docker.timeout"),
        ("container_engines: {docker: {socket: /x}}", "container_engines.docker.socket is not a known"),
        ("append_output: {match: {}}", "append_output must be a list"),
        ("append_output: [{extra_fields: [[1, 2]]}]", "append_output[0]"),
        ("append_output: [{match: {tag: x}}]", "append_output[0].match may only have"),
        ("append_output: [{extra: x}]", "append_output[0] has unknown keys: extra"),
    ],
)
def test_bad_settings_are_named(text: str, problem: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(text)
    assert problem in str(err.value)


def test_the_metadata_wait_is_half_a_second_unless_set() -> None:
    assert parse_config("{}").container_metadata_wait == 0.5
    assert load_config(PACKAGED_CONFIG).container_metadata_wait == 0.5
    assert parse_config("container_metadata_wait: 5").container_metadata_wait == 5.0
    assert parse_config("container_metadata_wait: 0").container_metadata_wait == 0.0  # never wait
    assert parse_config("container_metadata_wait: 10").container_metadata_wait == 10.0


@pytest.mark.parametrize("value", ["-0.1", "10.5", ".inf", ".nan", "true", "'1'", "[1]", "null"])
def test_a_metadata_wait_outside_0_to_10_seconds_is_refused(value: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(f"container_metadata_wait: {value}")
    assert "container_metadata_wait must be a number of seconds from 0 to 10" in str(err.value)


def test_suggested_output_adds_container_and_pod_identity() -> None:
    cfg = parse_config("append_output: [{suggested_output: true}]")
    assert cfg.append_output == ({"extra_fields": list(SUGGESTED_FIELDS), "match": {"source": "syscall"}},)


def test_the_shipped_default_adds_identity_to_every_syscall_alert() -> None:
    cfg = load_config(PACKAGED_CONFIG)
    engine = Engine.from_texts(
        [("r.yaml", "- rule: R\n  desc: d\n  condition: evt.type = execve\n  output: x %proc.name\n"
                    "  priority: WARNING\n")],
        append_output=list(cfg.append_output),
    )
    c = Container(id="0123456789ab", full_id="0123456789ab" + "0" * 52, name="web", type="docker",
                  image_repository="nginx", image_tag="1.27", k8s_ns_name="prod", k8s_pod_name="web-1")
    (alert,) = engine.process(Event(num=1, ts=1, type="execve", tid=1, res=0, proc=Process(pid=1, name="sh"),
                                    container=c))
    f = alert.output_fields
    assert (f["container.id"], f["container.name"], f["container.image.repository"]) == ("0123456789ab", "web",
                                                                                        "nginx")
    assert (f["container.image.tag"], f["k8s.ns.name"], f["k8s.pod.name"]) == ("1.27", "prod", "web-1")
    assert alert.output.endswith("x sh")  # fields only: the text line is the rule's own
