"""Falco's `-o key=value` command-line overrides of configuration keys (`falconet run`, `falconet serve`).

A key is a path into the configuration file: names joined by dots (`webserver.listen_port`), a list entry by
its index (`grpc.bind_address[1]`), and `[]` to append to a list (`rules_files[]=/etc/falconet/extra.yaml`).
The value is YAML, typed as the file would type it: `true` is a boolean, `8765` a number, `"8765"` a string,
`[a, b]` a list and `{enabled: true}` a mapping. Overrides apply in order, on top of the file, before the file
is validated, so an overridden value gets exactly the checks (and the sentences) a value in the file gets;
a SIGHUP reload re-reads the file and applies them again. Charts set single keys this way without shipping a
whole file.

What the key or value itself gets wrong (no `=`, an empty name, a bad index, a value that is not YAML, a path
through something that is not a mapping or a list) is an OverrideError naming the override as given.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml

__all__ = ["APPEND", "Override", "OverrideError", "apply_overrides", "parse_override"]

APPEND = -1
"""The index `[]` stands for: one past the end of the list."""

_STEP = re.compile(r"(?P<name>[A-Za-z0-9_-]+)(?P<index>(\[[0-9]*\])*)")
_INDEX = re.compile(r"\[([0-9]*)\]")


class OverrideError(ValueError):
    """An override that cannot be applied; its text names the override."""


Step = str | int


@dataclass(frozen=True, slots=True)
class Override:
    text: str
    """As given on the command line, for messages."""
    path: tuple[Step, ...]
    value: Any  # YAML's value: scalars, lists and mappings, checked later by the config reader

    @property
    def key(self) -> str:
        return self.text.partition("=")[0]


def _fail(text: str, why: str) -> OverrideError:
    return OverrideError(f"-o {text}: {why}")


def parse_override(text: str) -> Override:
    """`key=value` as an Override; OverrideError saying what is wrong with it."""
    if any(ord(c) < 32 and c not in "\t" for c in text):
        raise _fail(repr(text), "control characters are not allowed")
    key, sep, raw = text.partition("=")
    if not sep:
        raise _fail(text, "expected KEY=VALUE (e.g. -o webserver.listen_port=8765)")
    path: list[Step] = []
    for part in key.strip().split("."):
        m = _STEP.fullmatch(part)
        if m is None:
            raise _fail(text, f"{part!r} in the key is not a name (letters, digits, _ and -) followed by "
                              "optional [N] or [] indexes")
        path.append(m.group("name"))
        for index in _INDEX.findall(m.group("index")):
            path.append(APPEND if index == "" else int(index))
    if APPEND in path[:-1]:
        raise _fail(text, "[] (append) can only end the key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise _fail(text, f"the value is not valid YAML ({problem})") from None
    return Override(text=text, path=tuple(path), value=value)


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {value!r}"


def _child(node: Any, step: Step, nxt: Step, o: Override, where: str) -> Any:
    """The container at `step` under `node`, made (a mapping or a list, as `nxt` needs) when absent."""
    fresh: Any = [] if isinstance(nxt, int) else {}
    if isinstance(step, str):
        if not isinstance(node, dict):
            raise _fail(o.text, f"{where or 'the top level'} is {_describe(node)}, not a mapping")
        if node.get(step) is None:
            node[step] = fresh
        return node[step]
    if not isinstance(node, list):
        raise _fail(o.text, f"{where} is {_describe(node)}, not a list")
    if step == APPEND or step == len(node):
        node.append(fresh)
        return node[-1]
    if step > len(node):
        raise _fail(o.text, f"{where} has {len(node)} entries; index {step} is past its end")
    return node[step]


def _set(node: Any, step: Step, o: Override, where: str) -> None:
    if isinstance(step, str):
        if not isinstance(node, dict):
            raise _fail(o.text, f"{where or 'the top level'} is {_describe(node)}, not a mapping")
        node[step] = o.value
        return
    if not isinstance(node, list):
        raise _fail(o.text, f"{where} is {_describe(node)}, not a list")
    if step == APPEND or step == len(node):
        node.append(o.value)
    elif step > len(node):
        raise _fail(o.text, f"{where} has {len(node)} entries; index {step} is past its end")
    else:
        node[step] = o.value


def _name(path: tuple[Step, ...]) -> str:
    out = ""
    for step in path:
        if isinstance(step, str):
            out += ("." if out else "") + step
        else:
            out += "[]" if step == APPEND else f"[{step}]"
    return out


def apply_overrides(data: dict[str, Any], overrides: Sequence[Override]) -> dict[str, Any]:
    """A copy of the parsed file with every override set, in order; OverrideError on the first that cannot."""
    out = copy.deepcopy(data)
    for o in overrides:
        node: Any = out
        for i, step in enumerate(o.path[:-1]):
            node = _child(node, step, o.path[i + 1], o, _name(o.path[:i]))
        _set(node, o.path[-1], o, _name(o.path[:-1]))
    return out


def blame(problems: list[str], overrides: Sequence[Override]) -> list[str]:
    """The config reader's sentences, each one about an overridden key marked with the override that set it,
    so `-o webserver.listen_port=http` is named, not only `webserver.listen_port`."""
    out = []
    for problem in problems:
        if problem.startswith("-o "):  # an OverrideError: it names the override already
            out.append(problem)
            continue
        hits = [o for o in overrides if re.search(rf"(^|[\s(]){re.escape(_plain(o.path))}\b", problem)]
        out.append(problem + "".join(f" (set by -o {o.text})" for o in hits[-1:]))
    return out


def _plain(path: tuple[Step, ...]) -> str:
    """The dotted key without indexes, as the config reader names keys (`grpc.bind_address`)."""
    return ".".join(step for step in path if isinstance(step, str))


def parse_all(texts: list[str] | None) -> tuple[Override, ...]:
    """Every -o given, parsed; OverrideError on the first bad one."""
    return tuple(parse_override(t) for t in texts or ())
