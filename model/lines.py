"""One line of an event file (a capture, a replay, `falconet rules test` input) into the events it holds.

A line is either a syscall event in Falconet's JSON-lines form (docs/events.md), or a Kubernetes audit object as
the API server writes it (an Event, an EventList, or an array of them, as Falco's sample files hold), so one
file can replay both sources and users test audit rules offline without a flag saying which is which.
"""

from __future__ import annotations

from .audit import AuditEvent, JsonValue, decode_audit_object, is_audit_object
from .event import Event


def events_from_line(obj: JsonValue, next_num: int) -> list[Event | AuditEvent]:
    """The events of one decoded JSON line; audit events are numbered from `next_num`. Raises ValueError
    (AuditDecodeError for audit objects) naming what is malformed."""
    if is_audit_object(obj) or (isinstance(obj, list) and obj and all(is_audit_object(o) for o in obj)):
        return list(decode_audit_object(obj, next_num))
    if not isinstance(obj, dict):
        raise ValueError("a line must hold a JSON object (an event, or a Kubernetes audit Event/EventList)")
    return [Event.from_dict(obj)]
