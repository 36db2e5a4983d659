"""The `web_console` block: where the console listens and who may read it, checked before anything binds.

    web_console:
      enabled: false               # off by default on a node
      listen_address: 127.0.0.1    # plain HTTP is allowed on loopback only
      listen_port: 9380
      cert_chain: certs/server.crt # HTTPS (required for any address other than loopback)
      private_key: certs/server.key
      client_ca: certs/ca.crt      # mutual TLS: client certificates signed by this CA...
      allowed_common_names: [ops]  # ...whose Common Name is listed here (required with client_ca)
      crl: certs/crl.pem           # revoked certificates (default: crl.pem beside client_ca)
      token_file: console.token    # or/and "Authorization: Bearer <the file's content>"
      backlog: 1000                # the newest matching alerts a page gets when it opens

Access is never weaker than the gRPC API's: a console without client certificates and without a token is
refused at start, and so is plain HTTP on any address other than loopback (a token sent in clear over a network
is no credential). The console is read-only whatever the credential.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from falconet.certs.revoke import CRL_FILE
from falconet.server.config_values import show

DEFAULT_PORT = 9380
DEFAULT_BACKLOG = 1000
MAX_BACKLOG = 10_000
_KNOWN = (
    "enabled", "listen_address", "listen_port", "cert_chain", "private_key", "client_ca",
    "allowed_common_names", "crl", "token_file", "backlog",
)  # fmt: skip


class ConsoleConfigError(ValueError):
    """A console configuration that must not serve; the message names the key and the fix."""


@dataclass(frozen=True, slots=True)
class ConsoleConfig:
    """Where the console listens and the credentials it accepts. `listen_port` 0 picks a free port (tests)."""

    enabled: bool = False
    listen_address: str = "127.0.0.1"
    listen_port: int = DEFAULT_PORT
    cert_chain: Path | None = None
    private_key: Path | None = None
    client_ca: Path | None = None
    allowed_common_names: frozenset[str] = frozenset()
    crl: Path | None = None
    token_file: Path | None = None
    backlog: int = DEFAULT_BACKLOG

    @property
    def tls(self) -> bool:
        return self.cert_chain is not None

    @property
    def crl_path(self) -> Path | None:
        """The CRL checked for client certificates: `crl`, or crl.pem beside the client CA."""
        if self.crl is not None:
            return self.crl
        return self.client_ca.with_name(CRL_FILE) if self.client_ca is not None else None

    @property
    def url(self) -> str:
        host = self.listen_address if ":" not in self.listen_address else f"[{self.listen_address}]"
        return f"{'https' if self.tls else 'http'}://{host}:{self.listen_port}/"

    def problems(self, where: str = "web_console") -> list[str]:
        """Every reason this configuration must not serve, each a sentence naming the key (empty: it may).
        `where` is the block's place in its file (`aggregate.web_console` in the aggregator's)."""
        out: list[str] = []
        if (self.cert_chain is None) != (self.private_key is None):
            out.append("web_console.cert_chain and web_console.private_key go together: set both for HTTPS.")
        if self.client_ca is not None and not self.tls:
            out.append("web_console.client_ca needs HTTPS: set web_console.cert_chain and web_console.private_key.")
        if self.client_ca is not None and not self.allowed_common_names:
            out.append(
                "web_console.client_ca needs web_console.allowed_common_names: the client certificates' Common "
                "Names that may read the console."
            )
        if self.allowed_common_names and self.client_ca is None:
            out.append("web_console.allowed_common_names needs web_console.client_ca (the CA that signs them).")
        if self.client_ca is None and self.token_file is None:
            out.append(
                "web_console has no access control: set web_console.client_ca with allowed_common_names (mutual "
                "TLS) or web_console.token_file (a bearer token); the console never serves alerts to anyone."
            )
        if not self.tls and not is_loopback(self.listen_address):
            out.append(
                f"web_console.listen_address {show(self.listen_address)} is not loopback: plain HTTP is only served on "
                "127.0.0.1 (or ::1); set web_console.cert_chain and web_console.private_key for HTTPS."
            )
        if not 0 <= self.listen_port <= 65535:
            out.append(f"web_console.listen_port must be a port number (0 to 65535), got {show(self.listen_port)}.")
        if not 0 <= self.backlog <= MAX_BACKLOG:
            out.append(f"web_console.backlog must be between 0 and {MAX_BACKLOG}, got {show(self.backlog)}.")
        for key, path in (
            ("cert_chain", self.cert_chain), ("private_key", self.private_key), ("client_ca", self.client_ca),
            ("token_file", self.token_file),
        ):  # fmt: skip
            if path is not None and not _is_file(path):
                out.append(f"web_console.{key} {show(str(path))} does not exist or is not a file.")
        return _placed(out, where)

    def check(self) -> None:
        """Raises ConsoleConfigError with every problem at once."""
        found = self.problems()
        if found:
            raise ConsoleConfigError(" ".join(found))


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except (OSError, ValueError):  # a NUL in the name, a name too long
        return False


def is_loopback(address: str) -> bool:
    """True for 127.0.0.0/8, ::1 and `localhost` (which resolves nowhere else on a sane host)."""
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False


def _placed(sentences: list[str], where: str) -> list[str]:
    """Sentences about `web_console.KEY` moved to the block's place in its file."""
    if where == "web_console":
        return sentences
    return [s.replace("web_console", where) for s in sentences]


