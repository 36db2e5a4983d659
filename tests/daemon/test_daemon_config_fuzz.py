"""Fuzzing the daemon's configuration loader: whatever a file holds, loading returns a configuration or raises
ConfigError whose sentences carry no control characters, in time linear in the file (YAML aliases included);
a configuration that loads also makes alert-server settings that validate or raise ConfigError. Seeds are
the packaged falconet.yaml and tests/daemon/config_corpus/*.yaml; hypothesis mutates them and builds
documents from the known keys with values of every kind."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from falconet.server.daemon import server_config
from falconet.server.daemon_config import PACKAGED_CONFIG, DaemonConfig, load_config, parse_config
from falconet.server.errors import ConfigError
from mutation import mutated_text

CORPUS = sorted(Path(__file__).with_name("config_corpus").glob("*.yaml")) + [PACKAGED_CONFIG]
SEEDS = [path.read_text(encoding="utf-8") for path in CORPUS]
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
BASE = Path("/etc/falconet")

TOP_KEYS = ["rules_files", "priority", "rule_matching", "json_output", "stdout_output", "file_output",
            "program_output", "syslog_output", "http_output", "grpc", "grpc_output", "outputs",
            "syscall_event_drops", "webserver", "sensor", "plugins", "unknown"]  # fmt: skip
SUB_KEYS = ["enabled", "bind_address", "private_key", "cert_chain", "root_certs", "unix_socket_mode",
            "unix_socket_group", "inputs_allowed_common_names", "retention", "crl", "handshake_timeout",
            "max_connections", "max_streams_per_connection", "max_subscriptions_per_identity", "max_calls",
            "filename", "keep_alive", "program", "address", "url", "timeout", "rate", "max_burst",
            "queue_size", "actions", "listen_port", "listen_address", "ring_buffer_bytes"]  # fmt: skip
PIECES = [": ", "- ", "\n", "  ", "\t", "{", "}", "[", "]", "&a ", "*a", "<<: *a\n", "!!binary ", "!!set ",
          "!!python/object:os.system ", "'", '"', "\x00", "\ufeff", "\x1b[2J", "~", ".nan", "1e999", "0o777",
          "unix://", "0.0.0.0:99999", "%YAML 1.1\n", "---\n", "...\n", "? ", "|\n", ">\n"]  # fmt: skip

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20),
    st.sampled_from(["unix:///run/x.sock", "127.0.0.1:0", "[::1]:5060", "0660", "debug", "all", "log"]),
)  # fmt: skip
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(SUB_KEYS) | st.text(max_size=8),
                                                                inner, max_size=5),
    max_leaves=20,
)
documents = st.dictionaries(st.sampled_from(TOP_KEYS), values, max_size=8)


def _clean(text: str) -> bool:
    """No control characters but the newlines that separate a ConfigError's problems."""
    return not any((ord(c) < 0x20 and c != "\n") or 0x7F <= ord(c) < 0xA0 for c in text)


def _load(text: str) -> DaemonConfig | None:
    try:
        config = parse_config(text, source="fuzz.yaml", base_dir=BASE)
    except ConfigError as exc:
        assert exc.problems and _clean(str(exc)), str(exc)
        return None
    try:
        server_config(config, "fuzz-host").validate()  # what loads also makes server settings, or says why not
    except ConfigError as exc:
        assert _clean(str(exc)), str(exc)
    return config


def test_corpus_loads_or_is_refused_in_linear_time() -> None:
    for path, text in zip(CORPUS, SEEDS, strict=True):
        config = _load(text)
        if path.name in ("falco_like.yaml", PACKAGED_CONFIG.name):
            assert config is not None, path
        else:
            assert config is None, path


@FUZZ
@given(documents)
def test_any_document_of_known_keys_loads_or_is_refused(doc: dict[str, Any]) -> None:
    text = yaml.safe_dump(doc, allow_unicode=True)
    config = _load(text)
    if config is not None:
        limits = config.grpc.limits
        assert math.isfinite(limits.handshake_timeout) and limits.max_calls >= 1


def mutated() -> st.SearchStrategy[str]:
    """A seed with spans deleted, duplicated or replaced by YAML syntax and hostile bytes."""
    return mutated_text(SEEDS, PIECES, rounds=6, span=80, junk=4)


@FUZZ
@given(mutated())
@example("grpc: &g {bind_address: [*g]}\n")
@example("\x00: x\n")
def test_any_mutation_of_a_seed_loads_or_is_refused(text: str) -> None:
    _load(text)


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=200) | mutated().map(lambda t: t.encode("utf-8") + b"\xff\xfe"))
def test_any_bytes_on_disk_load_or_are_refused(tmp_path_factory: Any, data: bytes) -> None:
    path = tmp_path_factory.mktemp("cfg") / "falconet.yaml"
    path.write_bytes(data)
    try:
        load_config(path)
    except ConfigError as exc:
        assert _clean(str(exc)), str(exc)
