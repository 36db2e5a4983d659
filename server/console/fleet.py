"""The console of `falconet aggregate`: on by default, yet never open to anyone who merely reaches it.

A node's console is off unless configured; the aggregator's is on, as the fleet's one place to look. "On"
cannot mean unauthenticated, so the aggregator's block (`aggregate.web_console`) takes its TLS files from the
aggregator's own gRPC ones when it names none (the same server certificate, and the same CA for client
certificates once `allowed_common_names` is set), and a console left on by default with neither allowed names
nor a token stays off, with a note saying what to set. Written out (`enabled: true`), the block must be
complete, as on a node.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path

from falconet.server.console.config import ConsoleConfig, parse_web_console

WHERE = "aggregate.web_console"


def settle(
    config: ConsoleConfig, *, explicit: bool, ca: Path | None, cert: Path | None, key: Path | None
) -> tuple[ConsoleConfig, list[str]]:
    """The aggregator's defaults applied (see the module doc): (config, notes)."""
    if config.cert_chain is None and config.private_key is None and cert is not None and key is not None:
        config = replace(config, cert_chain=cert, private_key=key)
    if config.client_ca is None and config.allowed_common_names and ca is not None:
        config = replace(config, client_ca=ca)
    if config.enabled and not explicit and config.client_ca is None and config.token_file is None:
        note = (
            f"the web console is off: it is on by default on an aggregator, but only with a credential; set "
            f"{WHERE}.allowed_common_names (client certificates of the gRPC CA) or {WHERE}.token_file "
            "(docs/web-console.md)"
        )
        return replace(config, enabled=False), [note]
    return config, []


def read_fleet_block(block: object, resolve: Callable[[str], Path]) -> tuple[ConsoleConfig, bool, list[str]]:
    """The aggregator file's block, unsettled: (config, written out as `enabled:`, problems of the block
    itself). `settle` runs once the command line has had its say on the TLS files."""
    config, problems = parse_web_console(block, resolve, enabled_default=True, check=False, where=WHERE)
    return config, isinstance(block, Mapping) and "enabled" in block, problems


def settled_or_error(
    config: ConsoleConfig, *, explicit: bool, ca: Path | None, cert: Path | None, key: Path | None
) -> tuple[ConsoleConfig, list[str]]:
    """`settle`, then ConsoleConfigError listing every problem of an enabled console."""
    from falconet.server.console.config import ConsoleConfigError

    config, notes = settle(config, explicit=explicit, ca=ca, cert=cert, key=key)
    if config.enabled:
        found = config.problems(WHERE)
        if found:
            raise ConsoleConfigError(" ".join(found))
    return config, notes


def with_flags(
    config: ConsoleConfig, explicit: bool, *, address: str | None, token_file: Path | None, allow_cns: list[str],
    off: bool,
) -> tuple[ConsoleConfig, bool]:
    """`falconet aggregate`'s --console, --console-token-file, --console-allow-cn and --no-console over the
    file's block; any of them makes the block explicit (it must then be complete)."""
    if off:
        return replace(config, enabled=False), True
    if address is None and token_file is None and not allow_cns:
        return config, explicit
    if address is not None:
        host, _, port = address.rpartition(":")
        if not port.isdigit():
            from falconet.server.console.config import ConsoleConfigError

            raise ConsoleConfigError(f"--console {address!r}: expected HOST:PORT")
        config = replace(config, listen_address=host.strip("[]") or "127.0.0.1", listen_port=int(port))
    if token_file is not None:
        config = replace(config, token_file=token_file)
    if allow_cns:
        config = replace(config, allowed_common_names=frozenset(allow_cns))
    return replace(config, enabled=True), True
