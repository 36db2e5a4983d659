"""Reading a condition through its macros, for the analyses that bound rules for the kernel filters
(open_prefixes, event_gates). Each analysis folds a condition into its own kind of bound, but all of them must
treat an unknown macro, or one that refers back to itself, as "could be anything": one place keeps that rule."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeVar

from .parser import Node

T = TypeVar("T")


class MacroWalk:
    """The macros by name and the chain being expanded (the cycle guard)."""

    def __init__(self, macros: Mapping[str, Node] | None) -> None:
        self.macros = macros or {}
        self._stack: list[str] = []

    def through_macro(self, name: str, walk: Callable[[Node], T], unknown: T) -> T:
        """`walk` over the body of macro `name`; `unknown` for a macro not defined or already being expanded."""
        ast = self.macros.get(name)
        if ast is None or name in self._stack:
            return unknown
        self._stack.append(name)
        try:
            return walk(ast)
        finally:
            self._stack.pop()
