"""The engine's public surface: `falconet.rules.__all__` is exactly what it promises, every name imports, the
paths users have always imported from still work (re-exported where code moved), importing the package
stays cheap, and the engine's modules import each other without a cycle."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

import falconet.model.alert
import falconet.model.event
import falconet.rules as rules

EXPECTED = {
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
}

# The engine's documented methods (README, docs, the daemon and the SDK examples use them).
ENGINE_METHODS = {
    "from_files": "classmethod",
    "from_texts": "classmethod",
    "process": "method",
    "matching_rules": "method",
    "enable_rules": "method",
    "enable_tag": "method",
    "is_enabled": "method",
    "candidates": "method",
    "warm": "method",
    "open_path_prefixes": "method",
    "open_path_blockers": "method",
    "rules": "property",
    "enabled_rules": "property",
    "event_types": "property",
}

# Module paths that code outside the engine imports (or imported before the engine was split), and the
# names each must still provide.
COMPAT_PATHS = {
    "falconet.rules.engine": ["Engine", "Resolvers", "AppendOutput", "EngineStats", "system_dns"],
    "falconet.rules.alert": ["Alert", "Cursor", "OutputValue", "Priority", "format_time", "parse_time"],
    "falconet.rules.event": ["NO_LOGINUID", "Container", "Event", "Fd", "Group", "Process", "User"],
    "falconet.rules.loader": [
        "ENGINE_VERSION",
        "ENGINE_VERSION_TEXT",
        "CompiledRule",
        "Loader",
        "Ruleset",
        "Source",
        "load_files",
        "load_texts",
    ],
    "falconet.rules.compiler": ["Compiler", "Compiled", "MacroInfo", "TypeSet", "BoundRef", "bind_field"],
    "falconet.rules.errors": [
        "LoadResult",
        "RulesLoadError",
        "RuleError",
        "CompileError",
        "UnknownFieldError",
    ],
    "falconet.rules.fields": [
        "FieldType",
        "FieldSpec",
        "BoundField",
        "INLINE",
        "resolve",
        "catalog",
        "known_fields",
        "register",
        "simple",
        "with_arg",
        "DnsCache",
    ],
    "falconet.rules.parser": ["parse_condition", "Check", "And", "Or", "Not", "MacroRef"],
    "falconet.rules.output": ["compile_output"],
}

RULES_DIR = Path(rules.__file__).resolve().parent


def test_all_is_the_public_surface() -> None:
    assert set(rules.__all__) == EXPECTED
    for name in rules.__all__:
        assert getattr(rules, name) is not None, name
    public = {n for n in dir(rules) if not n.startswith("_")}
    extra = {n for n in public - EXPECTED if not inspect.ismodule(getattr(rules, n))}
    assert not extra, extra
    with pytest.raises(AttributeError):
        rules.NotAThing  # noqa: B018


def test_the_model_is_re_exported_not_copied() -> None:
    from falconet.rules.alert import Alert
    from falconet.rules.event import Event

    assert rules.Alert is Alert is falconet.model.alert.Alert
    assert rules.Event is Event is falconet.model.event.Event
    assert rules.Priority is falconet.model.alert.Priority


def test_engine_and_its_methods() -> None:
    from falconet.rules.engine import Engine

    assert rules.Engine is Engine
    for name, kind in ENGINE_METHODS.items():
        raw = inspect.getattr_static(Engine, name)
        if kind == "classmethod":
            assert isinstance(raw, classmethod), name
        elif kind == "property":
            assert isinstance(raw, property), name
        else:
            assert inspect.isfunction(raw), name
    engine = Engine.from_files([rules.DEFAULT_RULES], resolvers=rules.Resolvers.local())
    assert engine.rules and engine.enabled_rules
    assert engine.process(_harmless()) == []
    assert engine.matching_rules(_harmless()) == []


@pytest.mark.parametrize("module", sorted(COMPAT_PATHS))
def test_compatibility_paths(module: str) -> None:
    mod = __import__(module, fromlist=["_"])
    for name in COMPAT_PATHS[module]:
        assert getattr(mod, name) is not None, f"{module}.{name}"


def test_importing_the_package_is_cheap() -> None:
    code = (
        "import sys, falconet.rules\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('falconet.rules.') or m == 'yaml')\n"
        "print(','.join(loaded))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "", out


def _imports(tree: ast.AST) -> list[ast.ImportFrom]:
    """Every `from ... import` in `tree`, at any depth (a deferred import is still an edge), except under
    `if TYPE_CHECKING:`, which never runs."""
    found: list[ast.ImportFrom] = []
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            found.extend(i for child in node.orelse for i in _imports(child))
            continue
        if isinstance(node, ast.ImportFrom):
            found.append(node)
        found.extend(_imports(node))
    return found


def _module_imports(path: Path, package: str) -> set[str]:
    """The engine modules that the module at `path` (in `package`) imports."""
    parts = package.split(".")
    found: set[str] = set()
    for node in _imports(ast.parse(path.read_text(encoding="utf-8"))):
        base = ".".join(parts[: len(parts) - node.level + 1]) if node.level else ""
        target = ".".join(p for p in (base, node.module) if p)
        if not target.startswith("falconet.rules"):
            continue
        found.add(target)
        found.update(f"{target}.{alias.name}" for alias in node.names)
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the engine modules it imports, for the tree of `falconet.rules` at `root`."""
    modules: dict[str, Path] = {}
    for path in root.rglob("*.py"):
        rel = path.relative_to(root).with_suffix("")
        modules[".".join(("falconet", "rules", *rel.parts)).removesuffix(".__init__")] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        graph[name] = {m for m in _module_imports(path, package) if m in modules and m != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                return [*path, node, dep]
            if dep not in state and (cycle := visit(dep, [*path, node])) is not None:
                return cycle
        state[node] = 2
        return None

    for name in sorted(graph):
        if name not in state and (cycle := visit(name, [])) is not None:
            return cycle
    return None


def test_engine_modules_import_without_a_cycle() -> None:
    """The field registry used to import its families and they it; no module of the engine may do that now.
    (A package importing its own modules is how a package is assembled, not a cycle; a module importing the
    package that imports it would be.)"""
    graph = import_graph(RULES_DIR)
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])
    assert not {m for m in graph["falconet.rules.fields.registry"] if m.startswith("falconet.rules.fields")}


def test_the_cycle_check_sees_a_deferred_import(tmp_path: Path) -> None:
    """The check itself: the old registry's shape (fields imports a family inside a function, the family
    imports fields at the top) is a cycle."""
    (tmp_path / "fields.py").write_text("def load():\n    from . import fields_evt\n")
    (tmp_path / "fields_evt.py").write_text("from .fields import register\n")
    assert find_cycle(import_graph(tmp_path)) is not None


def _harmless() -> falconet.model.event.Event:
    from falconet.model.event import Event, Process

    return Event(num=1, ts=1, type="getpid", tid=1, res=1, proc=Process(pid=1, name="init"))
