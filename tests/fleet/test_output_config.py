"""The `nats_output` block (falconet.yaml, and `falconet serve --nats-output FILE`): defaults, every problem
named with its key, and how an existing stream's shape is compared with the configured one."""

from __future__ import annotations

from pathlib import Path

import pytest
from nats.js.api import DiscardPolicy, StreamConfig

from falconet.server.config_values import Problems, Section
from falconet.server.daemon_config import parse_config
from falconet.server.errors import ConfigError
from falconet.server.fleet.names import DEFAULT_STREAM, all_alerts
from falconet.server.fleet.output_config import NatsOutputConfig, load_nats_output, read_nats_output
from falconet.server.fleet.output_stream import shape_differences, wanted_stream


def _read(tmp_path: Path, data: dict[str, object]) -> tuple[NatsOutputConfig, list[str]]:
    problems = Problems(tmp_path)
    return read_nats_output(Section(data, "nats_output.", problems)), problems.problems


def test_defaults_are_off_and_the_contract_names(tmp_path: Path) -> None:
    cfg, problems = _read(tmp_path, {})
    assert problems == []
    assert not cfg.enabled and cfg.stream == DEFAULT_STREAM and cfg.subject_prefix == "falconet.alerts"
    assert cfg.shape.replicas == 1 and cfg.shape.duplicate_window_s == 120 and cfg.shape.discard == "old"


@pytest.mark.parametrize(("data", "expect"), [
    ({"stream": "a.b"}, "nats_output.stream must be a JetStream stream name"),
    ({"subject_prefix": "falconet.>"}, "nats_output.subject_prefix must be NATS subject tokens"),
    ({"subject_prefix": "a..b"}, "nats_output.subject_prefix must be NATS subject tokens"),
    ({"discard": "oldest"}, "nats_output.discard must be old or new"),
    ({"replicas": 0}, "nats_output.replicas must be a whole number of at least 1"),
    ({"replicas": 7}, "at most 5"),
    ({"max_age": 10, "duplicate_window": 60}, "must not exceed nats_output.max_age"),
    ({"max_in_flight": 0}, "nats_output.max_in_flight must be"),
    ({"ack_timeout": 0}, "nats_output.ack_timeout must be"),
    ({"servers": ["http://x"]}, "not a NATS URL"),
    ({"stream_name": "X"}, "nats_output.stream_name is not a known setting"),
    ({"\x1b[31m": 1}, "is not a known setting"),
])
def test_problems_are_named(tmp_path: Path, data: dict[str, object], expect: str) -> None:
    _, problems = _read(tmp_path, data)
    assert any(expect in p for p in problems), problems
    assert all("\x1b" not in p for p in problems)


def test_daemon_config_reads_the_block_and_refuses_an_empty_hub() -> None:
    cfg = parse_config("nats_output: {enabled: true, servers: nats://127.0.0.1:4222, replicas: 3}\n")
    assert cfg.nats_output.enabled and cfg.nats_output.shape.replicas == 3
    with pytest.raises(ConfigError, match="grpc_output.enabled: false leaves empty"):
        parse_config("nats_output: {enabled: true}\ngrpc_output: {enabled: false}\n")
    with pytest.raises(ConfigError, match="nats_output.discard must be old or new"):
        parse_config("nats_output: {discard: all}\n")


def test_serve_file(tmp_path: Path) -> None:
    f = tmp_path / "nats.yaml"
    f.write_text("nats_output: {servers: [nats://127.0.0.1:4222], stream: S1}\n")
    cfg = load_nats_output(f)
    assert cfg.enabled and cfg.stream == "S1"  # the file's block is on unless it says otherwise
    f.write_text("servers: [nats://x:1]\n")
    with pytest.raises(ConfigError, match="must hold a nats_output block"):
        load_nats_output(f)
    f.write_text("nats_output: {stream: 'a b'}\n")
    with pytest.raises(ConfigError, match="stream must be"):
        load_nats_output(f)
    with pytest.raises(ConfigError, match="cannot be read"):
        load_nats_output(tmp_path / "absent.yaml")


def test_shape_is_compared_not_changed(tmp_path: Path) -> None:
    cfg, _ = _read(tmp_path, {"replicas": 3, "max_age": 3600, "duplicate_window": 30, "discard": "new"})
    wanted = wanted_stream(cfg)
    assert wanted.subjects == [all_alerts()] and wanted.num_replicas == 3 and wanted.discard == DiscardPolicy.NEW
    assert shape_differences(cfg, wanted) == []
    other = StreamConfig(name=DEFAULT_STREAM, subjects=["other.*"], num_replicas=1, max_age=3600,
                         duplicate_window=30, discard=DiscardPolicy.NEW)
    diffs = shape_differences(cfg, other)
    assert any(d.startswith("subjects") for d in diffs) and "replicas 1 (configured 3)" in diffs
