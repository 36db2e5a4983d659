"""`falconet rules ...`: validate rules files, list rules and fields, and run the engine offline over events.

These commands are the engine's front door for people editing rules: `validate` prints every error and
warning with file:line:column, the line and a caret (and exits non-zero on an error), `list` shows what a set
of files defines after appends and overrides, and `test` replays a JSON-lines event file (docs/events.md)
through the engine and prints the alerts as JSON lines, exactly as clients would receive them.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

_EPILOG_VALIDATE = """examples:
  falconet rules validate /etc/falco/falco_rules.yaml
  falconet rules validate falco_rules.yaml my_overrides.yaml     # loaded in order, as Falco does
  falconet rules validate --json my_rules.yaml | jq '.diagnostics[] | select(.severity=="error")'
"""
_EPILOG_LIST = """examples:
  falconet rules list                                  # the default rules
  falconet rules list -r falco_rules.yaml --tag mitre_execution
"""
_EPILOG_TEST = """examples:
  falconet rules test events.jsonl -r falco_rules.yaml
  falconet capture -o events.jsonl && falconet rules test events.jsonl -r my_rules.yaml --rule-matching all
"""


def register(sub: Any) -> Any:
    parser = sub.add_parser("rules", help="validate, list and test Falco rules files")
    rules_sub = parser.add_subparsers(dest="rules_command", metavar="SUBCOMMAND", required=True)

    p = rules_sub.add_parser(
        "validate",
        help="check rules files; print every error and warning with file:line:column",
        epilog=_EPILOG_VALIDATE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "files",
        nargs="+",
        metavar="FILE",
        help="rules files (or directories of them), loaded together in order",
    )
    p.add_argument("--json", action="store_true", help="print the load result as one JSON object")
    p.set_defaults(func=_reporting_no_rules(_validate))

    p = rules_sub.add_parser(
        "list",
        help="list the rules that a set of files defines",
        epilog=_EPILOG_LIST,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "-r", "--rules", action="append", default=[], metavar="FILE", help="rules file (repeatable)"
    )
    p.add_argument(
        "--tag", action="append", default=[], metavar="T", help="only rules with this tag (repeatable)"
    )
    p.set_defaults(func=_reporting_no_rules(_list))

    p = rules_sub.add_parser(
        "test",
        help="run the engine over a JSON-lines event file and print the alerts as JSON lines",
        epilog=_EPILOG_TEST,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("events", metavar="EVENTS.jsonl",
                   help="events, one JSON object per line ('-' for stdin): syscall events, or Kubernetes audit "
                        "Event/EventList objects")  # fmt: skip
    p.add_argument(
        "-r", "--rules", action="append", default=[], metavar="FILE", help="rules file (repeatable)"
    )
    p.add_argument("--rule-matching", choices=("first", "all"), default="first", help="Falco's rule_matching")
    p.add_argument(
        "--hostname", default=None, help="host name to put in alerts (default: FALCO_HOSTNAME or this host)"
    )
    p.set_defaults(func=_reporting_no_rules(_test))

    from . import fields_cli, policy_cli  # fields; from-psp, from-pss

    fields_cli.register(rules_sub)
    policy_cli.register(rules_sub)
    return rules_sub  # server/cli.py adds the server-side subcommands (push, pushed) to it


def _default_rules() -> Path:
    from falconet import rules

    path = getattr(rules, "DEFAULT_RULES", None)
    return Path(path) if path is not None else Path(rules.__file__).parent / "falconet_rules.yaml"


class NoRulesFiles(ValueError):
    """A directory given as rules holds no rules file."""


def _reporting_no_rules(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Runs a rules command; a directory without rules files is one line on stderr and exit status 2."""

    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except NoRulesFiles as exc:
            print(f"falconet rules {args.rules_command}: {exc}", file=sys.stderr)
            return 2

    return run


