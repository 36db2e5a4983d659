"""The import graph of Falconet's stages, read statically from the source, and an overlay to break it on purpose.

Every import counts, wherever it is written: module level, inside a function, under `if TYPE_CHECKING:`, and
string names of modules (`importlib.import_module("falconet.x")`, the lazy export table of the SDK's
`__init__`, the CLI's table of command modules). Importing a module also runs its packages' `__init__`, which
this graph leaves to the runtime checks (a subprocess that imports the stage and reads `sys.modules`): a package
whose `__init__` exports lazily (the SDK's) would otherwise seem to import everything it can export.

`overlay` builds a copy of the link tree in a temporary directory with one module added to one stage, so each
boundary test can show that its check fails on a violation.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src"

# Written by `make generate`; they import grpc/protobuf and each other, never another stage.
GENERATED = ("falconet.sdk.api", "falconet.sdk.betterproto", "falconet.sdk._proto")

_MODULE_NAME = re.compile(r"falconet(\.[A-Za-z_][A-Za-z0-9_]*)+")


def _under(name: str, prefixes: Iterable[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


@dataclass(frozen=True)
class Edge:
    source: str  # the importing module
    target: str  # the imported module (absolute)
    line: int

    def __str__(self) -> str:
        return f"{self.source}:{self.line} imports {self.target}"


class ImportGraph:
    """Modules of the `falconet` tree under `root` (a folder holding `falconet/`) and what each imports."""

    def __init__(self, root: Path = SRC) -> None:
        self.root = root
        self.files: dict[str, Path] = dict(self._modules())

    def _modules(self) -> Iterator[tuple[str, Path]]:
        base = self.root / "falconet"
        for dirpath, dirnames, filenames in os.walk(base, followlinks=True):
            here = Path(dirpath)
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            for filename in sorted(filenames):
                if not filename.endswith(".py"):
                    continue
                parts = list((here / filename).relative_to(self.root).with_suffix("").parts)
                if parts[-1] == "__init__":
                    parts.pop()
                name = ".".join(parts)
                if not _under(name, GENERATED):
                    yield name, here / filename

    def is_module(self, name: str) -> bool:
        if name in self.files:
            return True
        path = self.root.joinpath(*name.split("."))
        return _under(name, GENERATED) and (path.with_suffix(".py").exists() or (path / "__init__.py").exists())

    def _is_package(self, name: str) -> bool:
        path = self.files.get(name)
        return path.name == "__init__.py" if path else (self.root.joinpath(*name.split(".")) / "__init__.py").exists()

    def modules(self, *prefixes: str) -> list[str]:
        return sorted(m for m in self.files if _under(m, prefixes))

    def edges(self, module: str) -> list[Edge]:
        """Every module `module` names as an import, in any of the forms the docstring lists."""
        path = self.files[module]
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        out: list[Edge] = []
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                out += [Edge(module, alias.name, node.lineno) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                # `from pkg import mod` uses mod; `from pkg import name` uses what pkg's __init__ holds.
                for alias in node.names:
                    used = f"{base}.{alias.name}"
                    out.append(Edge(module, used if self.is_module(used) else base, node.lineno))
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                # A module named in a string (a package's name is more often a logger's or a resource's)
                if _MODULE_NAME.fullmatch(node.value) and self.is_module(node.value):
                    if not self._is_package(node.value):
                        out.append(Edge(module, node.value, node.lineno))
        return out

    def reachable(self, starts: Iterable[str]) -> list[Edge]:
        """Every edge met walking the imports from `starts` through the hand-written falconet modules."""
        seen: set[str] = set()
        todo = list(starts)
        out: list[Edge] = []
        while todo:
            module = todo.pop()
            if module in seen or module not in self.files:
                continue
            seen.add(module)
            for edge in self.edges(module):
                out.append(edge)
                todo.append(edge.target)
        return out


def violations(edges: Iterable[Edge], forbidden: Iterable[str], allowed: Iterable[str] = ()) -> list[str]:
    """The edges into `forbidden` (module prefixes), unless into `allowed` (more specific prefixes)."""
    forbidden, allowed = tuple(forbidden), tuple(allowed)
    return sorted({str(e) for e in edges if _under(e.target, forbidden) and not _under(e.target, allowed)})


def is_stdlib(name: str) -> bool:
    top = name.split(".")[0]
    return top in sys.stdlib_module_names or top == "__future__"


def overlay(tmp: Path, stage: str, filename: str, text: str) -> Path:
    """A root like src/ whose `falconet/<stage>` is the real one plus `filename`; the other stages are links."""
    real = SRC / "falconet"
    root = tmp / "overlay"
    (root / "falconet").mkdir(parents=True)
    for entry in real.iterdir():
        target = root / "falconet" / entry.name
        if entry.name == stage:
            target.mkdir()
            for inner in entry.resolve().iterdir():
                if inner.name != "__pycache__":
                    (target / inner.name).symlink_to(inner)
            (target / filename).write_text(textwrap.dedent(text), encoding="utf-8")
        else:
            target.symlink_to(entry.resolve())
    return root


# Imports every hand-written module under the given packages (and resolves their lazy `__all__` exports; the
# server's CLI also builds its parser, which imports each subcommand's module by name), then prints every module
# now loaded: what running that stage really pulls in, parents' `__init__` included.
_LOADER = """
import importlib, pkgutil, sys
GENERATED = %(generated)r
before = set(sys.modules)

def load(name):
    module = importlib.import_module(name)
    for info in pkgutil.iter_modules(getattr(module, "__path__", [])):
        child = name + "." + info.name
        if info.name != "__main__" and not any(child == g or child.startswith(g + ".") for g in GENERATED):
            load(child)

for prefix in sys.argv[1:]:
    load(prefix)
    package = sys.modules[prefix]
    for name in getattr(package, "__all__", ()):
        getattr(package, name)
    if prefix == "falconet.server":
        importlib.import_module("falconet.server.cli").build_parser()
for name in sorted(set(sys.modules) - before):
    print(name)
""" % {"generated": GENERATED}


def loaded_modules(prefixes: Iterable[str], root: Path | None = None) -> list[str]:
    """The modules a fresh interpreter loads importing everything under `prefixes` (from `root` if given)."""
    env = dict(os.environ)
    if root is not None:
        env["PYTHONPATH"] = str(root)
    out = subprocess.run(
        [sys.executable, "-c", _LOADER, *prefixes], capture_output=True, text=True, timeout=120, env=env,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.split()
