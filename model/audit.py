"""The Kubernetes audit event: what the k8s_audit endpoint (and a replayed audit file) produces and the engine reads.

A kube-apiserver audit webhook posts `audit.k8s.io` objects: one `Event`, or an `EventList` whose `items` are
events. Falco 0.25 split an EventList into its events, stamped each with its `stageTimestamp` and evaluated the
`k8s_audit` rules on the JSON object itself; we do the same, so the object stays as the API server wrote it
(`data`) and the fields (rules/fields_k8saudit.py) read it through JSON pointers. An event whose
`stageTimestamp` cannot be read is refused, as Falco refused it: a rule's time would otherwise be invented.

Pure data and pure functions (no I/O): the HTTP endpoint, the replay source and `falconet rules test` all decode
through `decode_audit_object`, so they accept and refuse exactly the same input.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .alert import parse_time

JsonValue = None | bool | int | float | str | list["JsonValue"] | dict[str, "JsonValue"]
"""A decoded JSON value (what json.loads returns)."""

JsonObject = dict[str, JsonValue]

MemoValue = str | int | tuple[int, int]
"""A field value as the engine parsed it for comparisons (text, integer, or an integer range); see
rules/k8saudit_values.py. The model only stores these, in `AuditEvent.memo`."""

AUDIT_SOURCE = "k8s_audit"
"""The event source name of audit events and of the rules that read them (Falco's `source: k8s_audit`)."""

AUDIT_API_VERSIONS = frozenset({"audit.k8s.io/v1", "audit.k8s.io/v1beta1"})
"""The audit API versions a kube-apiserver webhook sends. An object without apiVersion is accepted, as Falco 0.25
accepted it (Falco's own sample events have none)."""


class AuditDecodeError(ValueError):
    """The JSON is not a Kubernetes audit Event or EventList; the message says which part is wrong."""


@dataclass(slots=True)
class AuditEvent:
    """One audit event. `ts` is its stageTimestamp in ns since the epoch; `num` counts events per source.

    `type` is fixed so that code which names an event by its type (error messages, counters) has one to show;
    the engine routes events by `source`, never by this type. `memo` holds field values already extracted for
    this event (the engine's cache, keyed by field reference): rules share their checks of the same field.
    """

    num: int
    ts: int
    data: JsonObject
    source: str = AUDIT_SOURCE
    type: str = "k8s_audit"
    memo: dict[str, tuple[MemoValue, ...]] = field(default_factory=dict, repr=False, compare=False)

    def to_dict(self) -> JsonObject:
        """The JSON-lines form: the audit object itself, so a captured line replays (and reads) as the original."""
        return self.data


def is_audit_object(obj: object) -> bool:
    """True for something that claims to be an audit Event or EventList (kind and, if present, apiVersion), so
    a replay file can hold audit lines and syscall event lines side by side."""
    if not isinstance(obj, dict):
        return False
    kind = obj.get("kind")
    version = obj.get("apiVersion")
    return kind in ("Event", "EventList") and (version is None or version in AUDIT_API_VERSIONS)


def decode_audit_object(obj: JsonValue, first_num: int = 0, *, max_events: int | None = None) -> list[AuditEvent]:
    """The events of one decoded audit object (an Event, an EventList, or a JSON array of either, as Falco took).

    Raises AuditDecodeError naming the problem: wrong kind or apiVersion, an EventList without an `items` list,
    an item that is not an object, a missing or malformed stageTimestamp, or more than `max_events` events.
    Events are numbered from `first_num`.
    """
    out: list[AuditEvent] = []
    if isinstance(obj, list):
        for item in obj:
            if isinstance(item, list):
                raise AuditDecodeError("a JSON array may hold audit objects, not further arrays")
            out.extend(_decode_one(item, first_num + len(out), max_events, len(out)))
        return out
    return _decode_one(obj, first_num, max_events, 0)


def _decode_one(obj: JsonValue, first_num: int, max_events: int | None, already: int) -> list[AuditEvent]:
    if not isinstance(obj, dict):
        raise AuditDecodeError(f"expected an audit Event or EventList object, got {_kind_of(obj)}")
    kind = obj.get("kind")
    version = obj.get("apiVersion")
    if version is not None and version not in AUDIT_API_VERSIONS:
        raise AuditDecodeError(
            f"apiVersion {_short(version)} is not an audit API version (expected audit.k8s.io/v1 or v1beta1)"
        )
    if kind == "Event":
        _check_count(already + 1, max_events)
        return [AuditEvent(first_num, _stage_ns(obj, None), obj)]
    if kind == "EventList":
        items = obj.get("items")
        if items is None:
            return []  # an empty list as the API server may send it (items omitted)
        if not isinstance(items, list):
            raise AuditDecodeError("EventList 'items' must be a list of Event objects")
        _check_count(already + len(items), max_events)
        events = []
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise AuditDecodeError(f"EventList item {i} is {_kind_of(item)}, not an Event object")
            item_kind = item.get("kind", "Event")
            if item_kind != "Event":
                raise AuditDecodeError(f"EventList item {i} has kind {_short(item_kind)}, expected Event")
            item = dict(item)
            item["kind"] = "Event"  # as Falco: an item is an Event even when the list left `kind` out
            events.append(AuditEvent(first_num + i, _stage_ns(item, i), item))
        return events
    raise AuditDecodeError(f"kind {_short(kind)} is not an audit Event or EventList")


def _check_count(n: int, limit: int | None) -> None:
    if limit is not None and n > limit:
        raise AuditDecodeError(f"the request holds more than {limit} audit events")


def _stage_ns(obj: JsonObject, item: int | None) -> int:
    where = "" if item is None else f"EventList item {item}: "
    stamp = obj.get("stageTimestamp")
    if not isinstance(stamp, str):
        raise AuditDecodeError(f"{where}the event has no stageTimestamp (an RFC 3339 time)")
    try:
        return parse_time(stamp)
    except ValueError:
        raise AuditDecodeError(f"{where}stageTimestamp {_short(stamp)} is not an RFC 3339 time") from None


def _kind_of(value: object) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )


def _short(value: object) -> str:
    """A value from a hostile request, quoted, bounded and without control characters, for an error text."""
    text = repr(value)
    text = "".join(ch if ch.isprintable() else "?" for ch in text)
    return text if len(text) <= 64 else text[:61] + "..."
