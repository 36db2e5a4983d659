"""dockerd, through its API socket with the maintained Docker SDK for Python (`docker`), and its on-disk state.

The events stream says `create` before the container's first process runs; the service looks the container up
then, so its metadata is usually cached before any event of it reaches the engine. Lookups read dockerd's own
record first, `<DockerRootDir>/containers/<id>/config.v2.json` and `hostconfig.json` (written at create, the
same data inspect returns): inspecting a container that is starting waits on dockerd's container lock, which
under load can outlast the hold's 500 ms, while the files never wait. The API answers whatever the files do not
(and everything when the data root is not readable). `DockerApi` also serves Podman's Docker-compatible API
(podman.py), which answers the same calls in the same shapes.
"""

from __future__ import annotations

import glob
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from falconet.model.event import Container
from falconet.sensor.containers import parse
from falconet.sensor.containers.registry import EngineSettings, RuntimeEvent, RuntimeUnavailable, register_runtime

_START_ACTIONS = frozenset({"create", "start", "restart", "unpause"})
_EXIT_ACTIONS = frozenset({"die", "destroy", "kill_exit"})
_EVENT_KEYS = frozenset({"image", "name", "exitCode", "signal", "execID", "podId", "containerExitCode"})
"""Actor attributes of a container event that are not the container's labels."""


def _errors() -> tuple[type[BaseException], ...]:
    """What the SDK raises when the runtime cannot be asked (missing socket, refused, timeout, bad answer)."""
    import docker.errors
    import requests.exceptions

    return (docker.errors.DockerException, requests.exceptions.RequestException, OSError, ValueError)


