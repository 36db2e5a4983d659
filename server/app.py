"""The alert server: a grpc.aio server that exposes one hub over any mix of UNIX sockets and mTLS TCP ports.

It serves Falco's `falco.outputs`/`falco.version` services (so Falco's clients work unchanged), Falconet's
batched `AlertService` and `InputService`, gRPC health and reflection. `start()` returns the bound addresses
(TCP port 0 resolved) so tests and `falconet serve` can say exactly where it listens; `reload_certificates()`
swaps the TLS files for new handshakes while open streams continue, and re-reads the CRL, ending the revoked
certificates' open streams. The UNIX sockets and the TCP ports are served by two gRPC servers (one hub), so
each has its own call limit and a TCP flood cannot take the local clients' share (`falconet.server.limits`).
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import logging
import os
import socket
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from falconet.certs.errors import CertError
from falconet.server.config import ConfigError, Listen, ServerConfig
from falconet.server.conn_watch import ConnectionWatch
from falconet.server.guard import CallGuard, RevocationList
from falconet.server.hub import Hub
from falconet.server.limits import fd_budget, server_options
from falconet.server.services_falco import OUTPUTS_SERVICE, VERSION_SERVICE, FalcoOutputs, FalcoVersion
from falconet.server.services_falconet import ALERT_SERVICE, INPUT_SERVICE, AlertService, InputService
from falconet.server.store import AlertStore, hub_with_store
from falconet.server.tls import ReloadableServerCredentials, ServerTLSFiles
from falconet.server.unix_dir import prepare_socket_directory

log = logging.getLogger("falconet.server")

__all__ = ["AlertServer", "ServerConfig", "ConfigError"]

# Reflection serves these from the default descriptor pool, which the services' generated modules fill.
_SERVICE_NAMES = (OUTPUTS_SERVICE, VERSION_SERVICE, ALERT_SERVICE, INPUT_SERVICE)


class AlertServer:
    """Serves `hub` (a new one sized by the config when not given) on every configured address."""

    def __init__(self, config: ServerConfig, hub: Hub | None = None) -> None:
        self.listens: list[Listen] = config.validate()
        self.config = config
        # The persistent store (when configured) belongs to the server only when the server makes the hub; the
        # daemon makes its own hub and store and passes the hub in.
        self.store: AlertStore | None = None
        if hub is None:
            hub, self.store = hub_with_store(config.store, config.retention, config.hostname)
        self.hub: Hub = hub
        self._tls: ReloadableServerCredentials | None = None
        revocations: RevocationList | None = None
        if config.tls_ca is not None and config.tls_cert is not None and config.tls_key is not None:
            # Load and check the files now, so a bad file is reported before anything binds.
            self._tls = ReloadableServerCredentials(
                ServerTLSFiles(config.tls_ca, config.tls_cert, config.tls_key)
            )
            crl = config.crl_path
            assert crl is not None
            revocations = RevocationList(crl, config.tls_ca)
        limits = config.limits
        self.guard = CallGuard(revocations, limits.max_subscriptions_per_identity, limits.max_calls)
        self.unix_guard = CallGuard(None, limits.max_subscriptions_per_identity, limits.max_calls)
        """Malformed requests only: UNIX-socket calls carry no certificate and no per-identity cap applies."""
        self._servers: list[grpc.aio.Server] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watch: asyncio.Task[None] | None = None
        self.connection_watch: ConnectionWatch | None = None
        self._services: dict[str, dict[str, grpc.RpcMethodHandler[Any, Any]]] | None = None
        self._unix_paths: list[Path] = []
        self.addresses: list[str] = []
        self.health = health_aio.HealthServicer()

    async def start(self) -> list[str]:
        """Binds every address and starts serving; returns the bound addresses (`unix:///...`, `HOST:PORT`)."""
        limits = self.config.limits
        unix = tcp = None
        tcp_connections = 0
        if any(item.is_unix for item in self.listens):
            unix = self._new_server(server_options(limits, tcp_connections=None), (self.unix_guard,))
        if any(not item.is_unix for item in self.listens):
            budget = fd_budget(limits)
            tcp_connections = budget.tcp_connections
            if budget.lowered:
                log.warning(
                    "TCP connections limited to %d (not %d): the process may open %d files and keeps some "
                    "for the UNIX socket's clients; raise LimitNOFILE to allow more",
                    tcp_connections, limits.max_connections, budget.nofile,
                )
            tcp = self._new_server(server_options(limits, tcp_connections=tcp_connections), (self.guard,))
        bound: list[str] = []
        tcp_ports: set[int] = set()
        for item in self.listens:
            if item.unix_path is not None:
                assert unix is not None
                self._prepare_unix(item.unix_path)
                unix.add_insecure_port(f"unix:{item.unix_path}")
                bound.append(item.address)
            else:
                assert self._tls is not None and tcp is not None  # validate() guarantees TLS files for TCP
                try:
                    port = tcp.add_secure_port(item.address, self._tls.credentials())
                except RuntimeError as exc:
                    raise ConfigError(f"cannot listen on {item.address!r}: {exc}") from None
                tcp_ports.add(port)
                host = item.host if ":" not in item.host else f"[{item.host}]"
                bound.append(f"{host}:{port}")
        self._servers = [server for server in (unix, tcp) if server is not None]
        for server in self._servers:
            await server.start()
        self._loop = asyncio.get_running_loop()
        if self.store is not None:
            self.store.start(self.hub)
        for path in self._unix_paths:
            self._secure_unix(path)
        for name in ("", *_SERVICE_NAMES):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        if tcp_ports:
            self.connection_watch = ConnectionWatch(frozenset(tcp_ports), tcp_connections, limits.handshake_timeout)
            self._watch = asyncio.ensure_future(self.connection_watch.run())
        self.addresses = bound
        log.info("listening on %s", ", ".join(bound))
        return bound

    def _new_server(
        self, options: list[tuple[str, int]], interceptors: tuple[grpc.aio.ServerInterceptor, ...]
    ) -> grpc.aio.Server:
        """One gRPC server with every service, sharing the hub (and the services' state) with the other."""
        server = grpc.aio.server(
            options=options, interceptors=interceptors, maximum_concurrent_rpcs=self.config.limits.max_calls
        )
        for name, handlers in self._handlers().items():
            server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(name, handlers),))
            server.add_registered_method_handlers(name, handlers)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (
                *_SERVICE_NAMES,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            server,
        )
        return server

    def _handlers(self) -> dict[str, dict[str, grpc.RpcMethodHandler[Any, Any]]]:
        if self._services is None:
            self._services = {
                OUTPUTS_SERVICE: FalcoOutputs(self.hub).handlers(),
                VERSION_SERVICE: FalcoVersion().handlers(),
                ALERT_SERVICE: AlertService(self.hub, self.config.max_batch).handlers(),
                INPUT_SERVICE: InputService(self.hub, self.config.input_allow_cns).handlers(),
            }
        return self._services

    def _prepare_unix(self, path: Path) -> None:
        prepare_socket_directory(path)
        if path.is_symlink():  # issue 10 defect 8: dangling or not, never bind or unlink through a link
            raise ConfigError(
                f"cannot listen on unix://{path}: it is a symbolic link (to {os.readlink(path)!r}); "
                "remove it or listen on another path"
            )
        if path.is_socket():
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(str(path))
            except OSError:
                path.unlink()  # left by a run that did not stop cleanly: nobody answers on it
            else:
                raise ConfigError(f"cannot listen on unix://{path}: another server is listening on it")
            finally:
                probe.close()
        elif path.exists():
            raise ConfigError(f"cannot listen on unix://{path}: a file that is not a socket is in the way")
        self._unix_paths.append(path)

    def _secure_unix(self, path: Path) -> None:
        os.chmod(path, self.config.unix_mode)
        group = self.config.unix_group
        if group is not None:
            gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
            os.chown(path, -1, gid)

    def reload_certificates(self) -> None:
        """Re-reads the CRL (ending revoked certificates' open calls) and the TLS files for new connections;
        other open streams keep going. Raises CertError if the CRL cannot be trusted or the new files do not
        fit together (the old ones stay in use). Callable from any thread (the daemon reloads in a worker)."""
        if self._tls is None:
            raise ConfigError("this server has no TLS files to reload (it listens on UNIX sockets only)")
        crl_error: Exception | None = None
        try:
            self.guard.load_crl()
        except Exception as exc:  # noqa: BLE001 - reported after the TLS files are reloaded too
            crl_error = exc
        self._on_loop(self.guard.cut_revoked)
        self._tls.reload()
        log.info("certificates reloaded from %s", self._tls.files.cert)
        if crl_error is not None:
            raise CertError(f"{crl_error}; the previous revocation list stays in force") from None

    def _on_loop(self, fn: Any) -> None:
        loop = self._loop
        if loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            fn()
        else:
            loop.call_soon_threadsafe(fn)

    @property
    def certificate_reloads(self) -> int:
        return self._tls.reloads if self._tls is not None else 0

    async def stop(self, grace: float | None = 1.0) -> None:
        """Stops accepting calls, lets running calls finish for `grace` seconds, then cancels them."""
        if not self._servers:
            return
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
            self._watch = None
        await self.health.enter_graceful_shutdown()
        servers, self._servers = self._servers, []
        await asyncio.gather(*(server.stop(grace) for server in servers))
        if self.store is not None:
            await asyncio.to_thread(self.store.close)
        for path in self._unix_paths:
            try:
                path.unlink()
            except FileNotFoundError:
                pass

    async def wait_for_termination(self) -> None:
        if self._servers:
            await asyncio.gather(*(server.wait_for_termination() for server in self._servers))
