"""`falconet install`: the default config, rules and rules.d in a config directory, and the systemd unit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from falconet.rules import DEFAULT_RULES
from falconet.server.daemon_config import load_config


def install(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "falconet.server.cli", "install", *args],
                          capture_output=True, text=True, timeout=60, check=False)


def test_install_writes_a_config_that_loads_the_default_rules(tmp_path: Path) -> None:
    etc = tmp_path / "etc-falconet"
    units = tmp_path / "systemd"
    done = install("--dir", str(etc), "--systemd-dir", str(units))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"wrote {etc / 'falconet.yaml'}",
        f"wrote {etc / 'falconet_rules.yaml'}",
        f"wrote {units / 'falconet.service'}",
    ]
    config = load_config(etc / "falconet.yaml")
    assert config.rules_paths() == [etc / "falconet_rules.yaml"]  # rules.d exists and is empty
    assert (etc / "falconet_rules.yaml").read_text() == DEFAULT_RULES.read_text()
    assert config.grpc.cert_chain == etc.resolve() / "certs" / "server.crt"
    from falconet.rules.engine import Engine

    assert Engine.from_files(config.rules_paths()).event_types  # the installed rules load

    unit = (units / "falconet.service").read_text()
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    binary, *rest = exec_start.removeprefix("ExecStart=").split()
    assert Path(binary).is_file() and Path(binary).name == "falconet"
    assert rest == ["run", "-c", str(etc.resolve() / "falconet.yaml")]
    assert "ExecReload=/bin/kill -HUP $MAINPID" in unit


def test_reinstall_keeps_an_edited_config_refreshes_the_rules_and_never_touches_rules_d(
    tmp_path: Path
) -> None:
    etc = tmp_path / "falconet"
    assert install("--dir", str(etc)).returncode == 0
    (etc / "falconet.yaml").write_text("priority: warning\n")
    (etc / "falconet_rules.yaml").write_text("[]\n")
    (etc / "rules.d" / "local.yaml").write_text("[]\n")
    done = install("--dir", str(etc))
    assert done.returncode == 0 and done.stdout.splitlines() == [f"wrote {etc / 'falconet_rules.yaml'}"]
    assert (etc / "falconet.yaml").read_text() == "priority: warning\n"
    assert (etc / "falconet_rules.yaml").read_text() == DEFAULT_RULES.read_text()
    assert (etc / "rules.d" / "local.yaml").read_text() == "[]\n"
    assert install("--dir", str(etc), "--force").returncode == 0
    assert (etc / "falconet.yaml").read_text() != "priority: warning\n"


def test_install_into_an_unwritable_place_says_so(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    done = install("--dir", str(blocker / "sub"))
    assert done.returncode == 1 and "falconet install:" in done.stderr and str(blocker / "sub") in done.stderr
