"""`falco-client`: subscribe to, fetch and query a Falconet (or Falco) server from a shell.

A thin layer over `falconet.sdk.Client`: everything it can do, a program can do with the SDK. Output goes to
stdout (one alert per line, flushed, so it pipes well); diagnostics, including reconnect notices, go to stderr.
Exit status: 0 on success or Ctrl-C, 1 when the server cannot be used (the message says why), 2 for bad usage.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from falconet.model.alert import Alert
    from falconet.sdk.client import Client

_DEFAULT_SOCKET = "/run/falconet/falconet.sock"  # falconet.sdk.DEFAULT_UNIX_SOCKET, without importing grpc

_EXAMPLES = """\
examples:
  falco-client subscribe
      stream alerts from the local daemon's UNIX socket as they happen (Ctrl-C to stop)
  falco-client subscribe --min-priority warning --tag mitre_execution --output json
      only Warning and more severe alerts tagged mitre_execution, as alert JSON, one per line
  falco-client subscribe --from oldest --count 100 --output json > alerts.jsonl
      everything the server still retains, then live alerts, stopping after 100
  falco-client subscribe --from 6a1f93c2:4120
      resume just after the alert whose cursor was 6a1f93c2:4120 (printed with each alert)
  falco-client get --rule 'Terminal shell in container'
      the retained alerts of one rule, then exit
  falco-client --host falconet.example.com --port 5060 --ca ca.crt --cert client.crt --key client.key version
      the version of a remote server, over mTLS (files from `falconet certs init`)
"""


def _connection_options(defaults: bool) -> argparse.ArgumentParser:
    """The connection options, accepted before or after the command. Only the top-level copy has defaults:
    a subcommand's defaults would overwrite what was given before the command."""
    conn = argparse.ArgumentParser(add_help=False, argument_default=None if defaults else argparse.SUPPRESS)
    g = conn.add_argument_group("connection (UNIX socket by default; --host selects TCP with mTLS)")
    g.add_argument(
        "--unix-socket", metavar="PATH", help=f"the daemon's UNIX socket (default: {_DEFAULT_SOCKET})"
    )
    g.add_argument("--host", metavar="H", help="server host name or address; needs --ca, --cert and --key")
    g.add_argument("--port", metavar="P", type=int, help="server TCP port (default: 5060)")
    g.add_argument("--ca", metavar="A", help="CA certificate that signed the server's certificate")
    g.add_argument("--cert", metavar="C", help="this client's certificate")
    g.add_argument("--key", metavar="K", help="this client's private key")
    g.add_argument(
        "--server-name", metavar="NAME", help="name to expect in the server certificate (default: --host)"
    )
    g.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=float,
        default=10.0 if defaults else argparse.SUPPRESS,
        help="deadline for connecting and for get/version (default: 10)",
    )
    g.add_argument(
        "--output",
        choices=("text", "json"),
        default="text" if defaults else argparse.SUPPRESS,
        help="output format (default: text)",
    )
    return conn


