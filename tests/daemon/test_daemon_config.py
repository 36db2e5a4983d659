"""The daemon's YAML config: Falco's key names load, every problem is reported as a sentence naming its key."""

from __future__ import annotations

from pathlib import Path

import pytest

from falconet.model.alert import Priority
from falconet.server.config import ServerConfig, parse_listen
from falconet.server.daemon_config import PACKAGED_CONFIG, ConfigError, load_config, parse_config


def test_packaged_default_config_loads_with_paths_relative_to_its_directory() -> None:
    config = load_config(PACKAGED_CONFIG)
    base = PACKAGED_CONFIG.resolve().parent
    assert config.rules_files == (base / "falconet_rules.yaml", base / "rules.d")
    assert config.grpc.bind_address == ("unix:///run/falconet/falconet.sock", "0.0.0.0:5060")
    assert config.grpc.cert_chain == base / "certs" / "server.crt"
    assert config.metrics.listen_address == "127.0.0.1" and config.metrics.listen_port == 9376
    assert config.stdout_output and config.grpc_output
    assert config.warnings == ()


def test_falco_keys_are_read() -> None:
    text = """
rules_file: [/r/a.yaml, /r/rules.d]
priority: warning
rule_matching: all
json_output: true
json_include_output_property: false
json_include_tags_property: false
stdout_output: {enabled: false}
file_output: {enabled: true, keep_alive: true, filename: /tmp/x.txt}
program_output: {enabled: true, keep_alive: false, program: "cat > /dev/null"}
syslog_output: {enabled: true, address: "udp://127.0.0.1:514"}
http_output: {enabled: true, url: "http://localhost:2801/", user_agent: me, compress_uploads: true}
grpc: {enabled: true, bind_address: ["unix:///tmp/s.sock", "127.0.0.1:5060", "[::1]:5061"],
       private_key: k, cert_chain: c, root_certs: a, unix_socket_mode: "0600", inputs_allowed_common_names: [pub]}
grpc_output: {enabled: false}
outputs: {rate: 2.5, max_burst: 7}
syscall_event_drops: {actions: [log, alert, exit], rate: 1, max_burst: 3}
sensor: {ring_buffer_bytes: 65536}
buffered_outputs: false
"""
    config = parse_config(text, base_dir=Path("/base"))
    assert config.rules_files == (Path("/r/a.yaml"), Path("/r/rules.d"))
    assert config.priority is Priority.WARNING and config.rule_matching == "all"
    assert config.json_output and not config.json_include_output_property and not config.json_include_tags_property
    assert not config.stdout_output
    assert config.file_output.enabled and config.file_output.keep_alive
    assert config.file_output.filename == Path("/tmp/x.txt")
    assert config.program_output.program == "cat > /dev/null"
    assert config.syslog_output.address == "udp://127.0.0.1:514"
    assert config.http_output.user_agent == "me" and config.http_output.compress_uploads
    assert config.grpc.bind_address == ("unix:///tmp/s.sock", "127.0.0.1:5060", "[::1]:5061")
    assert config.grpc.private_key == Path("/base/k") and config.grpc.unix_socket_mode == 0o600
    assert config.grpc.inputs_allowed_common_names == ("pub",)
    assert not config.grpc_output
    assert (config.outputs_rate, config.outputs_max_burst) == (2.5, 7)
    assert config.syscall_event_drops.actions == ("log", "alert", "exit")
    assert config.ring_buffer_bytes == 65536
    assert config.warnings == ("buffered_outputs is a Falco setting that Falconet does not use; it is ignored.",)


def test_every_problem_is_reported_at_once_as_sentences() -> None:
    text = """
priority: loud
rule_matching: some
json_output: "yes"
outputs: {rate: -1, max_burst: 0}
file_output: {enabled: true}
http_output: {enabled: true, url: "ftp://x"}
grpc: {bind_address: ["127.0.0.1:5060", "nonsense"]}
syscall_event_drops: {actions: [log, panic]}
sensor: {ring_buffer_bytes: 100000}
webserver: {listen_port: 70000}
colour: blue
"""
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="t.yaml")
    problems = info.value.problems
    expected = [
        "colour is not a known setting",
        "priority: unknown priority 'loud'",
        "rule_matching must be first or all, got 'some'.",
        "json_output must be true or false, got 'yes'.",
        "outputs.rate must be a number of at least 0, got -1.",
        "outputs.max_burst must be a whole number of at least 1, got 0.",
        "file_output.filename must be set when file_output is enabled.",
        "http_output.url must start with http:// or https://, got 'ftp://x'.",
        "grpc.bind_address entry 'nonsense' is neither unix:///PATH nor HOST:PORT",
        "grpc.bind_address has a TCP address (127.0.0.1:5060), which always uses mutual TLS",
        "syscall_event_drops.actions entry 'panic' must be one of ignore, log, alert, exit.",
        "sensor.ring_buffer_bytes must be a power of two, got 100000.",
        "webserver.listen_port must be at most 65535, got 70000.",
    ]
    for fragment in expected:
        assert any(fragment in p for p in problems), (fragment, problems)
    assert len(problems) == len(expected), problems
    assert all(p.endswith(".") and p[0].isalpha() for p in problems)
    assert str(info.value).startswith("invalid configuration t.yaml:")