def _expand(paths: list[str]) -> list[str]:
    """Files in order; a directory stands for its *.yaml and *.yml files in name order, as in Falco's
    rules_files (e.g. /etc/falco/rules.d)."""
    out: list[str] = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            found = [str(f) for f in sorted(path.iterdir()) if f.suffix in (".yaml", ".yml") and f.is_file()]
            if not found:
                # Checking nothing must not read as "Ok": a wrong directory is the likely mistake.
                raise NoRulesFiles(f"{p}: no rules files (*.yaml, *.yml) in this directory")
            out.extend(found)
        else:
            out.append(p)
    return out


def _load(files: list[str]) -> Any:
    """Loads and compiles; returns the Ruleset (its result holds every diagnostic)."""
    from .engine import Resolvers, _default_compile_output
    from .loader import Loader

    loader = Loader()
    for f in _expand(files):
        loader.add_file(f)
    resolvers = Resolvers.local()
    return loader.compile(resolvers=resolvers, compile_output=_default_compile_output(resolvers))


def _validate(args: argparse.Namespace) -> int:
    from .blind import add_blind_warnings, enabled_rules

    ruleset = _load(args.files)
    result = ruleset.result
    if result.ok:  # rules that would be blind under the live sensor (reads of fields it never fills)
        add_blind_warnings(result, enabled_rules(ruleset.rules))
    if args.json:
        doc = {
            "files": result.files,
            "ok": result.ok,
            "summary": result.summary(),
            "rules": len(ruleset.rules),
            "diagnostics": [d.to_dict() for d in result.diagnostics],
        }
        print(json.dumps(doc, indent=2))
        return 0 if result.ok else 1
    for diag in result.diagnostics:
        print(diag.format())
    files = ", ".join(result.files)
    print(f"{files}: {result.summary()}; {len(ruleset.rules)} rules")
    return 0 if result.ok else 1


def _list(args: argparse.Namespace) -> int:
    files = args.rules or [str(_default_rules())]
    ruleset = _load(files)
    for diag in ruleset.result.errors:
        print(diag.format(), file=sys.stderr)
    if not ruleset.result.ok:
        return 1
    wanted = set(args.tag)
    rows = [r for r in ruleset.rules if not wanted or wanted.intersection(r.tags)]
    for rule in rows:
        state = "enabled" if rule.enabled else "disabled"
        print(
            f"{rule.name}\t{rule.priority.falco_name}\t{state}\t{','.join(rule.tags)}\t{rule.types}\t"
            f"{rule.position.file}:{rule.position.line}"
        )
    print(f"{len(rows)} rules", file=sys.stderr)
    return 0


def _test(args: argparse.Namespace) -> int:
    from .engine import Engine, Resolvers
    from .errors import RulesLoadError
    from falconet.model.lines import events_from_line

    files = args.rules or [str(_default_rules())]
    base = Resolvers.local()
    resolvers = base if args.hostname is None else Resolvers(hostname=lambda: args.hostname, dns=base.dns)
    try:
        engine = Engine.from_files(_expand(files), rule_matching=args.rule_matching, resolvers=resolvers)
    except RulesLoadError as exc:
        print(exc.result.format(), file=sys.stderr)
        return 2
    stream: TextIO
    stream = sys.stdin if args.events == "-" else open(args.events, encoding="utf-8")  # noqa: SIM115
    bad = events = alerts = 0
    try:
        for lineno, line in enumerate(stream, 1):
            if not line.strip():
                continue
            try:
                found = events_from_line(json.loads(line), events + 1)  # syscall events or audit events
            except (ValueError, TypeError, AttributeError, RecursionError) as exc:
                bad += 1
                print(f"{args.events}:{lineno}: skipped: {exc}", file=sys.stderr)
                continue
            for event in found:
                events += 1
                for alert in engine.process(event):
                    alerts += 1
                    print(_alert_line(alert.to_json_dict()), flush=False)
    finally:
        if stream is not sys.stdin:
            stream.close()
    sys.stdout.flush()
    print(f"{events} events, {alerts} alerts, {bad} malformed lines", file=sys.stderr)
    return 1 if bad else 0


def _alert_line(doc: dict[str, Any]) -> str:
    """The canonical alert line (docs/alert-json.md): compact, output_fields keys sorted, UTF-8 as is."""
    doc = dict(doc)
    doc["output_fields"] = dict(sorted(doc["output_fields"].items()))
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False)
