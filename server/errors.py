"""The server's two errors, each raised before anything runs and each saying what to change.

    Exception
     ├── ConfigError (ValueError)   settings that cannot work: the daemon's file (every problem at once, with
     │                              the file it came from) or the alert server's arguments (one sentence)
     └── DaemonError                the daemon cannot start (no root, a sensor that cannot load, a port taken)

One ConfigError for both the daemon's YAML file and the alert server's settings, so a caller that wraps both
(`falconet run` builds the server's settings from the file) catches one class.
"""

from __future__ import annotations

from collections.abc import Sequence


class ConfigError(ValueError):
    """Settings that cannot work. `problems` holds every problem found, each a full sentence; `source` names
    where the settings came from (a file, `<string>`), or is empty for settings given as arguments."""

    def __init__(self, problems: str | Sequence[str], *, source: str = "") -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        self.source = source
        if source:
            lines = "\n".join(f"  - {p}" for p in self.problems)
            message = f"invalid configuration {source}:\n{lines}"
        else:
            message = "\n".join(self.problems)
        super().__init__(message)


class DaemonError(Exception):
    """The daemon cannot start; the message says what is missing or wrong."""


def describe_error(exc: BaseException) -> str:
    """The full text of a load error (the engine's RulesLoadError renders every error with its position)."""
    text = str(exc).strip()
    return text or type(exc).__name__
