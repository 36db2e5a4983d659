"""Fuzzing `falconet publish` (a real process) against a real server with lines a stranger writes: every line
is either published or reported by its number, never lost silently, never a traceback, and the server holds
exactly what was reported published. Seeds: tests/server/corpus/publish_lines.bin; hypothesis adds valid
alerts, mutated seed lines and arbitrary bytes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shared_server import ServerHandle, start_server

from falconet.certs import init_certs

CORPUS = Path(__file__).with_name("corpus") / "publish_lines.bin"
SEED_LINES = CORPUS.read_bytes().split(b"\n")
FALCONET = [sys.executable, "-m", "falconet.server.cli"]
_SUMMARY = re.compile(r"published (\d+) alerts(?:, last cursor [^;\s]+)?(?:; (\d+) lines skipped)?")

pytestmark = pytest.mark.slow  # a `falconet publish` process per example


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    certs = tmp_path_factory.mktemp("publish-certs")
    init_certs(certs)
    handle = start_server(certs, retention=100_000)
    try:
        yield handle
    finally:
        handle.stop()


def test_a_line_of_separator_controls_is_reported_not_dropped(alert_server: ServerHandle) -> None:
    publish_and_account(alert_server, b"\x1c\x1d\x1e\x1f\n\x0b\n \t\r\n")


def publish_and_account(server: ServerHandle, data: bytes) -> None:
    """Runs `falconet publish` on `data` and checks that every non-blank line is accounted for."""
    before = server.hub.published
    done = subprocess.run(
        [*FALCONET, "publish", "--unix-socket", str(server.unix_path)], input=data, capture_output=True, timeout=60
    )
    err = done.stderr.decode("utf-8", "replace")
    assert "Traceback" not in err, err
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # the newline ending the last line does not start another
    nonblank = sum(1 for line in lines if line.strip(b" \t\r\n"))  # JSON's whitespace only
    summary = _SUMMARY.search(err)
    assert summary is not None, err
    published, skipped = int(summary.group(1)), int(summary.group(2) or 0)
    reported = {int(n) for n in re.findall(r"^falconet publish: line (\d+): ", err, flags=re.M)}
    assert published + skipped == nonblank, err
    assert len(reported) == skipped and all(1 <= n <= len(lines) for n in reported), err
    assert done.returncode == (1 if skipped else 0), err
    assert server.hub.published - before == published


def test_the_corpus_is_published_line_by_line(server: ServerHandle) -> None:
    publish_and_account(server, CORPUS.read_bytes())


alert_docs = st.fixed_dictionaries(
    {"rule": st.text(min_size=1, max_size=12).filter(str.strip), "output": st.text(max_size=20)},
    optional={
        "priority": st.sampled_from(["Warning", "Debug", "emergency", "Info", 3, 9, True, None]),
        "time": st.sampled_from(["2024-01-01T00:00:00Z", "2024-01-01T00:00:00.123456789+02:00", "0", ""]),
        "output_fields": st.dictionaries(st.text(max_size=6), st.one_of(st.none(), st.booleans(), st.integers(),
                                                                         st.floats(), st.text(max_size=6))),
        "tags": st.lists(st.text(max_size=5), max_size=3),
        "source": st.sampled_from(["syscall", "k8s_audit", "internal", ""]),
    },
)  # fmt: skip
line = st.one_of(
    alert_docs.map(lambda d: json.dumps(d).encode()),
    st.sampled_from(SEED_LINES),
    st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")),
)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(line, min_size=1, max_size=12))
def test_any_lines_are_published_or_reported_by_number(server: ServerHandle, lines: list[bytes]) -> None:
    publish_and_account(server, b"\n".join(lines) + b"\n")
