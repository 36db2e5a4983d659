"""One owner for the host name alerts carry: the engine, the hub and the daemon all take it from one function."""

from __future__ import annotations

import socket

import pytest
from falconet.rules import hostname
from falconet.rules.engine import Resolvers
from falconet.server import daemon, hub


def test_every_stage_uses_the_one_function() -> None:
    assert hub.default_hostname is hostname.default_hostname
    assert daemon.default_hostname is hostname.default_hostname


def test_falco_hostname_wins_and_an_empty_one_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FALCO_HOSTNAME", "sensor-7")
    assert hostname.default_hostname() == "sensor-7"
    assert Resolvers.local().hostname() == "sensor-7"
    assert hub.Hub().hostname == "sensor-7"
    monkeypatch.setenv("FALCO_HOSTNAME", "")
    assert hostname.default_hostname() == socket.gethostname()
    monkeypatch.delenv("FALCO_HOSTNAME")
    assert Resolvers.local().hostname() == socket.gethostname()
