"""What a publishable alert must satisfy, checked where alerts enter from outside (the input service and
`falconet publish`), so that every alert the hub retains can be rendered by every client.

An alert that arrives from another process is hostile until checked: a time no calendar can print, a NaN
or a 100-digit integer (which JSON readers in Go and Rust refuse), an empty rule name, a priority that is not
one of Falco's, or the server's own `internal` source (which would let a publisher forge "alerts lost" reports)
are all refused with a sentence naming the field. Pure: imports only the model.
"""

from __future__ import annotations

import math

from falconet.model.alert import Alert, Priority

MIN_TIME_NS = -62_135_596_800 * 1_000_000_000
"""0001-01-01T00:00:00Z, the first instant RFC 3339 (and google.protobuf.Timestamp) can express."""
MAX_TIME_NS = 253_402_300_799 * 1_000_000_000 + 999_999_999
"""9999-12-31T23:59:59.999999999Z, the last."""
MIN_INT = -(1 << 63)
MAX_INT = (1 << 64) - 1
"""Integers in output_fields are exact up to 64 bits, signed or unsigned (docs/alert-json.md)."""
RESERVED_SOURCES = frozenset({"internal"})
"""Sources only the server itself may use: its loss and health reports."""


class AlertInvalid(ValueError):
    """An alert that may not be published; the message names the field (`field` holds its name)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def check_publishable(alert: Alert) -> None:
    """Raises AlertInvalid naming the first field that makes `alert` unfit to publish from outside."""
    if not MIN_TIME_NS <= alert.time_ns <= MAX_TIME_NS:
        raise AlertInvalid(
            "time",
            f"{alert.time_ns} ns since the epoch is outside the years 0001 to 9999 that RFC 3339 can express",
        )
    if not isinstance(alert.rule, str) or not alert.rule.strip():
        raise AlertInvalid("rule", "the rule name must be a non-empty string")
    if type(alert.priority) is not Priority:
        raise AlertInvalid("priority", f"must be one of Falco's priorities, not {alert.priority!r}")
    if alert.source in RESERVED_SOURCES:
        raise AlertInvalid("source", f"{alert.source!r} is reserved to the server's own alerts")
    for name in ("source", "output", "hostname"):
        if not isinstance(getattr(alert, name), str):
            raise AlertInvalid(name, "must be a string")
    if not all(isinstance(tag, str) for tag in alert.tags):
        raise AlertInvalid("tags", "must be strings")
    for key, value in alert.output_fields.items():
        problem = value_problem(value)
        if problem is not None:
            raise AlertInvalid(f"output_fields[{key!r}]", problem)


def value_problem(value: object) -> str | None:
    """Why `value` cannot be an output field value (None when it can)."""
    if value is None or isinstance(value, str | bool):
        return None
    if isinstance(value, int):
        if MIN_INT <= value <= MAX_INT:
            return None
        return f"the integer {value} does not fit in 64 bits"
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{value} is not a finite number"
    return f"must be a string, number, boolean or null, not {type(value).__name__}"
