"""Falco's -o KEY=VALUE (server/overrides.py): the key syntax, YAML-typed values, lists, and the errors that
name the override; and `falconet serve -o`, which reads the grpc/alert_store keys through the daemon's reader."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from falconet.server.config import ServerConfig
from falconet.server.daemon_config import parse_config
from falconet.server.errors import ConfigError
from falconet.server.overrides import APPEND, OverrideError, apply_overrides, parse_all, parse_override
from falconet.server.overrides_serve import with_overrides


def test_keys_nest_with_dots_and_index_lists() -> None:
    o = parse_override("grpc.bind_address[1]=0.0.0.0:5061")
    assert o.path == ("grpc", "bind_address", 1) and o.value == "0.0.0.0:5061"
    assert parse_override("rules_files[]=/etc/x.yaml").path == ("rules_files", APPEND)
    assert parse_override("a.b[0][2].c=1").path == ("a", "b", 0, 2, "c")


@pytest.mark.parametrize(("text", "value"), [
    ("k=true", True), ("k=8765", 8765), ("k='8765'", "8765"), ("k=0.5", 0.5), ("k=", ""), ("k=null", None),
    ("k=[a, b]", ["a", "b"]), ("k={enabled: true, port: 1}", {"enabled": True, "port": 1}),
    ("k=a=b", "a=b"),  # only the first = splits
])
def test_values_are_typed_as_yaml(text: str, value: Any) -> None:
    assert parse_override(text).value == value


def test_overrides_apply_in_order_on_a_copy() -> None:
    data: dict[str, Any] = {"grpc": {"bind_address": ["unix:///a"]}, "rules_files": ["r.yaml"]}
    out = apply_overrides(data, parse_all([
        "grpc.bind_address[0]=unix:///b", "grpc.bind_address[]=127.0.0.1:5060", "rules_files[]=s.yaml",
        "webserver.listen_port=1", "webserver.listen_port=2", "new_list[0].name=x",
    ]))
    assert out == {"grpc": {"bind_address": ["unix:///b", "127.0.0.1:5060"]}, "rules_files": ["r.yaml", "s.yaml"],
                   "webserver": {"listen_port": 2}, "new_list": [{"name": "x"}]}
    assert data["grpc"]["bind_address"] == ["unix:///a"]  # the file's data is untouched


@pytest.mark.parametrize(("text", "says"), [
    ("noequals", "-o noequals: expected KEY=VALUE"),
    ("=1", "-o =1: '' in the key is not a name"),
    ("a b=1", "-o a b=1: 'a b' in the key is not a name"),
    ("a[x]=1", "-o a[x]=1: 'a[x]' in the key is not a name"),
    ("a[].b=1", "-o a[].b=1: [] (append) can only end the key"),
    ("k={a: [1}", "-o k={a: [1}: the value is not valid YAML"),
    ("k=\x1b[31m", "control characters are not allowed"),
])
def test_malformed_overrides_are_named(text: str, says: str) -> None:
    with pytest.raises(OverrideError) as err:
        parse_override(text)
    assert says in str(err.value)


def test_an_override_through_a_scalar_or_past_a_list_is_named() -> None:
    with pytest.raises(OverrideError, match=r"^-o priority\.x=1: priority is str 'debug', not a mapping$"):
        apply_overrides({"priority": "debug"}, parse_all(["priority.x=1"]))
    with pytest.raises(OverrideError, match=r"^-o grpc\[0\]=1: grpc is a mapping, not a list$"):
        apply_overrides({"grpc": {}}, parse_all(["grpc[0]=1"]))
    with pytest.raises(OverrideError, match=r"past its end"):
        apply_overrides({"l": [1]}, parse_all(["l[3]=1"]))


def test_the_config_reader_checks_overridden_values_and_names_the_override() -> None:
    cfg = parse_config("webserver: {listen_port: 9376}\n", overrides=parse_all(["webserver.listen_port=8765",
                                                                                 "webserver.listen_address=0.0.0.0"]))
    assert (cfg.metrics.listen_address, cfg.metrics.listen_port) == ("0.0.0.0", 8765)
    with pytest.raises(ConfigError) as err:
        parse_config("webserver: {listen_port: 9376}\n", overrides=parse_all(["webserver.listen_port=99999"]))
    assert err.value.problems == [
        "webserver.listen_port must be at most 65535, got 99999. (set by -o webserver.listen_port=99999)"]


def serve_args(*extra: str) -> argparse.Namespace:
    from falconet.server import cli

    args: argparse.Namespace = cli.build_parser().parse_args(["serve", *extra])
    return args


def test_serve_flags_read_back_unchanged_through_the_daemons_reader(tmp_path: Path) -> None:
    from falconet.server.serve_cli import _server_config

    args = serve_args("--listen", f"unix://{tmp_path}/s.sock", "--retention", "77", "--unix-mode", "0640",
                      "--allow-input-cn", "pub", "--store", str(tmp_path / "a.db"), "--max-calls", "9")
    base = _server_config(args)
    assert with_overrides(base, ()) == base
    got = with_overrides(base, parse_all(["grpc.retention=123", "grpc.max_calls=5", "alert_store.max_alerts=10"]))
    assert (got.retention, got.limits.max_calls, got.store.max_alerts) == (123, 5, 10)
    assert got.listen == base.listen and got.input_allow_cns == frozenset({"pub"})


def test_serve_refuses_a_key_it_does_not_use_and_a_bad_value_by_name() -> None:
    base = ServerConfig()
    with pytest.raises(OverrideError, match=r"^-o json_output=true: falconet serve takes only grpc\.\* and "):
        with_overrides(base, parse_all(["json_output=true"]))
    with pytest.raises(ConfigError) as err:
        with_overrides(base, parse_all(["grpc.retention=0"]))
    assert "(set by -o grpc.retention=0)" in str(err.value)


def test_serve_cli_reports_a_bad_override_and_exits_2() -> None:
    done = subprocess.run([sys.executable, "-m", "falconet.server.cli", "serve", "-o", "grpc.retention=lots"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert "(set by -o grpc.retention=lots)" in done.stderr, done.stderr
