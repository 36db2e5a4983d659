"""`falconet serve` (the alert server and hub alone) and `falconet publish` (alert JSON lines into the hub).

These run before, and beside, the rule engine: `serve` is the daemon's server without the sensor, and `publish`
feeds it from anything that can print alert JSON. Heavy imports stay inside the functions so `falconet --help`
is fast.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from falconet.server.config import ServerConfig
    from falconet.server.console.config import ConsoleConfig
    from falconet.server.publish_lines import PublishLog

SERVE_EXAMPLES = """\
examples:
  falconet serve                                   # UNIX socket /run/falconet/falconet.sock only
  falconet certs init --dir /etc/falconet/certs
  falconet serve --listen unix:///run/falconet/falconet.sock --listen 0.0.0.0:5060 --certs /etc/falconet/certs
  kill -HUP $(pidof -s falconet)                   # re-read the certificates and the CRL; open streams
                                                   # continue, except those of revoked certificates
"""

PUBLISH_EXAMPLES = """\
examples:
  echo '{"rule":"Test","priority":"Warning","output":"hello","time":"2024-01-01T00:00:00.000000000Z"}' \\
      | falconet publish
  falconet publish --unix-socket /tmp/f.sock < alerts.jsonl
  falconet publish --host falconet.example --port 5060 --cert c.crt --key c.key --ca ca.crt < alerts.jsonl
