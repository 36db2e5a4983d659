"""The daemon's parts seen from outside: the names that moved stay importable, and --source is read from the
registry of sources (an unknown one lists every registered kind)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from falconet.server.daemon_config import DaemonConfig
from falconet.server.errors import DaemonError
from falconet.server.source_replay import ReplaySource
from falconet.server.sources import KINDS, find_kind, open_source

# Names tests, benchmarks and users' scripts import from the daemon's modules; they must keep resolving
# wherever the code behind them lives.
PUBLIC = {
    "falconet.server.daemon": [
        "Daemon", "DaemonError", "ConfigError", "DROP_RULE", "RELOAD_RULE", "OUTPUT_DROP_RULE",
        "RATE_LIMIT_RULE", "ENGINE_ERROR_RULE", "INTERNAL_SOURCE", "ReplaySource", "SensorSource",
        "build_engine", "default_hostname", "describe_error", "missing_bpf_capabilities", "open_source",
    ],
    "falconet.server.daemon_config": [
        "ConfigError", "DaemonConfig", "GrpcConfig", "FileOutputConfig", "load_config", "parse_config",
        "DEFAULT_CONFIG_PATH", "PACKAGED_CONFIG",
    ],
    "falconet.server.config": ["ConfigError", "ServerConfig", "Listen", "parse_listen", "DEFAULT_LISTEN"],
    "falconet.server.app": ["AlertServer", "ServerConfig", "ConfigError"],
}


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_public_names_resolve(module: str) -> None:
    mod = importlib.import_module(module)
    missing = [name for name in PUBLIC[module] if not hasattr(mod, name)]
    assert not missing, f"{module} lost {missing}"
    declared = getattr(mod, "__all__", None)
    if declared is not None:
        assert [n for n in declared if not hasattr(mod, n)] == []


def test_there_is_one_config_error() -> None:
    classes = {importlib.import_module(m).ConfigError for m in PUBLIC}
    assert len(classes) == 1


def test_source_specs_are_read_from_the_registry(tmp_path: Path) -> None:
    assert [k.usage for k in KINDS] == ["ebpf", "replay:FILE", "ptrace:TARGET", "none"]
    kind, argument = find_kind("replay:a:b.jsonl")
    assert (kind.name, argument) == ("replay", "a:b.jsonl")  # only the first colon separates
    for spec in ("kafka", "replay", "ebpf:x"):
        with pytest.raises(DaemonError, match=rf"unknown source '{spec}'; expected ebpf or replay:FILE or ptrace:TARGET or none$"):
            find_kind(spec)
    with pytest.raises(DaemonError, match="needs a file name"):
        open_source("replay:", DaemonConfig(), None, print)
    source = open_source(f"replay:{tmp_path / 'c.jsonl'}", DaemonConfig(), None, print)
    assert isinstance(source, ReplaySource) and source.kernel_filter() is None
