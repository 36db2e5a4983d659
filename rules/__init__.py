"""Falconet's rule engine: Falco's rules language over enriched events, producing alerts.

The engine is pure: events in, alerts out. It imports nothing from grpc, bcc or asyncio, so it can be tested
with plain data, replayed deterministically and benchmarked alone.

    from falconet.rules import DEFAULT_RULES, Engine, Resolvers
    engine = Engine.from_files([DEFAULT_RULES], resolvers=Resolvers.local())
    for alert in engine.process(event):           # event: falconet.model.event.Event
        print(alert.priority, alert.output)

The names below are the public surface (tests/rules/test_rules_surface.py holds it to that); they load on
first use, so importing this package stays cheap. The modules keep their own names importable too
(`falconet.rules.engine.Engine`, `falconet.rules.loader.load_files`, ...). A load runs in three phases,
reader -> collector -> builder (see loader.py); conditions compile in compiler.py and its parts (binding,
literals, closures, evttypes, codegen); fields live in the `fields` package.
"""

import importlib as _importlib
import typing as _typing
from pathlib import Path as _Path

if _typing.TYPE_CHECKING:
    from falconet.model.alert import Alert, Priority
    from falconet.model.event import Event
    from falconet.rules.engine import AppendOutput, Engine, EngineStats, Resolvers, RuleMatching, system_dns
    from falconet.rules.errors import (
        Code,
        CompileError,
        ConditionSyntaxError,
        Context,
        Diagnostic,
        LoadResult,
        OutputFormatError,
        Position,
        RuleError,
        RulesLoadError,
        UnknownFieldError,
    )
    from falconet.rules.fields import catalog, known_fields
    from falconet.rules.loader import (
        ENGINE_VERSION,
        ENGINE_VERSION_TEXT,
        CompiledRule,
        Loader,
        Ruleset,
        load_files,
        load_texts,
    )

DEFAULT_RULES: _Path = _Path(__file__).with_name("falconet_rules.yaml")
"""Falconet's default rules file (package data): `falconet run` loads it unless told otherwise."""

_EXPORTS: dict[str, str] = {
    "Alert": "falconet.model.alert",
    "Priority": "falconet.model.alert",
    "Event": "falconet.model.event",
    "AppendOutput": "falconet.rules.engine",
    "Engine": "falconet.rules.engine",
    "EngineStats": "falconet.rules.engine",
    "Resolvers": "falconet.rules.engine",
    "RuleMatching": "falconet.rules.engine",
    "system_dns": "falconet.rules.engine",
    "Code": "falconet.rules.errors",
    "CompileError": "falconet.rules.errors",
    "ConditionSyntaxError": "falconet.rules.errors",
    "Context": "falconet.rules.errors",
    "Diagnostic": "falconet.rules.errors",
    "LoadResult": "falconet.rules.errors",
    "OutputFormatError": "falconet.rules.errors",
    "Position": "falconet.rules.errors",
    "RuleError": "falconet.rules.errors",
    "RulesLoadError": "falconet.rules.errors",
    "UnknownFieldError": "falconet.rules.errors",
    "catalog": "falconet.rules.fields",
    "known_fields": "falconet.rules.fields",
    "ENGINE_VERSION": "falconet.rules.loader",
    "ENGINE_VERSION_TEXT": "falconet.rules.loader",
    "CompiledRule": "falconet.rules.loader",
    "Loader": "falconet.rules.loader",
    "Ruleset": "falconet.rules.loader",
    "load_files": "falconet.rules.loader",
    "load_texts": "falconet.rules.loader",
}

__all__ = [
    "DEFAULT_RULES",
    "ENGINE_VERSION",
    "ENGINE_VERSION_TEXT",
    "Alert",
    "AppendOutput",
    "Code",
    "CompileError",
    "CompiledRule",
    "ConditionSyntaxError",
    "Context",
    "Diagnostic",
    "Engine",
    "EngineStats",
    "Event",
    "LoadResult",
    "Loader",
    "OutputFormatError",
    "Position",
    "Priority",
    "RuleError",
    "RuleMatching",
    "Resolvers",
    "RulesLoadError",
    "Ruleset",
    "UnknownFieldError",
    "catalog",
    "known_fields",
    "load_files",
    "load_texts",
    "system_dns",
]


def __getattr__(name: str) -> _typing.Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'falconet.rules' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value
