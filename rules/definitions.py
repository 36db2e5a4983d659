"""What collection produces: the rules file items after append, override and redefinition, not yet compiled.

Collector (collector.py) builds these from items; Builder (builder.py) compiles them. `index` is a
definition's place in the evaluation order (a redefinition keeps its predecessor's), `visibility` the
moment of its latest change (a macro or list is visible to what comes after it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from falconet.model.alert import Priority

from .errors import Position
from .reader import Source, Text


@dataclass(slots=True)
class ListDef:
    name: str
    items: list[str]
    index: int
    visibility: int
    position: Position
    used: bool = False
    expanded: list[str] | None = None


@dataclass(slots=True)
class MacroDef:
    name: str
    condition: Text
    index: int
    visibility: int
    position: Position


@dataclass(slots=True)
class ExceptionDef:
    name: str
    fields: list[str] | str
    comps: list[str] | str
    values: list[Any]
    position: Position


@dataclass(slots=True)
class RuleDef:
    name: str
    index: int
    position: Position
    source_file: str
    condition: Text
    output: str
    output_position: Position | None
    desc: str
    priority: Priority
    output_node: yaml.ScalarNode | None = None
    output_source: Source | None = None
    tags: list[str] = field(default_factory=list)
    enabled: bool = True
    source: str = "syscall"
    exceptions: list[ExceptionDef] = field(default_factory=list)
    exceptions_position: Position | None = None
    warn_evttypes: bool = True
    skip_if_unknown_filter: bool = False
    capture: bool = False
    capture_duration: int | None = None
