"""The alert server: a grpc.aio server that exposes one hub over any mix of UNIX sockets and mTLS TCP ports.

It serves Falco's `falco.outputs`/`falco.version` services (so Falco's clients work unchanged), Falconet's
batched `AlertService` and `InputService`, gRPC health and reflection. `start()` returns the bound addresses
(TCP port 0 resolved) so tests and `falconet serve` can say exactly where it listens; `reload_certificates()`
swaps the TLS files for new handshakes while open streams continue.
"""

from __future__ import annotations

import asyncio
import grp
import logging
import os
import socket
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from falconet.server.config import ConfigError, Listen, ServerConfig
from falconet.server.hub import Hub
from falconet.server.services_falco import OUTPUTS_SERVICE, VERSION_SERVICE, FalcoOutputs, FalcoVersion
from falconet.server.services_falconet import ALERT_SERVICE, INPUT_SERVICE, AlertService, InputService
from falconet.server.store import AlertStore, hub_with_store
from falconet.server.tls import ReloadableServerCredentials, ServerTLSFiles

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
        if config.tls_ca is not None and config.tls_cert is not None and config.tls_key is not None:
            # Load and check the files now, so a bad file is reported before anything binds.
            self._tls = ReloadableServerCredentials(
                ServerTLSFiles(config.tls_ca, config.tls_cert, config.tls_key)
            )
        self._server: grpc.aio.Server | None = None
        self._unix_paths: list[Path] = []
        self.addresses: list[str] = []
        self.health = health_aio.HealthServicer()

    async def start(self) -> list[str]:
        """Binds every address and starts serving; returns the bound addresses (`unix:///...`, `HOST:PORT`)."""
        server = grpc.aio.server(
            options=[
                ("grpc.so_reuseport", 0),
                # Subscribers idle for hours must not be dropped by middleboxes: ping, and accept client pings.
                ("grpc.keepalive_time_ms", 60_000),
                ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
                ("grpc.keepalive_permit_without_calls", 1),
            ]
        )
        outputs = FalcoOutputs(self.hub)
        services = {
            OUTPUTS_SERVICE: outputs.handlers(),
            VERSION_SERVICE: FalcoVersion().handlers(),
            ALERT_SERVICE: AlertService(self.hub, self.config.max_batch).handlers(),
            INPUT_SERVICE: InputService(self.hub, self.config.input_allow_cns).handlers(),
        }
        for name, handlers in services.items():
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
        bound: list[str] = []
        for item in self.listens:
            if item.unix_path is not None:
                self._prepare_unix(item.unix_path)
                server.add_insecure_port(f"unix:{item.unix_path}")
                bound.append(item.address)
            else:
                assert self._tls is not None  # validate() guarantees TLS files for TCP
                try:
                    port = server.add_secure_port(item.address, self._tls.credentials())
                except RuntimeError as exc:
                    raise ConfigError(f"cannot listen on {item.address!r}: {exc}") from None
                host = item.host if ":" not in item.host else f"[{item.host}]"
                bound.append(f"{host}:{port}")
        await server.start()
        self._server = server
        if self.store is not None:
            self.store.start(self.hub)
        for path in self._unix_paths:
            self._secure_unix(path)
        for name in ("", *_SERVICE_NAMES):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        self.addresses = bound
        log.info("listening on %s", ", ".join(bound))
        return bound

    def _prepare_unix(self, path: Path) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on unix://{path}: cannot create {str(path.parent)!r}: {exc.strerror}"
            ) from None
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
        """Re-reads the TLS files for new connections; open streams keep going. Raises CertificateError if the
        new files do not fit together (the old ones stay in use)."""
        if self._tls is None:
            raise ConfigError("this server has no TLS files to reload (it listens on UNIX sockets only)")
        self._tls.reload()
        log.info("certificates reloaded from %s", self._tls.files.cert)

    @property
    def certificate_reloads(self) -> int:
        return self._tls.reloads if self._tls is not None else 0

    async def stop(self, grace: float | None = 1.0) -> None:
        """Stops accepting calls, lets running calls finish for `grace` seconds, then cancels them."""
        if self._server is None:
            return
        await self.health.enter_graceful_shutdown()
        await self._server.stop(grace)
        self._server = None
        if self.store is not None:
            await asyncio.to_thread(self.store.close)
        for path in self._unix_paths:
            try:
                path.unlink()
            except FileNotFoundError:
                pass

    async def wait_for_termination(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()