"""


def register(sub: Any) -> None:
    """Declares `serve` and `publish` and their options.

    One flat function on purpose: it reads top to bottom in the order of the commands' --help, and splitting
    it would only scatter that list.
    """
    serve = sub.add_parser(
        "serve",
        help="run the alert server and hub alone (no sensor, no rules)",
        description="Runs the gRPC alert server (Falco-compatible outputs/version, Falconet's batched alerts and "
        "inputs) over UNIX sockets and mTLS TCP. Prints 'listening on ADDR' per address once ready. SIGHUP "
        "re-reads the certificate files without dropping open streams; SIGTERM or Ctrl-C stops it.",
        epilog=SERVE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument(
        "--listen",
        action="append",
        metavar="ADDR",
        help="unix:///PATH or HOST:PORT (TCP is always mTLS; Falco's port is 5060); repeatable "
        "(default: unix:///run/falconet/falconet.sock)",
    )
    serve.add_argument(
        "--certs", type=Path, metavar="DIR", help="directory with ca.crt, server.crt, server.key"
    )
    serve.add_argument("--ca", type=Path, help="CA certificate (overrides DIR/ca.crt)")
    serve.add_argument("--cert", type=Path, help="server certificate (overrides DIR/server.crt)")
    serve.add_argument("--key", type=Path, help="server key (overrides DIR/server.key)")
    serve.add_argument("--retention", type=int, default=10_000, help="alerts the hub retains (default 10000)")
    serve.add_argument(
        "--unix-mode", type=lambda s: int(s, 8), default=0o660, help="socket mode, octal (0660)"
    )
    serve.add_argument("--unix-group", help="group owning the UNIX socket (default: the server's)")
    serve.add_argument(
        "--store",
        type=Path,
        metavar="FILE",
        help="persistent alert store (SQLite), e.g. /var/lib/falconet/alerts.db: alerts and cursors survive a "
        "crash or restart (default: none, memory only; `falconet run` uses its config's alert_store)",
    )
    serve.add_argument(
        "--store-sync",
        choices=("normal", "full"),
        default="normal",
        help="normal: durable against a crash of the server; full: also against power loss (slower)",
    )
    serve.add_argument("--store-max-alerts", type=int, default=1_000_000, metavar="N",
                       help="alerts the store keeps (default 1000000; 0 = no count limit)")
    serve.add_argument("--store-max-bytes", type=int, default=1 << 30, metavar="BYTES",
                       help="alert bytes the store keeps (default 1 GiB; 0 = no byte limit)")
    serve.add_argument("--store-max-age", type=float, default=7 * 86400.0, metavar="SECONDS",
                       help="seconds the store keeps an alert (default 7 days; 0 = no age limit)")
    serve.add_argument(
        "--allow-input-cn",
        action="append",
        default=[],
        metavar="CN",
        help="client certificate Common Name allowed to publish alerts over TCP (repeatable)",
    )
    serve.add_argument(
        "--crl", type=Path, help="revoked client certificates (default: crl.pem next to the CA certificate)"
    )
    serve.add_argument("--nats-output", type=Path, metavar="FILE",
                       help="forward every alert to NATS JetStream as configured by the nats_output block of this "
                       "YAML file (the falconet.yaml keys; docs/fleet.md)")
    serve.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE",
                       help="set a grpc.* or alert_store.* key of the daemon's configuration, as Falco's -o "
                       "(e.g. grpc.retention=50000); repeatable; applied after the flags")
    _limit_arguments(serve)
    _console_arguments(serve)
    serve.set_defaults(func=run_serve)

    pub = sub.add_parser(
        "publish",
        help="publish alert JSON lines from stdin through the server's input service",
        description="Reads one alert JSON object per line on stdin (docs/alert-json.md) and publishes each "
        "through falconet.v1.InputService, in requests of about 1 MiB. A line that cannot be published (not "
        "UTF-8, not JSON, not a valid alert, refused by the input checks, or over the size limit) is reported "
        "with its line number and skipped; every other line is still published (exit status 1 if any line "
        "was skipped).",
        epilog=PUBLISH_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    pub.add_argument("--unix-socket", default="/run/falconet/falconet.sock", help="server socket path")
    pub.add_argument("--host", help="connect over mTLS to this host instead of the UNIX socket")
    pub.add_argument("--port", type=int, default=5060)
    pub.add_argument("--cert", type=Path, help="client certificate (its CN must be allow-listed)")
    pub.add_argument("--key", type=Path, help="client key")
    pub.add_argument("--ca", type=Path, help="CA certificate")
    pub.add_argument(
        "--timeout", type=float, default=10.0, help="seconds to wait for the server (default 10)"
    )
    pub.set_defaults(func=run_publish)


def _console_arguments(serve: Any) -> None:
    group = serve.add_argument_group("web console", "the alerts in a browser (docs/web-console.md); off unless --console")
    group.add_argument("--console", metavar="HOST:PORT",
                       help="serve the web console here: plain HTTP on loopback, HTTPS with the --certs files otherwise")
    group.add_argument("--console-token-file", type=Path, metavar="FILE",
                       help="bearer token a browser (or its proxy) must send")
    group.add_argument("--console-allow-cn", action="append", default=[], metavar="CN",
                       help="client certificate Common Name (signed by the --certs CA) that may read it; repeatable")


def console_config_from_args(args: argparse.Namespace) -> ConsoleConfig:
    """The web console's settings from `serve`'s options (the CA, certificate and key are the gRPC server's)."""
    from falconet.server.console.config import ConsoleConfig, is_loopback

    host, _, port = str(args.console).rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit():
        raise ValueError(f"--console {args.console!r}: expected HOST:PORT")
    certs: Path | None = args.certs
    tls = not is_loopback(host) or bool(args.console_allow_cn)
    ca = args.ca or (certs / "ca.crt" if certs else None)
    return ConsoleConfig(
        enabled=True,
        listen_address=host,
        listen_port=int(port),
        cert_chain=(args.cert or (certs / "server.crt" if certs else None)) if tls else None,
        private_key=(args.key or (certs / "server.key" if certs else None)) if tls else None,
        client_ca=ca if args.console_allow_cn else None,
        allowed_common_names=frozenset(args.console_allow_cn),
        crl=args.crl,
        token_file=args.console_token_file,
    )


def _limit_arguments(serve: Any) -> None:
    from falconet.server.limits import Limits

    d = Limits()
    group = serve.add_argument_group("limits", "what unauthenticated or single clients may hold (docs/server.md)")
    group.add_argument("--handshake-timeout", type=float, default=d.handshake_timeout, metavar="SECONDS",
                       help=f"seconds a TCP connection has to complete TLS (default {d.handshake_timeout:g})")
    group.add_argument("--max-connections", type=int, default=d.max_connections, metavar="N",
                       help=f"TCP connections at once, lowered to fit the open-files limit (default {d.max_connections})")
    group.add_argument("--max-streams-per-connection", type=int, default=d.max_streams_per_connection, metavar="N",
                       help=f"concurrent calls on one connection (default {d.max_streams_per_connection})")
    group.add_argument("--max-subscriptions-per-identity", type=int, default=d.max_subscriptions_per_identity,
                       metavar="N", help="open subscriptions per client certificate "
                       f"(default {d.max_subscriptions_per_identity})")
    group.add_argument("--max-calls", type=int, default=d.max_calls, metavar="N",
                       help=f"calls at once on the UNIX socket, and separately over TCP (default {d.max_calls})")


def _server_config(args: argparse.Namespace) -> ServerConfig:
    from falconet.server.config import DEFAULT_LISTEN, ServerConfig
    from falconet.server.limits import Limits
    from falconet.server.store_schema import StoreConfig

    certs: Path | None = args.certs
    ca = args.ca or (certs / "ca.crt" if certs else None)
    cert = args.cert or (certs / "server.crt" if certs else None)
    key = args.key or (certs / "server.key" if certs else None)
    return ServerConfig(
        listen=tuple(args.listen or [DEFAULT_LISTEN]),
        tls_ca=ca,
        tls_cert=cert,
        tls_key=key,
        unix_mode=args.unix_mode,
        unix_group=args.unix_group,
        input_allow_cns=frozenset(args.allow_input_cn),
        retention=args.retention,
        store=StoreConfig(
            path=args.store.absolute() if args.store else None,
            synchronous=args.store_sync,
            max_alerts=args.store_max_alerts,
            max_bytes=args.store_max_bytes,
            max_age_s=args.store_max_age,
        ),
        tls_crl=args.crl,
        limits=Limits(
            handshake_timeout=args.handshake_timeout,
            max_connections=args.max_connections,
            max_streams_per_connection=args.max_streams_per_connection,
            max_subscriptions_per_identity=args.max_subscriptions_per_identity,
            max_calls=args.max_calls,
        ),
    )


def run_serve(args: argparse.Namespace) -> int:
    import asyncio
    import signal

    from falconet.certs.errors import CertError as CertificateError
    from falconet.server.app import AlertServer
    from falconet.server.config import ConfigError
    from falconet.server.console.app import WebConsole
    from falconet.server.overrides import OverrideError, parse_all
    from falconet.server.overrides_serve import with_overrides

    try:
        nats_output = None
        if args.nats_output is not None:
            from falconet.server.fleet.output_config import load_nats_output

            nats_output = load_nats_output(args.nats_output)
        config = _server_config(args)
        if args.option:
            config = with_overrides(config, parse_all(args.option))
        server = AlertServer(config)
        console = WebConsole(console_config_from_args(args), server.hub) if args.console else None
    except (ConfigError, CertificateError, OverrideError, ValueError) as exc:  # ValueError: ConsoleConfigError
        print(f"falconet serve: {exc}", file=sys.stderr)
        return 2

    async def main() -> int:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()

        def reload() -> None:
            try:
                server.reload_certificates()
            except (ConfigError, CertificateError) as exc:
                print(f"falconet serve: certificates not reloaded: {exc}", file=sys.stderr, flush=True)
            else:
                print("certificates reloaded (and the CRL)", flush=True)
            if console is not None:
                console.reload_soon()

        loop.add_signal_handler(signal.SIGHUP, reload)
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        try:
            bound = await server.start()
        except (ConfigError, RuntimeError, OSError) as exc:
            print(f"falconet serve: {exc}", file=sys.stderr)
            return 2
        for address in bound:
            print(f"listening on {address}", flush=True)
        if console is not None:
            try:
                print(f"web console on {await console.start()}", flush=True)
            except OSError as exc:
                print(f"falconet serve: the web console cannot listen: {exc}", file=sys.stderr)
                await server.stop(0)
                return 2
        forwarder = None
        if nats_output is not None and nats_output.enabled:  # the hub is its spool (server/fleet/output.py)
            from falconet.server.fleet.output_start import start_forwarder

            forwarder = start_forwarder(nats_output, server.hub, report=server.hub.publish,
                                        log=lambda m: print(f"falconet serve: {m}", file=sys.stderr, flush=True))
        await stop.wait()
        if forwarder is not None:
            await forwarder.close()
        if console is not None:
            await console.stop()
        await server.stop(2.0)
        return 0

    return asyncio.run(main())


def run_publish(args: argparse.Namespace) -> int:
    import grpc

    from falconet.sdk.api.falconet.v1 import inputs_pb2_grpc

    if args.host:
        missing = [
            flag for flag, v in (("--cert", args.cert), ("--key", args.key), ("--ca", args.ca)) if v is None
        ]
        if missing:
            print(f"falconet publish: --host needs mTLS files: give {', '.join(missing)}", file=sys.stderr)
            return 2
        try:
            creds = grpc.ssl_channel_credentials(
                args.ca.read_bytes(), args.key.read_bytes(), args.cert.read_bytes()
            )
        except OSError as exc:
            print(f"falconet publish: cannot read {exc.filename}: {exc.strerror}", file=sys.stderr)
            return 2
        target = f"{args.host}:{args.port}"
        channel = grpc.secure_channel(target, creds)
    else:
        target = f"unix://{args.unix_socket}"
        channel = grpc.insecure_channel(target)

    from falconet.server.publish_lines import PublishLog, publish_requests

    log = PublishLog()
    requests = publish_requests(sys.stdin.buffer, log)

    with channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=args.timeout)
        except grpc.FutureTimeoutError:
            print(
                f"falconet publish: cannot connect to {target} (is `falconet serve` running?)",
                file=sys.stderr,
            )
            return 2
        try:
            reply = inputs_pb2_grpc.InputServiceStub(channel).Publish(requests)
        except grpc.RpcError as exc:
            reason = _name_line(exc.details() or "", log)
            print(f"falconet publish: {target}: {exc.code().name}: {reason}", file=sys.stderr)
            return 1
    last = f", last cursor {reply.last.epoch}:{reply.last.sequence}" if reply.HasField("last") else ""
    bad = log.skipped
    print(
        f"published {reply.accepted} alerts{last}" + (f"; {bad} lines skipped" if bad else ""),
        file=sys.stderr,
    )
    return 1 if bad else 0


def _name_line(details: str, log: PublishLog) -> str:
    """The server's refusal, with "alert K of the stream" given its line number (the checks here are the
    server's, so this happens only with a server whose checks differ; later lines were not published)."""
    import re

    m = re.match(r"alert (\d+) of the stream: (.*)", details)
    if m is None or not 0 < int(m.group(1)) <= len(log.sent_lines):
        return details
    line = log.sent_lines[int(m.group(1)) - 1]
    return f"line {line}: refused by the server: {m.group(2)}; later lines were not published"
