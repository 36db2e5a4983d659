"""The `falconet` command: one entry point whose subcommands live beside the code they drive.

Each area registers its own subcommands (`register(subparsers)`), and keeps heavy imports (bcc, grpc) inside
the functions it runs, so that `falconet --help` and `falconet rules ...` start fast and work without root.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Modules that register subcommands, in the order `--help` lists them.
_COMMAND_MODULES: tuple[str, ...] = (
    "falconet.server.run_cli",  # run
    "falconet.server.serve_cli",  # serve, publish
    "falconet.server.fleet.aggregate_cli",  # aggregate
    "falconet.rules.cli",  # rules validate|list|test
    "falconet.certs.cli",  # certs init|client|inspect
    "falconet.sensor.cli",  # capture
    "falconet.sdk.generate_cli",  # sdk generate
    "falconet.server.version_cli",  # version
)
# `falconet rules` subcommands that live in the server (they talk to NATS): given the rules subparsers.
_RULES_EXTENSIONS: tuple[str, ...] = ("falconet.server.fleet.rules_cli",)  # rules push|pushed


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="falconet",
        description="Runtime-security alerts for Linux: eBPF sensor, Falco rules, mTLS gRPC alert server.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _COMMAND_MODULES:
        registered = importlib.import_module(name).register(sub)
        if name == "falconet.rules.cli":  # rules/ may not import the server: its server-side subcommands go here
            for extension in _RULES_EXTENSIONS:
                importlib.import_module(extension).register(registered)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130 if args.command != "serve" else 0


if __name__ == "__main__":
    sys.exit(main())