def build_parser() -> argparse.ArgumentParser:
    conn = _connection_options(defaults=False)

    filters = argparse.ArgumentParser(add_help=False)
    f = filters.add_argument_group("filters (applied by the server)")
    f.add_argument("--min-priority", metavar="P", help="only this priority or more severe (e.g. warning)")
    f.add_argument("--rule", action="append", default=[], metavar="NAME", help="only this rule (repeatable)")
    f.add_argument(
        "--tag", action="append", default=[], metavar="TAG", help="only alerts with this tag (repeatable)"
    )
    f.add_argument(
        "--source", action="append", default=[], metavar="SRC", help="only this source (repeatable)"
    )
    f.add_argument(
        "--hostname", action="append", default=[], metavar="NAME",
        help="only alerts of this host (repeatable; a fleet aggregator serves many, a node only its own)",
    )
    f.add_argument("--count", metavar="N", type=_positive, help="stop after N alerts")

    parser = argparse.ArgumentParser(
        prog="falco-client",
        description="Read alerts from a Falconet server (or any Falco gRPC server).",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[_connection_options(defaults=True)],
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    s = sub.add_parser(
        "subscribe",
        parents=[conn, filters],
        help="stream alerts as they are published; reconnects and resumes",
        description="Stream alerts as they are published. If the connection is lost, reconnect with back-off and "
        "resume after the last alert received.",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument(
        "--from",
        dest="start",
        default="now",
        metavar="oldest|now|CURSOR",
        help="where to start (default: now)",
    )
    s.add_argument("--batched", action="store_true", help="use Falconet's batched stream (faster)")
    g2 = sub.add_parser(
        "get",
        parents=[conn, filters],
        help="print the retained alerts and exit",
        description="Print the alerts the server retains (from --from on) and exit. Reads without consuming.",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    g2.add_argument(
        "--from",
        dest="start",
        default="oldest",
        metavar="oldest|now|CURSOR",
        help="where to start (default: oldest)",
    )
    sub.add_parser(
        "version",
        parents=[conn],
        help="print the server's version",
        description="Print the server's version and its rules-engine version.",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parser


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, not {text!r}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # grpc's core logs handshake failures itself, to stderr; we explain them in one sentence instead.
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_EscapingFormatter("falco-client: %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    try:
        return _run(args)
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): not an error; keep Python from complaining at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _run(args: argparse.Namespace) -> int:
    from falconet.sdk.client import Client
    from falconet.sdk.errors import FalconetError

    try:
        client = Client(
            unix_socket=args.unix_socket,
            host=args.host,
            port=args.port,
            ca=args.ca,
            cert=args.cert,
            key=args.key,
            server_name=args.server_name,
            timeout=args.timeout,
        )
    except FalconetError as exc:
        return _fail(str(exc))
    try:
        with client:
            if args.command == "version":
                return _version(client, args.output)
            return _alerts(client, args)
    except FalconetError as exc:
        return _fail(str(exc))


def _fail(message: str) -> int:
    from falconet.model.text import escape_controls

    print(f"falco-client: error: {escape_controls(message)}", file=sys.stderr)  # may quote the server
    return 1


class _EscapingFormatter(logging.Formatter):
    """Diagnostics quote what a server sent (error details, rule names): one line each, no raw controls."""

    def format(self, record: logging.LogRecord) -> str:
        from falconet.model.text import escape_controls

        return escape_controls(super().format(record))


def _version(client: Client, output: str) -> int:
    import dataclasses

    v = client.version()
    if output == "json":
        print(json.dumps(dataclasses.asdict(v)), flush=True)
    else:
        from falconet.model.text import escape_controls

        text = f"server {v.version} (rules engine {v.engine_version or v.engine_minor})"
        print(escape_controls(text), flush=True)
    return 0


def _alerts(client: Client, args: argparse.Namespace) -> int:
    filters = {
        "min_priority": args.min_priority,
        "rules": args.rule,
        "tags": args.tag,
        "sources": args.source,
        "hosts": args.hostname,
    }
    alerts: Iterable[Alert]
    if args.command == "subscribe":
        alerts = client.subscribe(**filters, start=args.start, batched=args.batched)
    else:
        alerts = client.get(**filters, start=args.start)
    limit: int | None = args.count
    printed = 0
    for alert in alerts:
        print(_render(alert, args.output), flush=True)
        printed += 1
        if limit is not None and printed >= limit:
            break
    return 0


def _render(alert: Alert, output: str) -> str:
    """One line per alert, whatever the alert holds: the canonical alert JSON (docs/alert-json.md), or Falco's
    text form with every control character escaped visibly (a monitored process chose that text)."""
    if output == "json":
        return alert.to_json_line()
    from falconet.model.alert import format_time
    from falconet.model.text import escape_controls

    # Falco's text form ("<time>: <Priority> <output>"), the container and pod the alert came from (the
    # daemon's append_output puts them in output_fields only), and the cursor to resume from with --from.
    cursor = f"  [{alert.cursor}]" if alert.cursor is not None else ""
    line = f"{format_time(alert.time_ns)}: {alert.priority.falco_name} {alert.output}{_where(alert)}{cursor}"
    return escape_controls(line)


_WHERE = (("container.id", "container_id"), ("container.name", "container_name"),
          ("container.image.repository", "container_image"), ("container.image.tag", "container_image_tag"),
          ("k8s.ns.name", "k8s_ns"), ("k8s.pod.name", "k8s_pod"))


def _where(alert: Alert) -> str:
    """` container_id=... container_name=... ...` for an alert from a container (Falco's -pc/-pk names), for
    the identity fields present in output_fields and not already written in the output line."""
    fields = alert.output_fields
    cid = fields.get("container.id")
    if cid in (None, "host"):
        return ""
    parts = []
    for key, label in _WHERE:
        value = fields.get(key)
        if value is not None and f"{label}=" not in alert.output:
            parts.append(f"{label}={value}")
    return " " + " ".join(parts) if parts else ""
