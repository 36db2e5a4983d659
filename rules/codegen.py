"""Code generation: a compiled condition, or all of an event type's candidate rules, as one Python function.

The closures (closures.py) are the reference; each records its inline Python form, which this module pastes
into one generated function so that an event costs one call plus its extractor calls instead of a closure
call per AST node, and (in dispatch) a field read by several rules is extracted once. Generated source
refers to objects only through names in the compiler's globals dict (`_o<N>`), never through literals.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from .binding import BoundRef, Predicate

MAX_INLINE_NESTING = 60
"""Deeper generated expressions stay closures: CPython's parser refuses about 200 nested parentheses."""
_CALL_RE = re.compile(r"\b(_o\d+)\(e\)")
_UNSET = object()


def nesting_depth(source: str) -> int:
    depth = deepest = 0
    for ch in source:
        if ch == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif ch == ")":
            depth -= 1
    return deepest


class CodeGen:
    """The compiler's code-generation half (a mixin of Compiler, which owns the state declared here)."""

    # Per compiled predicate (by id): cost, kind, parts, inline source... (see Compiler._note).
    _meta: dict[int, tuple[Predicate, float, str, tuple[Predicate, ...], str | None, Any, float]]
    # The objects generated functions refer to, by name (this dict is their globals).
    _globals: dict[str, Any]
    _names: dict[int, str]
    _extractor_names: set[str]

    def dispatch(
        self,
        sources: Sequence[str | bool | Predicate],
        *,
        first: bool,
        on_error: Callable[[int], None],
    ) -> Callable[[Any], Sequence[int]]:
        """One generated function evaluating several rules' conditions for one event type, in order.

        A source is inline condition source, a constant, or a predicate to call (for a condition too
        deeply nested to inline). It returns the positions of the matching rules (only the first with
        `first`). Each field is
        extracted at most once per event however many rules read it (extractors are pure), and each rule
        runs in its own try block, so a rule that raises is reported through `on_error(position)` and the
        others still run."""
        counts: dict[str, int] = {}
        for src in sources:
            if isinstance(src, str):
                for name in _CALL_RE.findall(src):
                    if name in self._extractor_names:
                        counts[name] = counts.get(name, 0) + 1
        shared = {name: f"_c{i}" for i, name in enumerate(n for n, c in counts.items() if c > 1)}

        def share(match: re.Match[str]) -> str:
            local = shared.get(match.group(1))
            if local is None:
                return match.group(0)
            return f"({local} if {local} is not _U else ({local} := {match.group(1)}(e)))"

        lines = ["def _dispatch(e):"]
        if shared:
            lines.append("    " + " = ".join(shared.values()) + " = _U")
        if not first:
            lines.append("    hits = []")
        for i, src in enumerate(sources):
            if src is False:
                continue
            if src is True:
                cond = "True"
            elif isinstance(src, str) and nesting_depth(src) <= MAX_INLINE_NESTING:
                cond = _CALL_RE.sub(share, src)
            else:
                pred = src if callable(src) else self._compile_source(src)
                cond = f"{self._name(pred)}(e)"
            hit = f"return ({i},)" if first else f"hits.append({i})"
            lines += [
                "    try:",
                f"        if {cond}:",
                f"            {hit}",
                "    except Exception:",
                f"        _err({i})",
            ]
        lines.append("    return ()" if first else "    return hits")
        namespace = dict(self._globals)
        namespace["__builtins__"] = {"bool": bool, "Exception": Exception}
        namespace["_U"] = _UNSET
        namespace["_err"] = on_error
        exec(compile("\n".join(lines) + "\n", "<falconet dispatch>", "exec"), namespace)  # noqa: S102
        fn: Callable[[Any], Sequence[int]] = namespace["_dispatch"]
        return fn

    def _name(self, obj: Any) -> str:
        """A global name for `obj` in generated code (the dict keeps it alive, so ids stay unique)."""
        key = id(obj)
        name = self._names.get(key)
        if name is None:
            name = f"_o{len(self._names)}"
            self._names[key] = name
            self._globals[name] = obj
        return name

    def _expr(self, pred: Predicate) -> str:
        """Python source evaluating `pred` on `e`: its inline form when known, else a call."""
        meta = self._meta.get(id(pred))
        if meta is not None and meta[4] is not None:
            return meta[4]
        return f"{self._name(pred)}(e)"

    def _compile_source(self, source: str) -> Predicate:
        """A predicate for inline source that is too deep to paste into a bigger function: the source
        with every nested chain call-able on its own is not available here, so it is compiled as is when
        the parser allows it, else evaluated through the closures it came from."""
        try:
            code = compile(f"def _generated(e):\n    return bool({source})\n", "<falconet condition>", "exec")
        except (SyntaxError, RecursionError, MemoryError):
            raise ValueError("condition too deeply nested to generate") from None
        exec(code, self._globals)  # noqa: S102 - our own generated source over our own objects
        fn: Predicate = self._globals.pop("_generated")
        return fn

    def _value_source(self, bound: BoundRef) -> str:
        """Source for a field's value: the field's own inline expression when it has one (an attribute walk,
        exact by the fields module's contract), else a call of its extractor (shareable by dispatch())."""
        if bound.inline is not None:
            return f"({bound.inline})"
        name = self._name(bound.extract)
        self._extractor_names.add(name)
        return f"{name}(e)"

    def generate(self, pred: Predicate | bool) -> Predicate | bool:
        """One generated function for a compiled condition: the checks inline, in the chains' order, so an
        event costs one call plus its extractor calls instead of a closure call per node. Semantics are
        those of the closures (each inline form mirrors its closure); very deep or huge conditions keep the
        closures."""
        if isinstance(pred, bool):
            return pred
        source = self._expr(pred)
        if len(source) > 200_000 or nesting_depth(source) > MAX_INLINE_NESTING:
            return pred
        code = compile(f"def _generated(e):\n    return bool({source})\n", "<falconet condition>", "exec")
        exec(code, self._globals)  # noqa: S102 - our own generated source over our own objects
        fn: Predicate = self._globals.pop("_generated")
        return fn
