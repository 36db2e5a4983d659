"""The NATS connection block: every problem named, secrets from files, and a real connect with a token."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from nats_servers import NatsServer, single_server

from falconet.server.config_values import Problems, Section
from falconet.server.fleet.connection import connect, read_connection


def _read(tmp_path: Path, data: dict[str, object]) -> tuple[object, list[str]]:
    problems = Problems(tmp_path)
    conn = read_connection(Section(data, "nats_output.", problems))
    return conn, problems.problems


def test_defaults(tmp_path: Path) -> None:
    conn, problems = _read(tmp_path, {})
    assert problems == []
    assert conn.servers == ("nats://127.0.0.1:4222",)  # type: ignore[attr-defined]


@pytest.mark.parametrize(("data", "expect"), [
    ({"servers": []}, "at least one NATS URL"),
    ({"servers": ["http://x"]}, "not a NATS URL"),
    ({"servers": 5}, "a string or a list of strings"),
    ({"token_file": "missing.token"}, "not a readable file"),
    ({"user": "u", "token_file": "t"}, "one way to authenticate"),
    ({"password_file": "p"}, "needs nats_output.user"),
    ({"tls": {"cert": "c.crt"}}, "both cert and key"),
    ({"connect_timeout": -1}, "connect_timeout must be"),
])
def test_problems_are_named(tmp_path: Path, data: dict[str, object], expect: str) -> None:
    (tmp_path / "t").write_text("x")
    (tmp_path / "p").write_text("x")
    _, problems = _read(tmp_path, data)
    assert any(expect in p for p in problems), problems


@pytest.mark.nats
def test_token_from_file_connects_and_a_wrong_one_is_refused(tmp_path: Path) -> None:
    server: NatsServer = single_server(tmp_path / "nats")
    server.extra_config = 'authorization { token: "s3cret" }'
    server.start()
    try:
        (tmp_path / "good").write_text("s3cret\n")
        (tmp_path / "bad").write_text("nope\n")
        good, p1 = _read(tmp_path, {"servers": [server.url], "token_file": "good"})
        bad, p2 = _read(tmp_path, {"servers": [server.url], "token_file": "bad"})
        assert p1 == p2 == []

        async def go() -> None:
            nc = await connect(good, max_reconnect_attempts=0)  # type: ignore[arg-type]
            assert nc.is_connected
            await nc.close()
            with pytest.raises(Exception, match="(?i)authoriz"):
                await connect(bad, max_reconnect_attempts=0, allow_reconnect=False)  # type: ignore[arg-type]

        asyncio.run(go())
    finally:
        server.stop()