def test_yaml_syntax_error_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("priority: debug\ngrpc: {bind_address: [\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "not valid YAML at line 3" in str(info.value)


def test_missing_config_file_is_a_sentence(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"The configuration file .*nope.yaml does not exist\."):
        load_config(tmp_path / "nope.yaml")


def test_rules_paths_expand_rules_d_in_name_order_and_skip_a_missing_directory(tmp_path: Path) -> None:
    main = tmp_path / "main.yaml"
    main.write_text("[]\n")
    rules_d = tmp_path / "rules.d"
    rules_d.mkdir()
    for name in ("20-b.yaml", "10-a.yml", "notes.txt", "30-c.yaml"):
        (rules_d / name).write_text("[]\n")
    (rules_d / "sub.yaml").mkdir()  # a directory with a rules-like name is not a rules file
    config = parse_config(
        "rules_files: [main.yaml, rules.d, absent.d]\n", base_dir=tmp_path
    )
    assert config.rules_paths() == [main, rules_d / "10-a.yml", rules_d / "20-b.yaml", rules_d / "30-c.yaml"]
    missing = parse_config("rules_files: [main.yaml, gone.yaml]\n", base_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"The rules file .*gone.yaml listed in rules_files does not exist\."):
        missing.rules_paths()


def test_command_line_rules_replace_the_config_rules() -> None:
    config = parse_config("rules_files: [/a.yaml]\n").with_rules([Path("/b.yaml"), Path("/c.d")])
    assert config.rules_files == (Path("/b.yaml"), Path("/c.d"))


@pytest.mark.parametrize(
    ("address", "accepted"),
    [
        # Where the config file and the server used to disagree (the file had its own check):
        ("unix:/run/f.sock", True),  # the file refused it, the server took it
        ("unix://relative.sock", False),  # the file took it, the server then failed to start
        (":5060", False),  # no host: the file took it
        ("127.0.0.1:70000", False),  # no such port: the file took it
        # Where they agreed, to keep it so:
        ("unix:///run/f.sock", True),
        ("127.0.0.1:5060", True),
        ("[::1]:0", True),
        ("localhost", False),
    ],
)
def test_the_config_file_and_the_server_accept_the_same_listen_addresses(address: str, accepted: bool) -> None:
    certs = "private_key: k\n  cert_chain: c\n  root_certs: a\n"
    text = f"grpc:\n  bind_address: [{address!r}]\n  {certs}"
    try:
        parse_listen(address)
        server_accepts = True
    except ConfigError:
        server_accepts = False
    try:
        config = parse_config(text, base_dir=Path("/base"))
        file_accepts = True
    except ConfigError as exc:
        assert exc.problems == [f"{_server_message(address)}."], exc.problems
        file_accepts = False
    assert server_accepts is file_accepts is accepted
    if accepted:
        assert ServerConfig(listen=config.grpc.bind_address).listens()[0] == parse_listen(address)


def test_a_unix_address_without_slashes_needs_no_tls() -> None:
    config = parse_config("grpc: {bind_address: ['unix:/run/f.sock']}\n")
    assert config.grpc.bind_address == ("unix:/run/f.sock",)


def _server_message(address: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_listen(address, what="grpc.bind_address entry")
    return str(info.value)


def test_falco_libs_snaplen_is_read_bounded_and_its_other_keys_ignored() -> None:
    assert parse_config("{}\n").snaplen == 80  # Falco's default
    config = parse_config("falco_libs: {snaplen: 256, thread_table_size: 262144}\n")
    assert config.snaplen == 256
    assert any("falco_libs.thread_table_size is a Falco setting" in w for w in config.warnings)
    assert parse_config("falco_libs: {snaplen: 0}\n").snaplen == 0
    for bad, fragment in (("5000", "at most 4096"), ("-1", "at least 0"), ('"big"', "whole number")):
        with pytest.raises(ConfigError) as info:
            parse_config(f"falco_libs: {{snaplen: {bad}}}\n")
        assert any(fragment in p and "falco_libs.snaplen" in p for p in info.value.problems), info.value.problems
