"""`falconet rules from-psp` and `falconet rules from-pss`: pod security policies as Falco rules."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

_EPILOG_PSP = """\
examples:
  falconet rules from-psp restricted-psp.yaml -o psp_rules.yaml
  falconet run -r /etc/falconet/falconet_rules.yaml -r psp_rules.yaml
The annotation falco-rules-psp-images: "[nginx, redis]" limits the rules to those image repositories.
"""

_EPILOG_PSS = """\
examples:
  falconet rules from-pss restricted --namespace prod --namespace payments -o pss_rules.yaml
  falconet rules from-pss baseline | falconet rules validate /dev/stdin
"""


def register(rules_sub: Any) -> None:
    p = rules_sub.add_parser(
        "from-psp", help="convert a PodSecurityPolicy into rules that flag pods violating it",
        epilog=_EPILOG_PSP, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    p.add_argument("psp", metavar="PSP.yaml", help="a PodSecurityPolicy (policy/v1beta1) manifest")
    p.add_argument("-o", "--output", metavar="RULES", help="write the rules here (default: stdout)")
    p.set_defaults(func=_from_psp)
    p = rules_sub.add_parser(
        "from-pss", help="the Pod Security Standards baseline or restricted profile as rules",
        epilog=_EPILOG_PSS, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    p.add_argument("profile", choices=("baseline", "restricted"))
    p.add_argument("--namespace", action="append", default=[], metavar="NS",
                   help="only pods in this namespace (repeatable; default: every namespace)")  # fmt: skip
    p.add_argument("-o", "--output", metavar="RULES", help="write the rules here (default: stdout)")
    p.set_defaults(func=_from_pss)


def _write(text: str, output: str | None, warnings: list[str], rules: list[str]) -> int:
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if output:
        Path(output).write_text(text, encoding="utf-8")
        print(f"{len(rules)} rules written to {output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def _from_psp(args: argparse.Namespace) -> int:
    from .psp import PspError, convert_psp

    try:
        docs = [d for d in yaml.safe_load_all(Path(args.psp).read_text(encoding="utf-8")) if d is not None]
        if len(docs) != 1:
            raise PspError(f"expected one YAML document, found {len(docs)}")
        result = convert_psp(docs[0])
    except (OSError, yaml.YAMLError, PspError, UnicodeDecodeError) as exc:
        print(f"falconet rules from-psp: {args.psp}: {exc}", file=sys.stderr)
        return 2
    return _write(result.text(), args.output, result.warnings, result.rule_names)


def _from_pss(args: argparse.Namespace) -> int:
    from .psp import PspError
    from .pss import convert_pss

    try:
        result = convert_pss(args.profile, args.namespace)
    except (PspError, ValueError) as exc:
        print(f"falconet rules from-pss: {exc}", file=sys.stderr)
        return 2
    return _write(result.text(), args.output, result.warnings, result.rule_names)