class DockerApi:
    """A Docker Engine API client over the first of `settings.sockets` that exists."""

    def __init__(self, name: str, container_type: str, settings: EngineSettings) -> None:
        self.name = name
        self.types = frozenset({container_type})
        self.container_type = container_type
        self.settings = settings
        self._api: Any = None
        self._lock = threading.Lock()
        self._stream: Any = None
        self._digests: dict[str, str | None] = {}
        self.data_root: Path | None = None  # dockerd's DockerRootDir, learnt from the API (docker only)

    # --- connection ----------------------------------------------------------------------------------------

    def _socket(self) -> str:
        for path in self.settings.sockets:
            if os.path.exists(path):
                return path
        raise RuntimeUnavailable(f"no API socket at {', '.join(self.settings.sockets) or '(none configured)'}")

    def _client(self) -> Any:
        with self._lock:
            if self._api is not None:
                return self._api
            path = self._socket()
            try:
                import docker
            except ImportError as exc:
                raise RuntimeUnavailable(f"the docker SDK is not installed ({exc})") from None
            self._api = _connect(docker, path, self.settings.timeout)
            return self._api

    def _drop(self) -> None:
        with self._lock:
            api, self._api = self._api, None
        if api is not None:
            try:
                api.close()
            except _errors():
                pass

    # --- RuntimeClient ----------------------------------------------------------------------------------------

    def lookup(self, container_id: str) -> Container | None:
        import docker.errors

        if self.data_root is not None:
            info = self._from_disk(container_id)
            if info is not None:
                return self.container(info)
        api = self._client()
        try:
            info = api.inspect_container(container_id)
        except docker.errors.NotFound:
            return None
        except _errors() as exc:
            self._drop()
            raise RuntimeUnavailable(_reason(exc)) from None
        if not isinstance(info, dict):
            raise RuntimeUnavailable("inspect answered something that is not an object")
        return self.container(info)

    def events(self, stop: threading.Event) -> Iterator[RuntimeEvent]:
        api = self._client()
        try:
            stream = api.events(decode=True, filters={"type": "container"})
            self._stream = stream
            running = api.containers(quiet=True)
            root = api.info().get("DockerRootDir")
            if isinstance(root, str) and root.startswith("/"):
                self.data_root = Path(root)
        except _errors() as exc:
            self._drop()
            raise RuntimeUnavailable(_reason(exc)) from None
        yield RuntimeEvent("ready")
        for item in running:
            if isinstance(item, dict) and isinstance(item.get("Id"), str):
                yield RuntimeEvent("start", item["Id"])
        try:
            for ev in stream:
                if stop.is_set():
                    return
                if not isinstance(ev, dict):
                    continue
                action = str(ev.get("Action") or ev.get("status") or "")
                cid = ev.get("id") or (ev.get("Actor") or {}).get("ID")
                if not isinstance(cid, str) or not cid:
                    continue
                said = self._from_event(cid, ev)
                if action == "start":
                    # Started: the API has the address now, and the start no longer holds the container's lock.
                    found = self._inspect_api(cid)
                    yield RuntimeEvent("start", cid, found or said, partial=found is None)
                elif action in _START_ACTIONS:
                    yield RuntimeEvent("start", cid, said, partial=True)
                elif action in _EXIT_ACTIONS:
                    yield RuntimeEvent("exit", cid)
        except _errors() as exc:
            if stop.is_set():
                return
            self._drop()
            raise RuntimeUnavailable(f"events stream: {_reason(exc)}") from None
        if not stop.is_set():
            self._drop()
            raise RuntimeUnavailable("the events stream ended (the runtime stopped?)")

    def close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.close()
            except _errors():
                pass
        self._drop()

    def _from_event(self, full_id: str, ev: dict[str, Any]) -> Container:
        """What an event says about its container (its actor's attributes: name, image and the labels), for a
        container gone before anyone could look it up (a `--rm` container that lived a moment)."""
        attrs = (ev.get("Actor") or {}).get("Attributes") or {}
        attrs = attrs if isinstance(attrs, dict) else {}
        image = parse.clean(attrs.get("image"))
        repo, tag, digest = parse.split_image(image)
        return Container(
            id=full_id[:12], full_id=full_id, type=self.container_type, name=parse.clean(attrs.get("name")),
            image=image, image_repository=repo, image_tag=tag, image_digest=digest,
            labels=parse.labels({k: v for k, v in attrs.items() if k not in _EVENT_KEYS}),
        )

    def _inspect_api(self, container_id: str) -> Container | None:
        """The API's answer alone, tried three times over about half a second (a runtime still finishing the
        start may time out once; this runs on the events thread, never in the hold's way); None when it never
        answers, and the service then looks the container up itself."""
        for pause in (0.1, 0.4, 0.0):
            try:
                info = self._client().inspect_container(container_id)
                return self.container(info) if isinstance(info, dict) else None
            except RuntimeUnavailable:
                return None
            except _errors():
                time.sleep(pause)
        return None

    def _from_disk(self, container_id: str) -> dict[str, Any] | None:
        """The container's record from dockerd's files, in inspect's shape; None when absent or unreadable."""
        if not all(c in "0123456789abcdef" for c in container_id) or not container_id:
            return None
        dirs = glob.glob(str(self.data_root / "containers" / f"{container_id}*")) if self.data_root else []
        if len(dirs) != 1:
            return None
        try:
            config = json.loads(Path(dirs[0], "config.v2.json").read_text())
            host = json.loads(Path(dirs[0], "hostconfig.json").read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(config, dict) or not isinstance(host, dict):
            return None
        points = config.get("MountPoints") or {}
        mounts = [
            {"Source": m.get("Source"), "Destination": m.get("Destination"), "Mode": m.get("Relabel"),
             "RW": m.get("RW"), "Propagation": m.get("Propagation")}
            for m in (points.values() if isinstance(points, dict) else []) if isinstance(m, dict)
        ]
        return {"Id": config.get("ID"), "Name": config.get("Name"), "Config": config.get("Config") or {},
                "Image": config.get("Image"), "HostConfig": host, "Mounts": mounts, "Created": config.get("Created"),
                "NetworkSettings": config.get("NetworkSettings") or {}}

    # --- inspect -> Container -----------------------------------------------------------------------------

    def container(self, info: dict[str, Any]) -> Container:
        """The model's Container from a `GET /containers/{id}/json` answer."""
        full_id = str(info.get("Id") or "")
        config = info.get("Config") or {}
        host = info.get("HostConfig") or {}
        image = parse.clean(config.get("Image"))
        repo, tag, digest = parse.split_image(image)
        image_ref = info.get("Image")
        if digest is None and isinstance(image_ref, str):
            digest = self._digest(image_ref)
        net = info.get("NetworkSettings") or {}
        ip = parse.clean(net.get("IPAddress"))
        if ip is None:
            for n in (net.get("Networks") or {}).values():
                ip = parse.clean((n or {}).get("IPAddress"))
                if ip:
                    break
        mounts = [
            parse.mount(m.get("Source"), m.get("Destination"), m.get("Mode"), m.get("RW"), m.get("Propagation"))
            for m in (info.get("Mounts") or [])[: parse.MAX_MOUNTS] if isinstance(m, dict)
        ]
        return Container(
            id=full_id[:12],
            full_id=full_id,
            type=self.container_type,
            name=parse.clean(str(info.get("Name") or "").lstrip("/")),
            image=image,
            image_repository=repo,
            image_tag=tag,
            image_digest=digest,
            image_id=parse.image_id(image_ref),
            privileged=bool(host.get("Privileged")),
            mounts=mounts,
            start_ts=parse.rfc3339_ns(info.get("Created")),
            host_pid=host.get("PidMode") == "host",
            host_network=host.get("NetworkMode") == "host",
            host_ipc=host.get("IpcMode") == "host",
            ip=ip,
            labels=parse.labels(config.get("Labels")),
        )

    def _digest(self, image_ref: str) -> str | None:
        """The image's repository digest (`sha256:...`) when it came from a registry; None for local builds."""
        if image_ref in self._digests:
            return self._digests[image_ref]
        digest = None
        try:
            info = self._client().inspect_image(image_ref)
            for rd in info.get("RepoDigests") or []:
                if isinstance(rd, str) and "@" in rd:
                    digest = parse.clean(rd.partition("@")[2])
                    break
        except RuntimeUnavailable:
            return None  # not cached: asked again next time
        except _errors():
            return None
        if len(self._digests) > 1024:
            self._digests.clear()
        self._digests[image_ref] = digest
        return digest


def _connect(docker: Any, path: str, timeout: float) -> Any:
    """An APIClient speaking the server's API version (at most the SDK's own). The runtime is asked first
    with a plain request on a socket this function owns and always closes (the SDK's own probe, version="auto",
    leaks its socket when the runtime refuses or hangs)."""
    ours = docker.constants.DEFAULT_DOCKER_API_VERSION
    server = _api_version(path, timeout) or ours
    version = server if docker.utils.version_lt(server, ours) else ours
    return docker.APIClient(base_url=f"unix://{path}", version=version, timeout=max(1, round(timeout)))


def _api_version(path: str, timeout: float) -> str | None:
    """GET /version over the UNIX socket; the server's ApiVersion, or RuntimeUnavailable saying why not."""
    deadline = time.monotonic() + timeout
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(path)
            sock.sendall(b"GET /version HTTP/1.0\r\nHost: runtime\r\n\r\n")
            data = b""
            while len(data) < 1 << 20:
                sock.settimeout(max(0.01, deadline - time.monotonic()))
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
    except TimeoutError:
        raise RuntimeUnavailable(f"{path}: no answer within {timeout:g}s") from None
    except OSError as exc:
        raise RuntimeUnavailable(f"{path}: {exc.strerror or exc}") from None
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/") or b" 200 " not in head.split(b"\r\n", 1)[0] + b" ":
        raise RuntimeUnavailable(f"{path}: not a container engine API ({head[:60]!r})")
    try:
        answer = json.loads(body)
    except ValueError:
        raise RuntimeUnavailable(f"{path}: the version answer is not JSON") from None
    version = answer.get("ApiVersion") if isinstance(answer, dict) else None
    return version if isinstance(version, str) and version.replace(".", "").isdigit() else None


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:300]


class DockerClient(DockerApi):
    def __init__(self, settings: EngineSettings) -> None:
        super().__init__("docker", "docker", settings)

    def lookup(self, container_id: str) -> Container | None:
        try:
            return super().lookup(container_id)
        except RuntimeUnavailable:
            # With dockerd's files readable, an API that does not answer in time is busy, not gone (its
            # events stream, which says when dockerd really stops, outlives the client dropped here): the
            # container is "not known yet". Docker marked down instead would stop every hold for its
            # containers until its next container event, and count an outage that did not happen.
            if self.data_root is None or not (self.data_root / "containers").is_dir():
                raise
            return None


register_runtime("docker", DockerClient, EngineSettings(sockets=("/var/run/docker.sock",)))
