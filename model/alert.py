"""The alert: what the engine produces, the hub carries and every client receives.

Defined in the shared model, not beside the engine that makes alerts, so that the server, the outputs and
the SDK import it without importing the engine. Its JSON form (see docs/alert-json.md) follows Falco's JSON
output so that tools reading Falco's alerts read ours; `cursor` is Falconet's only addition.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from falconet.model.text import json_safe

OutputValue = str | int | float | bool | None
"""A typed value in `output_fields`, as in Falco's JSON output (None is an unknown value)."""


class Priority(IntEnum):
    """Falco's priorities; the numbers are those of falco.schema.priority (lower is more severe)."""

    EMERGENCY = 0
    ALERT = 1
    CRITICAL = 2
    ERROR = 3
    WARNING = 4
    NOTICE = 5
    INFORMATIONAL = 6
    DEBUG = 7

    @property
    def falco_name(self) -> str:
        """The spelling Falco uses in alerts ("Warning", "Informational", ...)."""
        return self.name.capitalize()

    @classmethod
    def parse(cls, text: str) -> Priority:
        """Reads any spelling Falco accepts (case-insensitive; `info` and `informational` alike).

        Raises ValueError naming the accepted spellings.
        """
        key = text.strip().upper()
        if key in _ALIASES:
            return _ALIASES[key]
        accepted = ", ".join(p.falco_name for p in cls)
        raise ValueError(f"unknown priority {text!r}; expected one of {accepted} (any case), or Info")


_ALIASES: dict[str, Priority] = {p.name: p for p in Priority} | {"INFO": Priority.INFORMATIONAL}


@dataclass(frozen=True, slots=True)
class Cursor:
    """A position in the server's hub: sequences start at 1; the epoch identifies the persistent alert store
    (kept across restarts), or one run of a server without one."""

    epoch: str
    sequence: int

    def __str__(self) -> str:
        return f"{self.epoch}:{self.sequence}"

    @classmethod
    def parse(cls, text: str) -> Cursor:
        """Reads the `EPOCH:SEQUENCE` form printed by `str()`; raises ValueError otherwise."""
        epoch, sep, seq = text.rpartition(":")
        if not sep or not epoch or not seq.isdigit() or int(seq) < 1:
            raise ValueError(f"invalid cursor {text!r}; expected EPOCH:SEQUENCE, e.g. 3f2a9c:42")
        return cls(epoch, int(seq))


@dataclass(slots=True)
class Alert:
    """One alert. `cursor` is None until the hub publishes it."""

    time_ns: int
    rule: str
    priority: Priority
    source: str
    output: str
    output_fields: dict[str, OutputValue] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    hostname: str = ""
    cursor: Cursor | None = None

    def to_json_dict(self) -> dict[str, Any]:
        """The alert JSON (docs/alert-json.md): Falco's JSON output keys, plus `cursor` when published."""
        out: dict[str, Any] = {
            "time": format_time(self.time_ns),
            "rule": self.rule,
            "priority": self.priority.falco_name,
            "source": self.source,
            "hostname": self.hostname,
            "output": self.output,
            "output_fields": dict(self.output_fields),
            "tags": list(self.tags),
        }
        if self.cursor is not None:
            out["cursor"] = {"epoch": self.cursor.epoch, "sequence": self.cursor.sequence}
        return out

    def to_json_line(self) -> str:
        """The canonical one-line alert JSON (docs/alert-json.md): compact, keys in the documented order,
        `output_fields` sorted by key, UTF-8 as is except the controls `json_safe` escapes.

        Valid JSON for any alert: a non-finite float (which JSON cannot express) is written as its name, a
        string, rather than as the bare `NaN` that Python's json would emit.
        """
        data = self.to_json_dict()
        fields = data["output_fields"]
        data["output_fields"] = {
            key: _finite_or_text(fields[key]) for key in sorted(fields)
        }
        return json_safe(json.dumps(data, separators=(",", ":"), ensure_ascii=False))

    @classmethod
    def from_json_dict(cls, data: dict[str, Any]) -> Alert:
        """Reads the alert JSON; raises ValueError (with the offending key) on anything malformed."""
        if not isinstance(data, dict):
            raise ValueError("an alert must be a JSON object")
        try:
            rule = data["rule"]
            output = data.get("output", "")
            if not isinstance(rule, str) or not isinstance(output, str):
                raise ValueError("'rule' and 'output' must be strings")
            prio = data.get("priority", "Informational")
            priority = _json_priority(prio)
            time_ns = parse_time(data["time"]) if "time" in data else 0
            fields = data.get("output_fields") or {}
            if not isinstance(fields, dict) or not all(isinstance(k, str) for k in fields):
                raise ValueError("'output_fields' must be an object")
            for key, value in fields.items():
                if value is not None and not isinstance(value, str | int | float | bool):
                    raise ValueError(f"output_fields[{key!r}] must be a string, number, boolean or null")
            tags = data.get("tags") or []
            if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
                raise ValueError("'tags' must be a list of strings")
            cur = data.get("cursor")
            cursor = Cursor(str(cur["epoch"]), int(cur["sequence"])) if isinstance(cur, dict) else None
            return cls(
                time_ns=time_ns,
                rule=rule,
                priority=priority,
                source=str(data.get("source", "syscall")),
                output=output,
                output_fields=dict(fields),
                tags=list(tags),
                hostname=str(data.get("hostname", "")),
                cursor=cursor,
            )
        except KeyError as exc:
            raise ValueError(f"missing key {exc.args[0]!r}") from None


