"""Which opens can some rule match, judged in user space from the open's resolved path: the Events it cannot
match need not be built.

The kernel's open filter (rules/open_prefixes.py) must fold each rule into ONE disjunction of path atoms, so a
conjunction keeps only one side: "a private key's base name AND under a home root" becomes "under a home
root", and every open below /tmp (a whole build's headers and objects) reaches user space. Most of those
opens are relative paths too, which the kernel cannot judge at all. User space has the resolved path, so it can
keep the structure: each rule's condition for an open type is pruned to its path and open-kind tests, with
every other test (and every negation, and anything not understood) replaced by "may hold". The pruned
condition is then an over-approximation of the rule: when it is false for an open's (event type, fd.name, open
kind set), the rule is false for that event whatever its other fields are. The enricher still applies the open
to its fd table; it only skips the Event, which no rule could have matched.

Leaves come from open_prefixes' own `_check` (the kernel filter's proved atoms), with two differences, since
user space judges the resolved fd.name and not the path as passed:
- a test of fd.nameraw "may hold" (for a relative or unclean path it is not fd.name);
- an "only unclean paths" test (`fd.name contains '../'`) "may hold" (the kernel never keeps such a path back,
  which made "no atom" right there, not here).
and tests of fd.filename and fd.directory by =, in, startswith and endswith are judged exactly (the kernel
cannot cut a path at its last '/'). The gate is applied only to opens whose fd.name is absolute, of files (not
O_DIRECTORY or O_PATH: open_need's "keep"); its answer depends on (type, fd.name, kind set)
alone, so it is memoised.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .fd_type_gate import FdTypeGate, RuleSpec
from .macro_walk import MacroWalk
from .open_prefixes import FILTERED_OPENS, SUFFIX, Bound, _check, literal_values
from .parser import And, Check, MacroRef, Node, Not, Or




@dataclass(frozen=True, slots=True)
class Leaf:
    """A check's bound: holds for an open of kind set `need` and path `path` only if its kinds include the set
    and (no atoms, i.e. any path) or some atom covering the set matches the path."""

    prefixes: tuple[tuple[str, int], ...] | None  # None: any path
    suffixes: tuple[tuple[str, int], ...]
    kinds: int

    def holds(self, path: str, need: int) -> bool:
        bit = 1 << need
        if not self.kinds & bit:
            return False
        if self.prefixes is None:
            return True
        return any(m & bit and path.startswith(p) for p, m in self.prefixes) or any(
            m & bit and path.endswith(s) for s, m in self.suffixes)


_EXACT_OPS = frozenset({"=", "==", "in", "startswith", "endswith"})


@dataclass(frozen=True, slots=True)
class Exact:
    """A string test of fd.filename or fd.directory, judged exactly: for the file fds the gate judges (an
    open without O_DIRECTORY), both are cut from fd.name at its last '/' (rules/fields/fd.py)."""

    directory: bool
    op: str
    values: tuple[str, ...]

    def holds(self, path: str) -> bool:
        head, _, tail = path.rpartition("/")
        value = (head or "/") if self.directory else tail
        if self.op == "startswith":
            return any(value.startswith(v) for v in self.values)
        if self.op == "endswith":
            return any(value.endswith(v) for v in self.values)
        return value in self.values


@dataclass(frozen=True, slots=True)
class AllOf:
    parts: tuple[Tree, ...]


@dataclass(frozen=True, slots=True)
class AnyOf:
    parts: tuple[Tree, ...]


Tree = Leaf | Exact | AllOf | AnyOf | bool


def holds(tree: Tree, path: str, need: int) -> bool:
    """May the pruned condition hold for an open of this path and kind set?"""
    if tree is True or tree is False:
        return tree
    if isinstance(tree, Leaf):
        return tree.holds(path, need)
    if isinstance(tree, Exact):
        return tree.holds(path)
    if isinstance(tree, AllOf):
        return all(holds(t, path, need) for t in tree.parts)
    return any(holds(t, path, need) for t in tree.parts)


def _leaf(bound: Bound) -> Tree:
    if bound.kinds == 0:
        return False  # impossible for this event type
    if bound.paths is None:
        return True if bound.kinds == 0xFE else Leaf(None, (), bound.kinds)
    if not bound.paths:
        return True  # "only unclean paths": user space judges the folded name, so no conclusion
    prefixes = tuple((p, m) for p, m in bound.paths.items() if not p.startswith(SUFFIX))
    suffixes = tuple((p[len(SUFFIX):], m) for p, m in bound.paths.items() if p.startswith(SUFFIX))
    return Leaf(prefixes, suffixes, bound.kinds)


class _Prune(MacroWalk):
    def tree(self, node: Node, event_type: str) -> Tree:
        if isinstance(node, And):
            parts = [self.tree(c, event_type) for c in node.children]
            if any(p is False for p in parts):
                return False
            kept: tuple[Tree, ...] = tuple(p for p in parts if p is not True)
            return AllOf(kept) if len(kept) > 1 else (kept[0] if kept else True)
        if isinstance(node, Or):
            alts = [self.tree(c, event_type) for c in node.children]
            if any(p is True for p in alts):
                return True
            some: tuple[Tree, ...] = tuple(p for p in alts if p is not False)
            return AnyOf(some) if len(some) > 1 else (some[0] if some else False)
        if isinstance(node, MacroRef):
            unknown: Tree = True
            return self.through_macro(node.name, lambda ast: self.tree(ast, event_type), unknown)
        if isinstance(node, Check):
            ref = node.field
            if ref.name == "fd.nameraw":
                return True
            if (ref.name in ("fd.filename", "fd.directory") and not ref.transformers and ref.arg is None
                    and node.op in _EXACT_OPS):
                values = literal_values(node)
                if values is not None:
                    return Exact(ref.name == "fd.directory", node.op, tuple(values))
            return _leaf(_check(node, event_type))
        if isinstance(node, Not):
            return True
        return True




def _source(tree: Tree, need: int, consts: list[object]) -> str:
    """Python source of the pruned condition for opens of kind set `need`, over `path`, its constants in C
    (str.startswith/endswith on tuples and set membership: one C call per leaf)."""
    if tree is True or tree is False:
        return str(tree)
    if isinstance(tree, Leaf):
        bit = 1 << need
        if not tree.kinds & bit:
            return "False"
        if tree.prefixes is None:
            return "True"
        pre = tuple(p for p, m in tree.prefixes if m & bit)
        suf = tuple(x for x, m in tree.suffixes if m & bit)
        if "" in pre:
            return "True"
        tests = []
        if pre:
            consts.append(pre)
            tests.append(f"path.startswith(C[{len(consts) - 1}])")
        if suf:
            consts.append(suf)
            tests.append(f"path.endswith(C[{len(consts) - 1}])")
        return "(" + " or ".join(tests) + ")" if tests else "False"
    if isinstance(tree, Exact):
        value = "(path.rpartition('/')[0] or '/')" if tree.directory else "path.rpartition('/')[2]"
        if tree.op in ("startswith", "endswith"):
            consts.append(tree.values)
            return f"{value}.{tree.op}(C[{len(consts) - 1}])"
        consts.append(frozenset(tree.values))
        return f"({value} in C[{len(consts) - 1}])"
    parts = [_source(t, need, consts) for t in tree.parts]
    if isinstance(tree, AllOf):
        if "False" in parts:
            return "False"
        parts = [x for x in parts if x != "True"]
        return "(" + " and ".join(parts) + ")" if parts else "True"
    if "True" in parts:
        return "True"
    parts = [x for x in parts if x != "False"]
    return "(" + " or ".join(parts) + ")" if parts else "False"


def compiled(tree: Tree, need: int) -> Callable[[str], bool]:
    """`holds(tree, path, need)` as one generated function (falls back to the walk if it cannot compile)."""
    consts: list[object] = []
    try:
        src = _source(tree, need, consts)
        code = compile(f"lambda path: {src}", "<falconet open gate>", "eval")
        fn: Callable[[str], bool] = eval(code, {"C": tuple(consts), "__builtins__": {}})  # noqa: S307 - our own source
        return fn
    except (RecursionError, SyntaxError, MemoryError, ValueError):
        return lambda path: holds(tree, path, need)


class OpenGate:
    """`may_match(event type, fd.name, kind set)`: False only when no enabled rule can match such an open.
    Event types other than the filtered opens (open, openat, creat) always may."""

    def __init__(self, trees: dict[str, Tree], fd_types: FdTypeGate | None = None) -> None:
        self._trees = trees
        self._fd_types = fd_types
        # (event type, kind set 1..7) -> the tree as one function of the path
        self._fns = {(t, need): compiled(tree, need) for t, tree in trees.items() for need in range(1, 8)}

    @classmethod
    def of(cls, rules: Iterable[RuleSpec], with_fd_types: bool = True) -> OpenGate:
        """The gate of these rules; with_fd_types: with the fd-type gate for the other syscalls too."""
        rules = list(rules)
        trees: dict[str, Tree] = {}
        for etype in sorted(FILTERED_OPENS):
            parts: list[Tree] = []
            for ast, macros, candidate in rules:
                if not candidate(etype):
                    continue
                t = True if ast is None else _Prune(macros).tree(ast, etype)
                if t is True:
                    parts = [True]
                    break
                if t is not False:
                    parts.append(t)
            trees[etype] = True if parts == [True] else (AnyOf(tuple(parts)) if parts else False)
        return cls(trees, FdTypeGate(rules) if with_fd_types else None)

    def fd_type_may_match(self, event_type: str, fd_type: str) -> bool:
        """For the syscalls other than opens: may some rule match an event of this type whose fd has this type
        (rules/fd_type_gate.py)? True when this gate has no fd-type part."""
        return self._fd_types is None or self._fd_types.may_match(event_type, fd_type)

    def gated(self, event_type: str) -> bool:
        """Whether the gate can ever say no for this type."""
        return self._trees.get(event_type, True) is not True

    def may_match(self, event_type: str, path: str, need: int) -> bool:
        """May some enabled rule match an open of this type, absolute fd.name and kind set (1..7, as
        sensor.openfilter.open_need gives it)? True for anything the gate does not judge."""
        fn = self._fns.get((event_type, need))
        return True if fn is None or not path.startswith("/") else bool(fn(path))
