"""The daemon's `dns` section: configured names answer before the host's resolver, hosts files follow edits,
and bad entries are clear configuration errors (a bad line in a hosts file is skipped, never fatal)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from falconet.server.daemon_config import ConfigError, parse_config
from falconet.server.dns_hosts import HostsResolver, hosts_resolver, parse_hosts_text

API = "kubernetes.default.svc.cluster.local"


def fallback_recorder() -> tuple[list[str], object]:
    asked: list[str] = []

    def fallback(name: str) -> list[str]:
        asked.append(name)
        return ["203.0.113.9"]

    return asked, fallback


def test_configured_names_answer_first_others_fall_back(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text(f"# cluster names\n192.0.2.10 {API} kubernetes.default  # api\nnot-an-ip bad\n")
    config = parse_config(f"dns: {{hosts: {{Registry.Example.: 198.51.100.7}}, hosts_files: [{hosts}]}}\n")
    asked, fallback = fallback_recorder()
    resolve = hosts_resolver(config.dns, fallback)  # type: ignore[arg-type]
    assert resolve(API) == ["192.0.2.10"] and resolve(API.upper() + ".") == ["192.0.2.10"]
    assert resolve("kubernetes.default") == ["192.0.2.10"]
    assert resolve("registry.example") == ["198.51.100.7"]
    assert asked == []
    assert resolve("other.example") == ["203.0.113.9"] and asked == ["other.example"]
    # An edit to the file is seen on the next lookup (the engine's cache asks again after its TTL).
    hosts.write_text(f"192.0.2.11 {API}\n")
    os.utime(hosts, ns=(1, 1))
    assert resolve(API) == ["192.0.2.11"]
    hosts.unlink()
    assert resolve(API) == ["203.0.113.9"]


def test_nothing_configured_is_the_fallback_itself() -> None:
    _asked, fallback = fallback_recorder()
    assert hosts_resolver(parse_config("").dns, fallback) is fallback  # type: ignore[arg-type]


def test_bad_dns_settings_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(
            "dns:\n  hosts: {'bad name!': 192.0.2.1, ok.example: [300.1.1.1], empty.example: []}\n"
            f"  hosts_files: [{tmp_path / 'missing'}]\n  ttl: 5\n"
        )
    text = "\n".join(err.value.problems)
    for expected in ("'bad name!' is not a DNS name", "'300.1.1.1' is not an IP address",
                     "empty.example must be an address", "does not exist", "dns.ttl is not a known setting"):
        assert expected in text


def test_hosts_text_skips_junk_and_control_characters() -> None:
    names = parse_hosts_text("192.0.2.1 a.example b\x1b[31m.example\n::1 localhost6\n192.0.2.2\n", "t")
    assert names == {"a.example": ["192.0.2.1"], "localhost6": ["::1"]}


def test_resolver_merges_static_and_file_addresses(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text(f"192.0.2.20 {API}\n")
    config = parse_config(f"dns: {{hosts: {{{API}: [192.0.2.10]}}, hosts_files: [{hosts}]}}\n").dns
    assert HostsResolver(config, lambda _n: [])(API) == ["192.0.2.10", "192.0.2.20"]
