"""`falconet version`: what this installation is, as Falco's `--version` says of itself: Falconet's version,
the rules-language (engine) version it implements, and the bcc the sensor would compile with, so an image or
a host shows at once whether the venv sees Debian's python3-bpfcc."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("version", help="print Falconet's, the rules engine's and bcc's versions",
                       description="Print the versions of Falconet, of the rules language it implements, and of "
                       "the bcc it finds.")
    p.add_argument("--json", action="store_true", help="one JSON object instead of lines")
    p.set_defaults(func=_run)


def versions() -> dict[str, str]:
    from falconet.server.services_falco import engine_version, falconet_version

    try:
        import importlib.metadata

        import bcc  # noqa: F401  (Debian's python3-bpfcc: found through the venv's system site packages)

        try:
            bcc_version = importlib.metadata.version("bcc")
        except importlib.metadata.PackageNotFoundError:
            bcc_version = "present (version unknown)"
    except ImportError as exc:
        bcc_version = f"not importable ({exc}); the eBPF sensor needs python3-bpfcc"
    return {"falconet": falconet_version(), "engine": engine_version(), "bcc": bcc_version,
            "python": sys.version.split()[0]}


def _run(args: argparse.Namespace) -> int:
    v = versions()
    if args.json:
        print(json.dumps(v, sort_keys=True))
    else:
        print(f"Falconet version: {v['falconet']}\nEngine version: {v['engine']}\nbcc: {v['bcc']}\n"
              f"Python: {v['python']}")
    return 0
