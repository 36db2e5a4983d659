"""The rules loader: Falco rules YAML in, compiled rules and a LoadResult out.

A load runs three phases, each in its own module:

1. reading (reader.py): YAML text to items, every node with its file:line:column;
2. collecting (collector.py, with requirements.py and rule_exceptions.py): items in file order to
   definitions (definitions.py), applying Falco's append/override/redefinition rules, the required engine
   and plugin versions, and rule exceptions;
3. building (builder.py): lists expanded textually (Falco's resolve_list), exceptions folded into the
   condition text, conditions parsed and compiled to predicates with their event types (compiler.py), and
   outputs compiled.

Nothing stops at the first problem: every error and warning becomes a Diagnostic with a stable code and a
file:line:column, the line and a caret, and its contexts outside-in (rule, then macro, then the spot). A
position inside a condition is mapped back through list expansion, appends and YAML folding to the file.

`Loader` is the collector with a `compile()` that builds; `load_files`/`load_texts` do all three. The names
re-exported below are where callers have always imported them from.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from .builder import KNOWN_SOURCES, MAX_EVTTYPES, Builder, CompiledRule, Ruleset
from .collector import Collector
from .definitions import ExceptionDef, ListDef, MacroDef, RuleDef
from .reader import Piece, Source, Text
from .requirements import ENGINE_VERSION, ENGINE_VERSION_TEXT, NATIVE_PLUGINS

__all__ = [
    "ENGINE_VERSION",
    "ENGINE_VERSION_TEXT",
    "KNOWN_SOURCES",
    "MAX_EVTTYPES",
    "NATIVE_PLUGINS",
    "CompiledRule",
    "ExceptionDef",
    "ListDef",
    "Loader",
    "MacroDef",
    "Piece",
    "RuleDef",
    "Ruleset",
    "Source",
    "Text",
    "load_files",
    "load_texts",
]


class Loader(Collector):
    """Collects several rules files in order, then compiles them: `add_file`/`add_text`, then `compile()`."""

    def compile(
        self,
        *,
        resolvers: Any = None,
        compile_output: Callable[[str], Any] | None = None,
        bind: Callable[[Any], Any] | None = None,
    ) -> Ruleset:
        """Expands lists, parses macros, compiles every rule and its output; diagnostics go to `result`.

        `bind` replaces the compiler's field binding (the benchmark wraps extractors to measure them)."""
        builder = Builder(self.result, self.lists, self.macros, self.rules, self.missing_plugins)
        return builder.build(resolvers=resolvers, compile_output=compile_output, bind=bind)


def load_files(
    paths: Iterable[str | Path],
    *,
    resolvers: Any = None,
    compile_output: Callable[[str], Any] | None = None,
) -> Ruleset:
    """Loads several rules files in order (later definitions win) and compiles them."""
    loader = Loader()
    for path in paths:
        loader.add_file(path)
    return loader.compile(resolvers=resolvers, compile_output=compile_output)


def load_texts(
    texts: Iterable[tuple[str, str]],
    *,
    resolvers: Any = None,
    compile_output: Callable[[str], Any] | None = None,
) -> Ruleset:
    """Like load_files, from (name, text) pairs: for tests and for rules that do not live in files."""
    loader = Loader()
    for name, text in texts:
        loader.add_text(name, text)
    return loader.compile(resolvers=resolvers, compile_output=compile_output)
