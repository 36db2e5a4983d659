"""`falconet rules push` and `falconet rules pushed`: rules files to every node watching the bucket.

`push` reads the files once, loads them with the daemon's own loader (after any `--base` files, which are
loaded first for validation only, as a node's local files are) and refuses, with `rules validate`'s
file:line:column messages, anything that would not load; only then does it connect and publish the bytes it
validated as one version (server/fleet/rules_bundle.py). The publish is conditional on the revision it read, so
two people pushing at once cannot silently overwrite each other: the second is told to look and push again.
Registered under `falconet rules` by server/cli.py (rules/ may not import the server).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import socket
import sys
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nats.aio.client import Client as NatsClient

    from falconet.server.fleet.connection import NatsConnection
    from falconet.server.fleet.rules_bundle import RulesBundle, RulesFile

_EPILOG_PUSH = """examples:
  falconet rules push my_rules.yaml --name release-42 -c /etc/falconet/falconet.yaml   # its fleet_rules block
  falconet rules push rules.d/ --nats nats://nats-0:4222 --creds admin.creds
  falconet rules push overrides.yaml --base /etc/falconet/falco_rules.yaml -c falconet.yaml
"""
_EPILOG_PUSHED = """examples:
  falconet rules pushed -c /etc/falconet/falconet.yaml
