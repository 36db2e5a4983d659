"""The page's files: shipped in the package, the vendored Chart.js exactly as pinned, no inline script;
and the `web_console` block of the daemon's configuration file."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from falconet.server.console.app import CSP, STATIC_DIR, static_files
from falconet.server.console.config import DEFAULT_PORT
from falconet.server.daemon_config import ConfigError, parse_config

CHART_JS_VERSION = "4.6.2"
CHART_JS_SHA256 = "3f288f4f26882c26b58931fb586a9b4f30370b5de38d69dc005b0bd05b08e113"


def test_vendored_chart_js_is_the_pinned_release_with_its_licence() -> None:
    data = (STATIC_DIR / "vendor" / "chart.umd.min.js").read_bytes()
    assert hashlib.sha256(data).hexdigest() == CHART_JS_SHA256
    assert f"Chart.js v{CHART_JS_VERSION}".encode() in data[:200]
    readme = (STATIC_DIR / "vendor" / "README.md").read_text()
    assert f"chart.js@{CHART_JS_VERSION}" in readme and CHART_JS_SHA256 in readme
    assert "MIT License" in (STATIC_DIR / "vendor" / "chart.js.LICENSE.md").read_text()


def test_the_page_runs_only_its_own_files() -> None:
    html = (STATIC_DIR / "index.html").read_text()
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", html, re.S)
    assert scripts and all('src="/static/' in attrs and not body.strip() for attrs, body in scripts)
    assert not re.search(r"\son[a-z]+\s*=", html), "no inline event handlers (the CSP forbids them anyway)"
    assert "script-src 'self'" in CSP and "unsafe-inline" not in CSP
    js = (STATIC_DIR / "console.js").read_text()
    assert "innerHTML" not in js and "insertAdjacentHTML" not in js and "document.write" not in js
    served = static_files()
    assert {"index.html", "console.js", "console.css", "vendor/chart.umd.min.js"} <= set(served)


def test_package_data_ships_the_static_files() -> None:
    pyproject = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    assert '"falconet.server.console" = ["static/*.html", "static/*.js", "static/*.css"' in pyproject
    assert '"falconet.server.console",' in pyproject


def test_web_console_block_is_read_and_checked(tmp_path: Path) -> None:
    token = tmp_path / "console.token"
    token.write_text("t" * 32)
    off = parse_config("rules_files: []\n", base_dir=tmp_path)
    assert not off.web_console.enabled and off.web_console.listen_port == DEFAULT_PORT
    on = parse_config("web_console:\n  enabled: true\n  token_file: console.token\n  listen_port: 9999\n",
                      base_dir=tmp_path)  # fmt: skip
    assert on.web_console.enabled and on.web_console.token_file == token and on.web_console.listen_port == 9999
    with pytest.raises(ConfigError) as exc:
        parse_config("web_console:\n  enabled: true\n  listen_address: 0.0.0.0\n  colour: red\n", base_dir=tmp_path)
    text = str(exc.value)
    assert "web_console.colour is not a known setting" in text
    assert "no access control" in text and "plain HTTP is only served on 127.0.0.1" in text
    # Disabled, an incomplete block is not an error (it may be prepared before it is switched on).
    parse_config("web_console:\n  enabled: false\n  listen_address: 0.0.0.0\n", base_dir=tmp_path)


def test_web_console_problems_never_print_control_characters(tmp_path: Path) -> None:
    text = (
        'web_console: {enabled: true, listen_address: "\\x1b[31m\\x00", token_file: "a\\x07b", '
        'listen_port: "\\x1b", "\\x1b[2J": 1}\n'
    )
    with pytest.raises(ConfigError) as exc:
        parse_config(text, base_dir=tmp_path)
    message = str(exc.value)
    assert "web_console.listen_address" in message and "token_file" in message and "listen_port" in message
    assert not any(ord(ch) < 32 and ch != "\n" for ch in message), repr(message)


def test_the_aggregator_console_block(tmp_path: Path, certs_dir: Path) -> None:
    from falconet.server.console.config import ConsoleConfigError
    from falconet.server.fleet.aggregate import Aggregator
    from falconet.server.fleet.aggregate_config import parse_aggregate

    tls = (f"  grpc:\n    bind_address: [127.0.0.1:0]\n    root_certs: {certs_dir / 'ca.crt'}\n"
           f"    cert_chain: {certs_dir / 'server.crt'}\n    private_key: {certs_dir / 'server.key'}\n")  # fmt: skip
    # Absent: on by default, with the gRPC TLS files, but off (with a note) without a name or a token.
    agg = Aggregator(parse_aggregate("aggregate:\n" + tls, base_dir=tmp_path))
    assert not agg.console_config.enabled and "on by default on an aggregator" in agg.console_notes[0]
    # Allowed names: on, HTTPS with the gRPC server's certificate, client certificates of the gRPC CA.
    agg = Aggregator(parse_aggregate("aggregate:\n" + tls + "  web_console:\n    allowed_common_names: [ops]\n",
                                     base_dir=tmp_path))  # fmt: skip
    cfg = agg.console_config
    assert cfg.enabled and cfg.client_ca == certs_dir / "ca.crt" and cfg.cert_chain == certs_dir / "server.crt"
    assert cfg.allowed_common_names == {"ops"} and not agg.console_notes
    # Written out as enabled, an incomplete block is refused, named where it is.
    with pytest.raises(ConsoleConfigError, match="aggregate.web_console has no access control"):
        Aggregator(parse_aggregate("aggregate:\n  web_console:\n    enabled: true\n", base_dir=tmp_path))
    with pytest.raises(ConfigError, match="aggregate.web_console.colour is not a known setting"):
        parse_aggregate("aggregate:\n  web_console:\n    colour: red\n", base_dir=tmp_path)