def parse_web_console(
    data: object, resolve: Callable[[str], Path], *, enabled_default: bool = False, check: bool = True,
    where: str = "web_console",
) -> tuple[ConsoleConfig, list[str]]:
    """The block as read from a configuration file: (config, problems), each problem a sentence naming the key.

    `resolve` makes a path from the file relative to the file's directory. The aggregator passes
    `enabled_default=True` (on unless the block says otherwise) and `check=False` (it fills defaults from its
    own TLS files before `ConsoleConfig.problems`); a node leaves both, and an enabled block is checked here.
    """
    problems: list[str] = []
    d = ConsoleConfig(enabled=enabled_default)
    if data is None:
        return d, problems
    if not isinstance(data, Mapping):
        return d, _placed([f"web_console must be a mapping of keys to values ({', '.join(_KNOWN)})."], where)
    for key in data:
        if key not in _KNOWN:
            name = key if isinstance(key, str) and key.isprintable() and len(key) <= 60 else show(key)
            problems.append(f"web_console.{name} is not a known setting (known: {', '.join(_KNOWN)}).")

    def value(key: str, kind: type, expected: str, default: object) -> object:
        got = data.get(key, default)
        if got is None:
            return default
        if not isinstance(got, kind) or (kind is int and isinstance(got, bool)):
            problems.append(f"web_console.{key} must be {expected}, got {show(got)}.")
            return default
        return got

    def path(key: str) -> Path | None:
        got = value(key, str, "a file path", None)
        return resolve(got) if isinstance(got, str) and got else None

    names = data.get("allowed_common_names") or []
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        problems.append("web_console.allowed_common_names must be a list of certificate Common Names.")
        names = []
    config = ConsoleConfig(
        enabled=bool(value("enabled", bool, "true or false", d.enabled)),
        listen_address=str(value("listen_address", str, "an address", d.listen_address)),
        listen_port=int(value("listen_port", int, "a port number", d.listen_port)),  # type: ignore[call-overload]
        cert_chain=path("cert_chain"),
        private_key=path("private_key"),
        client_ca=path("client_ca"),
        allowed_common_names=frozenset(names),
        crl=path("crl"),
        token_file=path("token_file"),
        backlog=int(value("backlog", int, "a whole number", d.backlog)),  # type: ignore[call-overload]
    )
    if check and config.enabled:
        problems.extend(config.problems())
    return config, _placed(problems, where)
