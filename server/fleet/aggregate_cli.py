"""`falconet aggregate`: the command line over server/fleet/aggregate.py (flags override the file's keys)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

EXAMPLES = """\
examples:
  falconet aggregate -c /etc/falconet/aggregate.yaml
  falconet aggregate --servers nats://nats-0:4222 --listen 0.0.0.0:5060 --certs /etc/falconet/certs \\
      --listen unix:///run/falconet/aggregate.sock
  falco-client --unix-socket /run/falconet/aggregate.sock subscribe --hostname node-1
  curl http://127.0.0.1:9377/metrics    # also /healthz and /readyz (--metrics ADDR:PORT)
"""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "aggregate",
        help="serve every node's alerts from the fleet's JetStream stream (the node's gRPC API)",
        description="Reads the fleet's JetStream stream and serves it with the gRPC services a node serves "
        "(Falco's outputs and version, Falconet's batched stream), over UNIX sockets and mTLS TCP. Cursors are "
        "stream positions: any aggregator of the stream resumes any client. Prints 'listening on ADDR' per "
        "address once caught up (and 'metrics on URL' first); SIGTERM or Ctrl-C stops it.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-c", "--config", type=Path, metavar="FILE", help="YAML file with an `aggregate` block")
    p.add_argument("--servers", action="append", metavar="URL", help="NATS server URL (repeatable)")
    p.add_argument("--stream", help="JetStream stream name (default FALCONET_ALERTS)")
    p.add_argument("--subject-prefix", metavar="PREFIX", help="alert subject prefix (default falconet.alerts)")
    p.add_argument("--silence-timeout", type=float, metavar="SECONDS",
                   help="seconds without an alert or heartbeat before a node is reported silent (default 30)")
    p.add_argument("--listen", action="append", metavar="ADDR",
                   help="unix:///PATH or HOST:PORT (mTLS), repeatable (default unix:///run/falconet/aggregate.sock)")
    p.add_argument("--certs", type=Path, metavar="DIR", help="directory with ca.crt, server.crt, server.key")
    p.add_argument("--retention", type=int, metavar="N", help="alerts kept in memory (older: read from the stream)")
    p.add_argument("--hostname", help="name on the aggregator's own alerts (default: this host's)")
    p.add_argument("--metrics", metavar="ADDR:PORT",
                   help="where /metrics, /healthz and /readyz listen (default 127.0.0.1:9377; port 0: any free one)")
    p.add_argument("--no-metrics", action="store_true", help="no metrics and probe endpoint")
    web = p.add_argument_group("web console", "on by default with a credential (docs/web-console.md)")
    web.add_argument("--console", metavar="HOST:PORT", help="where the web console listens (default 127.0.0.1:9380)")
    web.add_argument("--console-token-file", type=Path, metavar="FILE", help="bearer token the console accepts")
    web.add_argument("--console-allow-cn", action="append", default=[], metavar="CN",
                     help="client certificate Common Name (signed by the gRPC CA) that may read it; repeatable")
    web.add_argument("--no-console", action="store_true", help="no web console")
    p.set_defaults(func=run_aggregate)


def _config(args: argparse.Namespace) -> Any:
    from falconet.server.errors import ConfigError
    from falconet.server.fleet.aggregate_config import AggregateConfig, load_aggregate

    cfg = load_aggregate(args.config) if args.config else AggregateConfig()
    if args.servers:
        cfg = replace(cfg, nats=replace(cfg.nats, servers=tuple(args.servers)))
    for flag, key in (("stream", "stream"), ("subject_prefix", "subject_prefix"),
                      ("silence_timeout", "silence_timeout"), ("hostname", "hostname")):
        value = getattr(args, flag)
        if value is not None:
            cfg = replace(cfg, **{key: value})
    grpc = cfg.grpc
    if args.listen:
        grpc = replace(grpc, bind_address=tuple(args.listen))
    if args.certs:
        grpc = replace(grpc, root_certs=args.certs / "ca.crt", cert_chain=args.certs / "server.crt",
                       private_key=args.certs / "server.key")
    if args.retention is not None:
        grpc = replace(grpc, retention=args.retention)
    metrics = cfg.metrics
    if args.metrics:
        address, _, port = args.metrics.rpartition(":")
        if not address or not port.isdigit() or int(port) > 65535:
            raise ConfigError([f"--metrics must be ADDR:PORT, got {args.metrics!r}."], source="the command line")
        metrics = replace(metrics, enabled=True, listen_address=address.strip("[]"), listen_port=int(port))
    if args.no_metrics:
        metrics = replace(metrics, enabled=False)
    from falconet.server.console.fleet import with_flags

    console, explicit = with_flags(cfg.web_console, cfg.web_console_explicit, address=args.console,
                                   token_file=args.console_token_file, allow_cns=args.console_allow_cn,
                                   off=args.no_console)  # fmt: skip
    return replace(cfg, grpc=grpc, metrics=metrics, web_console=console,
                   web_console_explicit=explicit)


def run_aggregate(args: argparse.Namespace) -> int:
    import asyncio
    import logging
    import signal

    from falconet.certs.errors import CertError
    from falconet.server.errors import ConfigError
    from falconet.server.fleet.aggregate import Aggregator

    logging.basicConfig(level=logging.INFO, format="falconet aggregate: %(message)s")
    try:
        aggregator = Aggregator(_config(args))
    except (ConfigError, CertError, ValueError) as exc:  # ValueError: ConsoleConfigError
        print(f"falconet aggregate: {exc}", file=sys.stderr)
        return 2

    async def main() -> int:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: _reload(aggregator))
        try:
            url = aggregator.serve_endpoint()
            if url is not None:
                print(f"metrics on {url}", flush=True)
            starting = asyncio.ensure_future(aggregator.start())
            stopping = asyncio.ensure_future(stop.wait())
            await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not starting.done():
                starting.cancel()
                await aggregator.stop()
                return 0
            bound = starting.result()
        except (ConfigError, CertError, RuntimeError, OSError) as exc:
            print(f"falconet aggregate: {exc}", file=sys.stderr)
            await aggregator.stop()
            return 2
        for address in bound:
            print(f"listening on {address}", flush=True)
        await stop.wait()
        await aggregator.stop(2.0)
        return 0

    return asyncio.run(main())


def _reload(aggregator: Any) -> None:
    """SIGHUP: the gRPC server's certificates and CRL (its revoked certificates' streams end), and the web
    console's CRL (its revoked certificates' streams end too); what cannot be reloaded is said and kept."""
    server, console = aggregator.server, aggregator.console
    if server is not None and server.config.tls_cert is not None:
        try:
            server.reload_certificates()
        except Exception as exc:  # noqa: BLE001 - ConfigError/CertError: the previous files stay in use
            print(f"falconet aggregate: certificates not reloaded: {exc}", file=sys.stderr, flush=True)
    if console is not None:
        console.reload_soon()