"""


def register(rules_sub: Any) -> None:
    """Adds push and pushed to the `falconet rules` subcommands."""
    p = rules_sub.add_parser(
        "push",
        help="validate rules files and publish them to the fleet as one version",
        epilog=_EPILOG_PUSH,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="rules files (or directories of them), in load order")
    p.add_argument("--name", default="", help="a name for this version (shown by `rules pushed` and in metrics)")
    p.add_argument("--base", action="append", default=[], metavar="FILE",
                   help="files loaded before the pushed ones for validation only (the nodes' local rules)")
    p.add_argument("--force", action="store_true", help="push even if the bucket already holds these files")
    p.add_argument("--replicas", type=int, choices=range(1, 6), default=1, metavar="N",
                   help="replicas of the bucket when this push creates it (3 on a NATS cluster; default 1)")
    _connection_arguments(p)
    p.set_defaults(func=_push)

    p = rules_sub.add_parser("pushed", help="list the rules versions in the fleet's bucket", epilog=_EPILOG_PUSHED,
                             formatter_class=argparse.RawDescriptionHelpFormatter)
    _connection_arguments(p)
    p.set_defaults(func=_pushed)


def _connection_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", type=Path, help="a node's configuration file: its fleet_rules block")
    p.add_argument("--nats", action="append", default=[], metavar="URL", help="NATS server URL (repeatable)")
    p.add_argument("--creds", help="NATS credentials file")
    p.add_argument("--nkey", help="nkey seed file")
    p.add_argument("--user", help="user name (with --password-file)")
    p.add_argument("--password-file")
    p.add_argument("--token-file")
    p.add_argument("--tls-ca")
    p.add_argument("--tls-cert")
    p.add_argument("--tls-key")
    p.add_argument("--bucket", help="key-value bucket (default: the config's, else falconet_rules)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds for each NATS request (default 10)")
    p.add_argument("--retry-for", type=float, default=30.0, metavar="SECONDS",
                   help="how long to retry a NATS that does not answer, as during a leader election (default 30)")


# -- push ------------------------------------------------------------------------------------------------


def _push(args: argparse.Namespace) -> int:
    from falconet.server.fleet.rules_bundle import BundleError, RulesBundle

    try:
        files = _read_files(args.files)
        bases = _read_files(args.base) if args.base else []
    except ValueError as exc:
        print(f"falconet rules push: {exc}", file=sys.stderr)
        return 2
    if not _validate(bases, files):
        print("falconet rules push: refused; nothing was published", file=sys.stderr)
        return 1
    bundle = RulesBundle(files=tuple(f for _, f in files), name=args.name, pushed_by=_who(),
                         pushed_at_ns=time.time_ns())
    try:
        value = bundle.encode()
    except BundleError as exc:
        print(f"falconet rules push: refused: {exc}; nothing was published", file=sys.stderr)
        return 1
    target = _target(args)
    if target is None:
        return 2
    return _run(_publish(target, bundle, value, force=args.force, replicas=args.replicas), target)


def _read_files(given: list[str]) -> list[tuple[str, RulesFile]]:
    """(path as given, RulesFile) in order; a directory stands for its *.yaml/*.yml files by name."""
    from falconet.server.fleet.rules_bundle import RulesFile

    out: list[tuple[str, RulesFile]] = []
    for entry in given:
        path = Path(entry)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in (".yaml", ".yml"))
            if not found:
                raise ValueError(f"{entry}: no rules files (*.yaml, *.yml) in this directory")
            paths = found
        else:
            paths = [path]
        for p in paths:
            try:
                text = p.read_bytes().decode("utf-8")
            except OSError as exc:
                raise ValueError(f"{p}: {exc.strerror}") from None
            except UnicodeDecodeError as exc:
                raise ValueError(f"{p}: not UTF-8 text (byte {exc.start})") from None
            out.append((str(p), RulesFile(p.name, text)))
    return out


def _validate(bases: list[tuple[str, RulesFile]], files: list[tuple[str, RulesFile]]) -> bool:
    """The daemon's loader over base + pushed texts (named by their paths); prints every diagnostic."""
    from falconet.rules.engine import Engine
    from falconet.rules.errors import RulesLoadError

    try:
        engine = Engine.from_texts([(where, f.text) for where, f in bases + files])
    except RulesLoadError as exc:
        for diag in exc.result.diagnostics:
            print(diag.format(), file=sys.stderr)
        print(f"{', '.join(exc.result.files)}: {exc.result.summary()}", file=sys.stderr)
        return False
    for diag in engine.load_result.diagnostics:
        print(diag.format(), file=sys.stderr)
    print(f"{', '.join(where for where, _ in files)}: {engine.load_result.summary()}; "
          f"{len(engine.rules)} rules", file=sys.stderr)
    return True


async def _publish(target: _Target, bundle: RulesBundle, value: bytes, *, force: bool, replicas: int) -> int:
    """Publishes, retrying what a NATS cluster electing a stream leader answers (a timeout, no responders) for
    up to --retry-for seconds. A retry is safe: the write is conditional on the revision it read, and a write
    whose acknowledgement was lost shows up in the retry's read as `unchanged`."""
    from nats.errors import NoRespondersError, TimeoutError as NatsTimeout
    from nats.js.errors import ServiceUnavailableError

    nc = await _connect(target)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + target.retry_for
    pause = 0.25
    try:
        while True:
            try:
                return await _publish_once(nc, target, bundle, value, force=force, replicas=replicas)
            except (NatsTimeout, NoRespondersError, ServiceUnavailableError) as exc:
                if loop.time() + pause > deadline:
                    raise
                print(f"falconet rules push: NATS did not answer ({type(exc).__name__}); retrying",
                      file=sys.stderr)
                await asyncio.sleep(pause)  # back-off between attempts at a server-side operation
                pause = min(pause * 2, 4.0)
    finally:
        await nc.close()


async def _publish_once(nc: NatsClient, target: _Target, bundle: RulesBundle, value: bytes, *, force: bool,
                        replicas: int) -> int:
    from nats.js.errors import BucketNotFoundError, KeyNotFoundError, KeyWrongLastSequenceError

    from falconet.server.fleet.names import RULES_HISTORY, RULES_KEY, rules_version
    from falconet.server.fleet.rules_bundle import MAX_VALUE_BYTES, BundleError, RulesBundle

    js = nc.jetstream(timeout=target.timeout)
    try:
        kv = await js.key_value(target.bucket)
    except BucketNotFoundError:
        kv = await js.create_key_value(bucket=target.bucket, history=RULES_HISTORY, replicas=replicas,
                                       max_value_size=MAX_VALUE_BYTES,
                                       description="Falconet fleet rules (falconet rules push)")
    last = 0
    try:
        current = await kv.get(RULES_KEY)
        last = int(current.revision or 0)
        try:
            same = RulesBundle.decode(current.value or b"").digest == bundle.digest
        except BundleError:
            same = False
        if same and not force:
            print(f"unchanged: revision {last} already holds these files "
                  f"({rules_version(last, bundle.digest)}); --force pushes them again")
            return 0
    except KeyNotFoundError as exc:  # none yet, or deleted (then the next write must follow the marker)
        entry = getattr(exc, "entry", None)
        last = int(entry.revision) if entry is not None and entry.revision else 0
    try:
        revision = await kv.update(RULES_KEY, value, last=last)
    except KeyWrongLastSequenceError:
        print("falconet rules push: someone else pushed a version meanwhile; nothing was published. "
              "Look with `falconet rules pushed` and push again.", file=sys.stderr)
        return 1
    print(f"pushed {rules_version(revision, bundle.digest)}: {len(bundle.files)} files to bucket "
          f"{target.bucket} on {target.connection.describe()}")
    return 0


# -- pushed ----------------------------------------------------------------------------------------------


def _pushed(args: argparse.Namespace) -> int:
    target = _target(args)
    if target is None:
        return 2
    return _run(_list(target), target)


async def _list(target: _Target) -> int:
    from nats.js.errors import BucketNotFoundError, NoKeysError

    from falconet.server.fleet.names import RULES_KEY, rules_version
    from falconet.server.fleet.rules_bundle import BundleError, RulesBundle, shown

    nc = await _connect(target)
    try:
        js = nc.jetstream(timeout=target.timeout)
        try:
            kv = await js.key_value(target.bucket)
            entries = await kv.history(RULES_KEY)
        except (BucketNotFoundError, NoKeysError):
            print(f"no versions in bucket {target.bucket}")
            return 0
        for entry in entries:
            revision = int(entry.revision or 0)
            if entry.operation is not None:  # a delete or purge marker
                print(f"{revision}\t(withdrawn)")
                continue
            try:
                b = RulesBundle.decode(entry.value or b"")
            except BundleError as exc:
                print(f"{revision}\t(unreadable: {exc})")
                continue
            when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(b.pushed_at_ns / 1e9))
            names = ",".join(f.name for f in b.files)
            print(f"{rules_version(revision, b.digest)}\t{when}\t{shown(b.pushed_by)}\t{shown(b.name)}\t{names}")
        return 0
    finally:
        await nc.close()


# -- connection ------------------------------------------------------------------------------------------


class _Target:
    def __init__(self, connection: NatsConnection, bucket: str, timeout: float, retry_for: float) -> None:
        self.connection = connection
        self.bucket = bucket
        self.timeout = timeout
        self.retry_for = retry_for
        self.errors: list[BaseException] = []
        """What the server reported asynchronously (a permissions violation answers a request with nothing)."""


def _target(args: argparse.Namespace) -> _Target | None:
    """The connection from -c's fleet_rules block, or from the flags; problems printed, None returned."""
    import yaml

    from falconet.server.config_values import Problems, Section
    from falconet.server.fleet.connection import read_connection
    from falconet.server.fleet.names import RULES_BUCKET

    data: dict[str, Any] = {}
    base = Path.cwd()
    if args.config is not None:
        try:
            doc = yaml.safe_load(args.config.read_text(encoding="utf-8")) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            print(f"falconet rules: cannot read {args.config}: {exc}", file=sys.stderr)
            return None
        block = doc.get("fleet_rules") if isinstance(doc, dict) else None
        if not isinstance(block, dict):
            print(f"falconet rules: {args.config} has no fleet_rules block", file=sys.stderr)
            return None
        data = {k: v for k, v in block.items() if k not in ("enabled", "cache_dir", "check_interval")}
        base = args.config.resolve().parent
    flags = {"servers": args.nats or None, "credentials": args.creds, "nkey_seed": args.nkey, "user": args.user,
             "password_file": args.password_file, "token_file": args.token_file, "bucket": args.bucket}
    data.update({k: v for k, v in flags.items() if v})
    if args.tls_ca or args.tls_cert or args.tls_key:
        data["tls"] = {"ca": args.tls_ca, "cert": args.tls_cert, "key": args.tls_key}
    if args.config is None and not args.nats:
        print("falconet rules: give -c CONFIG (its fleet_rules block) or --nats URL", file=sys.stderr)
        return None
    problems = Problems(base)
    section = Section(data, "fleet_rules.", problems)
    connection = read_connection(section, name="falconet-rules-cli")
    bucket = section.string("bucket", RULES_BUCKET)
    if problems.problems:
        for p in problems.problems:
            print(f"falconet rules: {p}", file=sys.stderr)
        return None
    return _Target(connection, bucket, args.timeout, args.retry_for)


class NatsUnreachable(Exception):
    """No server of the list took the connection; the message is the last reason one gave."""


async def _connect(target: _Target) -> NatsClient:
    from nats.errors import NoServersError

    from falconet.server.fleet.connection import connect

    errors = target.errors

    async def remember(exc: Exception) -> None:  # nats-py's default prints a traceback per attempt
        errors.append(exc)

    # A command fails fast: each server tried twice (nats-py's count), then the last reason, not a retry loop.
    try:
        return await connect(target.connection, allow_reconnect=False, max_reconnect_attempts=1,
                             reconnect_time_wait=0.2, error_cb=remember)
    except NoServersError:
        last = f"{type(errors[-1]).__name__}: {errors[-1]}" if errors else "no server answered"
        raise NatsUnreachable(f"{target.connection.describe()}: {last}") from None


def _run(work: Coroutine[Any, Any, int], target: _Target) -> int:
    try:
        return int(asyncio.run(work))
    except Exception as exc:  # NATS unreachable, refused, timed out: one line, not a traceback
        from falconet.model.text import escape_controls

        text = str(exc) if isinstance(exc, NatsUnreachable) else f"{type(exc).__name__}: {exc}"
        if target.errors and not isinstance(exc, NatsUnreachable):  # e.g. a timeout that a refusal explains
            text += f" (the server said: {target.errors[-1]})"
        print(f"falconet rules: NATS: {escape_controls(text)[:400]}", file=sys.stderr)
        return 1


def _who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    who = f"{user}@{socket.gethostname()}"
    return "".join(ch for ch in who if ch.isprintable())[:128]
