"""`falconet certs init|client|inspect|revoke`: bootstrap and check the mTLS material without openssl incantations."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

DEFAULT_DIR = Path("/etc/falconet/certs")

_EPILOG = """\
examples:
  falconet certs init --dir /etc/falconet/certs
      a CA, server.crt for localhost, 127.0.0.1, ::1 and this host's name, and client.crt
  falconet certs init --dir ./certs --san falconet.example.com --san 10.0.0.7 --days 365
      also valid for the name and address clients will dial; leaves valid for a year
  falconet certs client publisher --dir ./certs
      another client certificate (publisher.crt, publisher.key) from the same CA
  falconet certs inspect ./certs/server.crt --ca ./certs/ca.crt
      subject, SANs, usage, validity, and whether it chains to the CA (exit status 1 if not)
  falconet certs revoke publisher --dir ./certs
      add publisher.crt to ./certs/crl.pem; the server refuses it from its next SIGHUP on
"""


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "certs",
        help="create and inspect mTLS certificates",
        description="Create a local CA with server and client certificates for Falconet's mTLS, and inspect them.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cmds = parser.add_subparsers(dest="certs_command", metavar="ACTION", required=True)

    init = cmds.add_parser(
        "init",
        help="write ca.crt/key, server.crt/key, client.crt/key",
        description="Write a new CA (ca.crt, ca.key), a server certificate (server.crt, server.key) and a "
        "client certificate (client.crt, client.key). Keys are written with mode 0600.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    init.add_argument(
        "--dir", type=Path, default=DEFAULT_DIR, help=f"output directory (default: {DEFAULT_DIR})"
    )
    init.add_argument(
        "--san",
        action="append",
        default=[],
        metavar="NAME_OR_IP",
        help="another host name or IP address for the server certificate (repeatable)",
    )
    init.add_argument(
        "--days", type=int, default=825, help="validity of the leaf certificates (default: 825)"
    )
    init.add_argument("--force", action="store_true", help="overwrite existing files (invalidates old certs)")
    init.set_defaults(func=_cmd_init)

    client = cmds.add_parser(
        "client",
        help="issue another client certificate from the CA",
        description="Issue NAME.crt and NAME.key from the CA in --dir; NAME is the Common Name and DNS SAN "
        "(what the server's input allow-list matches).",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    client.add_argument("name", metavar="NAME", help="client name: letters, digits, '.', '-', '_'")
    client.add_argument(
        "--dir", type=Path, default=DEFAULT_DIR, help=f"CA directory (default: {DEFAULT_DIR})"
    )
    client.add_argument("--days", type=int, default=825, help="validity (default: 825, capped at the CA's)")
    client.add_argument("--force", action="store_true", help="overwrite an existing NAME.crt / NAME.key")
    client.set_defaults(func=_cmd_client)

    inspect = cmds.add_parser(
        "inspect",
        help="print a certificate's names, usage and validity; check it against a CA",
        description="Print subject, SANs, extended key usage and validity (with a warning when it expires within "
        "30 days) and, with --ca, whether it chains to that CA. Exit status 1 if it is expired, not yet "
        "valid, or does not chain.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    inspect.add_argument("file", type=Path, metavar="FILE", help="certificate (PEM or DER)")
    inspect.add_argument("--ca", type=Path, help="CA certificate to check the chain against")
    inspect.set_defaults(func=_cmd_inspect)

    revoke = cmds.add_parser(
        "revoke",
        help="revoke a client certificate (writes the CA's CRL, DIR/crl.pem)",
        description="Add a certificate to DIR/crl.pem, a CRL signed by the CA in --dir. The server reads the CRL "
        "next to its CA certificate at start and on SIGHUP: every call from a revoked certificate is refused "
        "and its open streams end at the reload.",
        epilog="examples:\n  falconet certs revoke publisher --dir /etc/falconet/certs && systemctl reload falconet\n"
        "  falconet certs revoke 3f2a9c... --dir /etc/falconet/certs      # by serial (hex, as inspect prints)\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    revoke.add_argument("who", metavar="NAME|SERIAL", help="client name (NAME.crt in --dir) or hex serial")
    revoke.add_argument(
        "--dir", type=Path, default=DEFAULT_DIR, help=f"CA directory (default: {DEFAULT_DIR})"
    )
    revoke.set_defaults(func=_cmd_revoke)


def _fail(message: str) -> int:
    print(f"falconet certs: error: {message}", file=sys.stderr)
    return 1


def _cmd_init(args: argparse.Namespace) -> int:
    from falconet.certs.authority import init_certs
    from falconet.certs.errors import CertError

    try:
        paths = init_certs(args.dir, sans=args.san, days=args.days, force=args.force)
    except CertError as exc:
        return _fail(str(exc))
    except OSError as exc:
        return _fail(f"cannot write to {args.dir}: {exc.strerror or exc}")
    for path in paths.all():
        print(f"wrote {path}")
    d = args.dir
    print(
        "next:\n"
        f"  falconet serve --listen 0.0.0.0:5060 --certs {d}\n"
        f"  falco-client --host localhost --port 5060 --ca {d}/ca.crt --cert {d}/client.crt "
        f"--key {d}/client.key subscribe"
    )
    return 0


def _cmd_client(args: argparse.Namespace) -> int:
    from falconet.certs.authority import issue_client
    from falconet.certs.errors import CertError

    try:
        cert, key = issue_client(args.dir, args.name, days=args.days, force=args.force)
    except CertError as exc:
        return _fail(str(exc))
    except OSError as exc:
        return _fail(f"cannot write to {args.dir}: {exc.strerror or exc}")
    print(f"wrote {cert}\nwrote {key}")
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    from falconet.certs.errors import CertError
    from falconet.certs.inspect import inspect_certificate

    try:
        report = inspect_certificate(args.file, args.ca)
    except CertError as exc:
        return _fail(str(exc))
    print(report.render())
    return 0 if report.ok else 1


def _cmd_revoke(args: argparse.Namespace) -> int:
    from falconet.certs.errors import CertError
    from falconet.certs.revoke import revoke

    try:
        done = revoke(args.dir, args.who)
    except CertError as exc:
        return _fail(str(exc))
    except OSError as exc:
        return _fail(f"cannot write to {args.dir}: {exc.strerror or exc}")
    who = f"{done.subject} (serial {done.serial:x})" if done.subject else f"serial {done.serial:x}"
    state = "was already revoked" if done.already else "revoked"
    print(f"{who} {state}: wrote {done.crl}\nnext: reload the server (SIGHUP) to cut its open streams")
    return 0
