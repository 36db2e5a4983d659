"""Typed values out of the daemon's YAML, one sentence per problem instead of an exception per problem.

A configuration file is read whole and every problem is reported at once (a user fixing a file should not
have to restart the daemon once per typo), so the readers here never raise: they record the problem and
return the default, and `parse_config` raises one ConfigError at the end. Sentences name the key with its
block (`grpc.retention must be ...`), which is what a user searches the file for.
"""

from __future__ import annotations

import os
import reprlib
from collections.abc import Mapping
from pathlib import Path

import yaml


def _short_repr() -> reprlib.Repr:
    r = reprlib.Repr()
    r.maxlevel, r.maxlist, r.maxtuple, r.maxdict, r.maxset = 3, 6, 6, 4, 6
    r.maxstring = r.maxother = r.maxlong = 60
    return r


_SHORT = _short_repr()


def show(value: object) -> str:
    """A value as the user wrote it, cut short: a problem sentence must stay one readable line.

    Bounded work as well as bounded text (reprlib, a few levels and items deep): YAML aliases can make a
    small file hold a structure with billions of shared leaves, whose full repr would never finish.
    """
    text = _SHORT.repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def yaml_problem(exc: yaml.YAMLError) -> str:
    """The sentence for text that is not YAML at all, with the line and column PyYAML found."""
    mark = getattr(exc, "problem_mark", None)  # only MarkedYAMLError has a position
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(exc, "problem", None) or str(exc)
    return f"The file is not valid YAML{where}: {problem}."


class Problems:
    """What one read of a file found: problems (the file is refused) and warnings (it loads)."""

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir
        self.problems: list[str] = []
        self.warnings: list[str] = []

    def add(self, sentence: str) -> None:
        self.problems.append(sentence)

    def resolve(self, text: str) -> Path:
        """Relative paths are relative to the configuration file, so a config directory can move whole."""
        p = Path(os.path.expanduser(text))
        return p if p.is_absolute() else self.base_dir / p


class Section:
    """One mapping of the file (the top level, or a block such as `grpc`), read key by key.

    Each reader takes the default from the caller, which takes it from the dataclass field, so a default is
    written once.
    """

    def __init__(self, data: Mapping[str, object], prefix: str, problems: Problems) -> None:
        self.data = data
        self.prefix = prefix
        self.problems = problems

    def section(self, key: str) -> Section:
        """The block under `key`; an absent or null block reads as empty (every default)."""
        value = self.data.get(key)
        where = f"{self.prefix}{key}"
        if value is None:
            return Section({}, f"{where}.", self.problems)
        if not isinstance(value, dict):
            self.problems.add(f"{where} must be a mapping of keys to values, got {show(value)}.")
            return Section({}, f"{where}.", self.problems)
        return Section(value, f"{where}.", self.problems)

    def _bad(self, key: str, expected: str, value: object) -> None:
        self.problems.add(f"{self.prefix}{key} must be {expected}, got {show(value)}.")

    def boolean(self, key: str, default: bool) -> bool:
        value = self.data.get(key, default)
        if isinstance(value, bool):
            return value
        self._bad(key, "true or false", value)
        return default

    def string(self, key: str, default: str) -> str:
        value = self.data.get(key, default)
        if isinstance(value, str):
            return value
        self._bad(key, "a string", value)
        return default

    def number(self, key: str, default: float, *, minimum: float = 0.0) -> float:
        value = self.data.get(key, default)
        if isinstance(value, int | float) and not isinstance(value, bool) and value >= minimum:
            return float(value)
        self._bad(key, f"a number of at least {minimum:g}", value)
        return default

    def integer(self, key: str, default: int, *, minimum: int = 0) -> int:
        value = self.data.get(key, default)
        if isinstance(value, int) and not isinstance(value, bool) and value >= minimum:
            return value
        self._bad(key, f"a whole number of at least {minimum}", value)
        return default

    def queue_size(self) -> int | None:
        """An output's own queue size; None (absent or null) means the shared outputs.queue_size."""
        if self.data.get("queue_size") is None:
            return None
        return self.integer("queue_size", 1, minimum=1)

    def octal_mode(self, key: str, default: int) -> int:
        """A permission mode, written as YAML's octal number or as a string such as "0660"."""
        value = self.data.get(key, default)
        try:
            mode = value if isinstance(value, int) and not isinstance(value, bool) else int(str(value), 8)
        except ValueError:
            mode = -1
        if 0 <= mode <= 0o777:
            return mode
        self._bad(key, 'an octal mode such as "0660"', value)
        return default

    def path(self, key: str) -> Path | None:
        """A file path resolved against the configuration file's directory; absent or empty is None."""
        value = self.data.get(key)
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            self._bad(key, "a file path", value)
            return None
        return self.problems.resolve(value)

    def strings(self, key: str) -> tuple[str, ...] | None:
        """One string or a list of them; None when the key is absent (so the caller's default applies)."""
        if key not in self.data:
            return None
        value = self.data[key]
        if value is None:
            return ()
        if isinstance(value, str):
            return (value,)
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(value)
        self._bad(key, "a string or a list of strings", value)
        return ()