def _json_priority(value: object) -> Priority:
    """`priority` of the alert JSON: a name in any case, or Falco's number (a boolean is neither)."""
    if isinstance(value, str):
        return Priority.parse(value)
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return Priority(value)
        except ValueError:
            raise ValueError(f"'priority' {value} is not one of 0 (Emergency) to 7 (Debug)") from None
    raise ValueError(f"'priority' must be a priority name or number, not {json.dumps(value)}")


def _finite_or_text(value: OutputValue) -> OutputValue:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def format_time(time_ns: int) -> str:
    """RFC 3339 in UTC with nanoseconds, as Falco prints `time`: 2023-05-25T13:44:05.478445995Z.

    Total over every integer: a time outside years 1..9999 (which a foreign server or an old store may still
    hold, though Falconet's input refuses it) prints its proleptic Gregorian year with more digits or a sign,
    the way the Go and Rust SDKs print it, instead of raising from `datetime`.
    """
    secs, nanos = divmod(time_ns, 1_000_000_000)
    days, sod = divmod(secs, 86_400)
    year, month, day = _civil_from_days(days)
    return f"{year:04d}-{month:02d}-{day:02d}T{sod // 3600:02d}:{sod // 60 % 60:02d}:{sod % 60:02d}.{nanos:09d}Z"


def _civil_from_days(days: int) -> tuple[int, int, int]:
    """Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar (H. Hinnant's method)."""
    z = days + 719_468
    era, doe = divmod(z, 146_097)
    yoe = (doe - doe // 1460 + doe // 36_524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    return yoe + era * 400 + (month <= 2), month, day


def parse_time(text: str) -> int:
    """Reads RFC 3339 (any fraction up to nanoseconds, `Z` or an offset) into nanoseconds since the epoch."""
    if not isinstance(text, str):
        raise ValueError("'time' must be an RFC 3339 string")
    s = text.strip()
    frac_ns = 0
    head, dot, rest = s.partition(".")
    tz = ""
    if dot:
        digits = ""
        for i, ch in enumerate(rest):
            if not ch.isdigit():
                tz = rest[i:]
                break
            digits += ch
        if not digits or len(digits) > 9:
            raise ValueError(f"invalid time {text!r}: fraction must have 1 to 9 digits")
        frac_ns = int(digits.ljust(9, "0"))
        s = head + tz
    if s.endswith(("Z", "z")):
        s = s[:-1] + "+00:00"
    try:
        moment = _dt.datetime.fromisoformat(s)
    except ValueError:
        raise ValueError(f"invalid time {text!r}: expected RFC 3339, e.g. 2023-05-25T13:44:05.478445995Z") from None
    if moment.tzinfo is None:
        raise ValueError(f"invalid time {text!r}: a time zone (Z or +HH:MM) is required")
    delta = moment - _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)
    return (delta.days * 86400 + delta.seconds) * 1_000_000_000 + frac_ns
