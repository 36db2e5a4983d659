"""The arrows between the stages, enforced: each boundary is checked statically (every import written anywhere
in the stage, lazy ones and module names in strings included) and at run time (a fresh interpreter imports the
whole stage and lists what it loaded), and each check is shown to fail on a module that breaks it.

    model  -> the standard library only (every stage imports the model; it imports none of them)
    rules  -> model; no I/O (no grpc, bcc, asyncio, sockets, processes) and no other stage
    sdk    -> model, certs (certificate checks); never rules, server or sensor
    server -> any stage, but of the SDK only the generated stubs, the wire conversion and the code generator
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from arch_support import SRC, ImportGraph, is_stdlib, loaded_modules, overlay, violations

IO = ("grpc", "grpc_health", "grpc_reflection", "bcc", "asyncio", "socket", "ssl", "selectors", "subprocess",
      "multiprocessing", "http", "urllib", "google.protobuf", "prometheus_client", "ctypes")  # fmt: skip
OTHER_STAGES_THAN_RULES = ("falconet.server", "falconet.sensor", "falconet.sdk", "falconet.certs")
# The one socket use the engine has: its default resolvers, injected and replaceable (`Resolvers`): the host name
# (rules/hostname.py, the one host-name function) and DNS lookups for fd.*.name (rules/engine.py).
ENGINE_IO_EXCEPTIONS = {("falconet.rules.hostname", "socket"), ("falconet.rules.engine", "socket")}
SERVER_MAY_USE_OF_SDK = (
    "falconet.sdk.api",  # the generated stubs (grpcio)
    "falconet.sdk.convert",  # the wire conversion of the model's Alert
    "falconet.sdk.generate_cli",  # `falconet sdk generate`: the code generator, no client
)


def _model_static(graph: ImportGraph) -> list[str]:
    edges = graph.reachable(graph.modules("falconet.model"))
    return sorted({str(e) for e in edges if not is_stdlib(e.target) and not e.target.startswith("falconet.model")})


def _model_runtime(root: Path | None) -> list[str]:
    return [m for m in loaded_modules(["falconet.model"], root) if not is_stdlib(m) and m != "falconet"
            and not m.startswith("falconet.model")]  # fmt: skip


def _rules_static(graph: ImportGraph) -> list[str]:
    edges = graph.reachable(graph.modules("falconet.rules"))
    return violations([e for e in edges if (e.source, e.target) not in ENGINE_IO_EXCEPTIONS],
                      IO + OTHER_STAGES_THAN_RULES)  # fmt: skip


def _rules_runtime(root: Path | None) -> list[str]:
    # The standard library's own modules load others (socket loads selectors): at run time, look only for what
    # no standard module loads on its own.
    blocked = ("asyncio", *(m for m in IO if not is_stdlib(m))) + OTHER_STAGES_THAN_RULES
    return [m for m in loaded_modules(["falconet.rules"], root) if violations_of_name(m, blocked)]


def _sdk_static(graph: ImportGraph) -> list[str]:
    return violations(graph.reachable(graph.modules("falconet.sdk")), ("falconet.rules", "falconet.server",
                                                                         "falconet.sensor"))  # fmt: skip


def _sdk_runtime(root: Path | None) -> list[str]:
    blocked = ("falconet.rules", "falconet.server", "falconet.sensor")
    return [m for m in loaded_modules(["falconet.sdk"], root) if violations_of_name(m, blocked)]


def _server_static(graph: ImportGraph) -> list[str]:
    return violations(graph.reachable(graph.modules("falconet.server")), ("falconet.sdk",), SERVER_MAY_USE_OF_SDK)


def _server_runtime(root: Path | None) -> list[str]:
    loaded = loaded_modules(["falconet.server"], root)
    # `falconet.sdk` itself loads as the parent of what the server may use; its exports are lazy.
    return [m for m in loaded if violations_of_name(m, ("falconet.sdk",), SERVER_MAY_USE_OF_SDK)
            and m != "falconet.sdk"]  # fmt: skip


def violations_of_name(name: str, forbidden: tuple[str, ...], allowed: tuple[str, ...] = ()) -> bool:
    def under(prefixes: tuple[str, ...]) -> bool:
        return any(name == p or name.startswith(p + ".") for p in prefixes)

    return under(forbidden) and not under(allowed)


@dataclass(frozen=True)
class Boundary:
    stage: str  # the folder's name under src/falconet
    static: Callable[[ImportGraph], list[str]]
    runtime: Callable[[Path | None], list[str]]
    hidden_import: str  # a module that breaks the boundary only where a runtime import check cannot see it
    loud_import: str  # a module that breaks it at import time
    culprit: str  # what a failing check must name


BOUNDARIES = {
    "model": Boundary(
        "model", _model_static, _model_runtime,
        "def later() -> None:\n    import grpc\n", "import yaml\n", "yaml",
    ),
    "rules": Boundary(
        "rules", _rules_static, _rules_runtime,
        "def later() -> None:\n    import subprocess\n", "import asyncio\n", "asyncio",
    ),
    "sdk": Boundary(
        "sdk", _sdk_static, _sdk_runtime,
        '_EXPORTS = {"Engine": "falconet.rules.engine"}\n', "from falconet.server import hub\n",
        "falconet.server.hub",
    ),
    "server": Boundary(
        "server", _server_static, _server_runtime,
        "def later() -> None:\n    from falconet.sdk import client\n", "import falconet.sdk._resume\n",
        "falconet.sdk._resume",
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", BOUNDARIES)
def test_boundary_holds_in_the_source(name: str) -> None:
    assert BOUNDARIES[name].static(ImportGraph(SRC)) == []


@pytest.mark.parametrize("name", BOUNDARIES)
def test_boundary_holds_at_run_time(name: str) -> None:
    assert BOUNDARIES[name].runtime(None) == []


@pytest.mark.parametrize("name", BOUNDARIES)
def test_static_check_fails_on_a_lazy_or_string_import(name: str, tmp_path: Path) -> None:
    boundary = BOUNDARIES[name]
    root = overlay(tmp_path, boundary.stage, "_violation.py", boundary.hidden_import)
    found = boundary.static(ImportGraph(root))
    assert [f for f in found if f.startswith(f"falconet.{name}._violation:")], found
    # ... which the run-time check cannot see: the static one is not redundant.
    assert boundary.runtime(root) == []


@pytest.mark.parametrize("name", BOUNDARIES)
def test_runtime_check_fails_on_an_import_at_load_time(name: str, tmp_path: Path) -> None:
    boundary = BOUNDARIES[name]
    root = overlay(tmp_path, boundary.stage, "_violation.py", boundary.loud_import)
    assert boundary.culprit in boundary.runtime(root)
    assert [f for f in boundary.static(ImportGraph(root)) if f.startswith(f"falconet.{name}._violation:")]
