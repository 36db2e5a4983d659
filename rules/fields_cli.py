"""`falconet rules fields`: every field the engine knows, as `falco --list` shows them, and which are filled.

The `filled` column is the answer to "can a rule rely on this field here?": `sensor` (the live eBPF sensor
fills it: falconet.model.sensor_fields), `engine` (the engine answers it without the sensor), `NO` (always
unset on live events: every comparison with it is false), or `source` for another source's fields (ka.*,
jevt.*: the k8s audit events carry them). Loading rules that read a `NO` field warns (rules/blind.py).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from .blind import fill_state
from .fields import FieldInfo, catalog
from .sources import KNOWN_SOURCES, SYSCALL, field_allowed

_EPILOG = """examples:
  falconet rules fields                         every field, its type, whether it is filled, what it means
  falconet rules fields --not-filled            only the fields no live event carries
  falconet rules fields --source syscall --json | jq -r '.[] | select(.filled == "sensor") | .name'
"""

SOURCES = tuple(sorted(KNOWN_SOURCES))


def field_sources(name: str) -> list[str]:
    """The event sources whose rules may read a field (rules/sources.py draws the line)."""
    return [s for s in SOURCES if field_allowed(s, name)]


def register(rules_sub: Any) -> None:
    p = rules_sub.add_parser(
        "fields",
        help="list every field the engine knows, with its type and whether the live sensor fills it",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--source", choices=SOURCES, default=None, help="only the fields of this event source")
    p.add_argument("--not-filled", action="store_true", help="only the fields no live event carries")
    p.add_argument("--json", action="store_true", help="one JSON array of {name, shown, sources, type, arg, filled, desc}")
    p.set_defaults(func=run_fields)


def _filled(info: FieldInfo) -> str:
    """Only syscall fields come from the sensor; other sources' fields come from their own events ("source")."""
    return fill_state(info.name) if field_allowed(SYSCALL, info.name) else "source"


def _shown(info: FieldInfo) -> str:
    """The field as a rule writes it: `evt.arg.NAME`, `proc.aname[N]` (or `proc.aname` when optional)."""
    if info.name.endswith("."):
        return info.name + "NAME"
    if info.arg == "required":
        return info.name + "[ARG]"
    if info.arg == "optional":
        return info.name + "[ARG]?"
    return info.name


def rows(source: str | None = None, not_filled: bool = False) -> list[dict[str, str]]:
    """The listing as data (the tests and --json read this)."""
    out: list[dict[str, str]] = []
    for info in catalog():
        if source is not None and not field_allowed(source, info.name):
            continue
        filled = _filled(info)
        if not_filled and filled != "no":
            continue
        desc = info.desc + (f" (deprecated: {info.deprecated})" if info.deprecated else "")
        out.append({"name": info.name, "shown": _shown(info), "sources": ",".join(field_sources(info.name)),
                    "type": info.type.value,
                    "arg": info.arg, "filled": filled, "desc": desc})  # fmt: skip
    return out


def run_fields(args: argparse.Namespace) -> int:
    listing = rows(args.source, args.not_filled)
    if args.json:
        print(json.dumps(listing, indent=2))
        return 0
    width = max((len(r["shown"]) for r in listing), default=0)
    print(f"{'FIELD':<{width}}  {'TYPE':<8}  {'FILLED':<6}  DESCRIPTION")
    for r in listing:
        filled = "NO" if r["filled"] == "no" else r["filled"]
        print(f"{r['shown']:<{width}}  {r['type']:<8}  {filled:<6}  {r['desc']}")
    blind = sum(1 for r in listing if r["filled"] == "no")
    print(f"\n{len(listing)} fields; {blind} never filled by the live sensor (rules reading them may never match)")
    return 0
