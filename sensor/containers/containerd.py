"""containerd, and the Kubernetes pods its CRI plugin runs: metadata from containerd's own gRPC API.

Why containerd's API and not CRI: the CRI plugin is part of containerd and stores every CRI request in
containerd's container records (see containerd_meta.py), so one API serves plain containerd containers
(`ctr run`, nerdctl) and pods alike, and a record exists from the moment the container is created, before its
first process runs. Records live in containerd namespaces (`k8s.io` for the CRI plugin, `default` for ctr and
nerdctl); the namespaces searched are `container_engines.cri.namespaces`.

The client speaks plain gRPC over the UNIX socket with the message classes `make generate` builds from
containerd_api/*.proto, calling each method by its full name. Every call has a deadline (the engine's
`timeout`); a socket that is missing, refuses or times out raises RuntimeUnavailable, which the metadata
service turns into one log line and a metric.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

import grpc
from google.protobuf.message import Message

from falconet.model.event import Container
from falconet.sensor.containers.containerd_api import (
    containers_pb2,
    content_pb2,
    events_pb2,
    images_pb2,
)
from falconet.sensor.containers.containerd_meta import (
    ANN_SANDBOX_ID,
    ImageInfo,
    Record,
    spec_annotations,
    cri_metadata,
    decode_json,
    image_config_digest,
    is_sandbox,
    to_container,
)
from falconet.sensor.containers.registry import (
    EngineSettings,
    RuntimeEvent,
    RuntimeUnavailable,
    register_runtime,
)

DEFAULT_SOCKETS = ("/run/containerd/containerd.sock", "/run/k3s/containerd/containerd.sock")
DEFAULT_NAMESPACES = ("k8s.io", "default")
_SERVICE = "/containerd.services."
_EVENT_TOPICS = ("/containers/create", "/containers/delete", "/tasks/exit")
_MANIFEST_TYPES = ("application/vnd.oci.image.manifest.v1+json",
                   "application/vnd.docker.distribution.manifest.v2+json")
_MAX_BLOB = 4 << 20  # an index or manifest larger than this is not an image we can read

Resp = TypeVar("Resp", bound=Message)


def _namespaces(settings: EngineSettings) -> tuple[str, ...]:
    value = settings.extra.get("namespaces", DEFAULT_NAMESPACES)
    if isinstance(value, str):
        value = (value,)
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
        raise ValueError("container_engines.cri.namespaces must be a list of containerd namespace names")
    return tuple(value)


class ContainerdClient:
    """containerd's containers, images, content and events services over its UNIX socket."""

    name = "cri"
    types = frozenset({"containerd", "cri"})

    def __init__(self, settings: EngineSettings) -> None:
        self._sockets = settings.sockets or DEFAULT_SOCKETS
        self._timeout = settings.timeout
        self._namespaces = _namespaces(settings)
        self._lock = threading.Lock()
        self._channels: dict[str, grpc.Channel] = {}

    # --- transport -------------------------------------------------------------------------------------------

    def _channel(self) -> tuple[str, grpc.Channel]:
        """The first configured socket that exists (a restarted containerd re-creates it; the channel
        reconnects by itself)."""
        for path in self._sockets:
            if os.path.exists(path):
                with self._lock:
                    channel = self._channels.get(path)
                    if channel is None:
                        channel = grpc.insecure_channel(f"unix://{path}")
                        self._channels[path] = channel
                return path, channel
        raise RuntimeUnavailable(f"no containerd socket at {', '.join(self._sockets)}")

    def _call(self, method: str, request: Message, response: type[Resp], namespace: str) -> Resp | None:
        """One unary call; None for NOT_FOUND, RuntimeUnavailable for anything the runtime cannot answer."""
        path, channel = self._channel()
        stub = channel.unary_unary(_SERVICE + method, request_serializer=_serialize,
                                   response_deserializer=response.FromString)
        try:
            result: Resp = stub(request, timeout=self._timeout, metadata=(("containerd-namespace", namespace),))
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise RuntimeUnavailable(f"containerd at {path}: {method}: {exc.code().name} {exc.details()}") from None
        return result

    def _read_blob(self, namespace: str, digest: str) -> bytes:
        path, channel = self._channel()
        stub = channel.unary_stream(_SERVICE + "content.v1.Content/Read", request_serializer=_serialize,
                                    response_deserializer=content_pb2.ReadContentResponse.FromString)
        data = bytearray()
        try:
            for chunk in stub(content_pb2.ReadContentRequest(digest=digest), timeout=self._timeout,
                              metadata=(("containerd-namespace", namespace),)):
                data += chunk.data
                if len(data) > _MAX_BLOB:
                    return b""
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return b""
            raise RuntimeUnavailable(f"containerd at {path}: content read: {exc.code().name}") from None
        return bytes(data)

    # --- records ---------------------------------------------------------------------------------------------

    def _record(self, namespace: str, container_id: str) -> Record | None:
        """The record by id; a 12-character (or longer) hex prefix is looked up by a filtered list."""
        got = self._call("containers.v1.Containers/Get", containers_pb2.GetContainerRequest(id=container_id),
                         containers_pb2.GetContainerResponse, namespace)
        if got is not None:
            return _decode_record(got.container, namespace)
        if not 12 <= len(container_id) < 64 or not all(c in "0123456789abcdef" for c in container_id):
            return None
        listed = self._call("containers.v1.Containers/List",
                            containers_pb2.ListContainersRequest(filters=[f'id~="^{container_id}"']),
                            containers_pb2.ListContainersResponse, namespace)
        if listed is None or len(listed.containers) != 1:
            return None  # unknown, or an ambiguous prefix
        return _decode_record(listed.containers[0], namespace)

    def _image(self, namespace: str, name: str, known_config: bool) -> ImageInfo | None:
        if not name:
            return None
        got = self._call("images.v1.Images/Get", images_pb2.GetImageRequest(name=name),
                         images_pb2.GetImageResponse, namespace)
        if got is None or not got.image.target.digest:
            return None
        target = got.image.target
        config = None if known_config else self._config_digest(namespace, target.digest, target.media_type)
        return ImageInfo(digest=target.digest, config_digest=config)

    def _config_digest(self, namespace: str, digest: str, media_type: str) -> str | None:
        """The image config's digest (the image id): from the manifest, through the index for this platform."""
        doc = decode_json(self._read_blob(namespace, digest))
        manifests = doc.get("manifests")
        if media_type not in _MANIFEST_TYPES and isinstance(manifests, list):
            chosen = _platform_manifest(manifests)
            if chosen is None:
                return None
            doc = decode_json(self._read_blob(namespace, chosen))
        return image_config_digest(doc)

    # --- RuntimeClient ---------------------------------------------------------------------------------------

    def lookup(self, container_id: str) -> Container | None:
        """The container in the first namespace that has it; a pod's container also reads its sandbox's record
        (the pod's labels and IP)."""
        record = None
        for namespace in self._namespaces:
            record = self._record(namespace, container_id)
            if record is not None:
                break
        if record is None:
            return None
        sandbox: Record | None = record if is_sandbox(record) else None
        sandbox_id = spec_annotations(record).get(ANN_SANDBOX_ID)
        if sandbox is None and sandbox_id:
            sandbox = self._record(record.namespace, sandbox_id)
        image = self._image(record.namespace, record.image, known_config=bool(cri_metadata(record).get("ImageRef")))
        return to_container(record, image, sandbox)

    def events(self, stop: threading.Event) -> Iterator[RuntimeEvent]:
        """containerd's event stream: `ready` once subscribed and containerd answers, then a `start` for every
        container it already has; after that a container's creation is its `start` (its record exists from
        then on, before any process runs), its init task's exit or its deletion its `exit`."""
        path, channel = self._channel()
        stub = channel.unary_stream(_SERVICE + "events.v1.Events/Subscribe", request_serializer=_serialize,
                                    response_deserializer=events_pb2.Envelope.FromString)
        call = stub(events_pb2.SubscribeRequest(filters=[f'topic=="{t}"' for t in _EVENT_TOPICS]))
        watcher = threading.Thread(target=lambda: (stop.wait(), call.cancel()), daemon=True,
                                   name="containerd-events-stop")
        watcher.start()
        try:
            existing = self._existing_ids()  # after subscribing, so nothing created in between is missed
            yield RuntimeEvent("ready")
            for full_id in existing:
                yield RuntimeEvent("start", full_id)
            for envelope in call:
                if envelope.namespace in self._namespaces:
                    event = _event(envelope)
                    if event is not None:
                        yield event
        except grpc.RpcError as exc:
            if not stop.is_set():
                raise RuntimeUnavailable(f"containerd at {path}: events: {exc.code().name}") from None
        finally:
            call.cancel()

    def _existing_ids(self) -> list[str]:
        ids: list[str] = []
        for namespace in self._namespaces:
            listed = self._call("containers.v1.Containers/List", containers_pb2.ListContainersRequest(),
                                containers_pb2.ListContainersResponse, namespace)
            ids.extend(c.id for c in (listed.containers if listed is not None else ()))
        return ids

    def close(self) -> None:
        with self._lock:
            channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            channel.close()


def _serialize(message: Message) -> bytes:
    data: bytes = message.SerializeToString()  # (protobuf ships no type hints here: Message is untyped)
    return data


def _decode_record(c: containers_pb2.Container, namespace: str) -> Record:
    created = c.created_at.seconds * 1_000_000_000 + c.created_at.nanos if c.HasField("created_at") else None
    extensions = {key: decode_json(any_value.value) for key, any_value in c.extensions.items()
                  if key.startswith("io.cri-containerd.")}
    return Record(id=c.id, namespace=namespace, image=c.image, labels=dict(c.labels),
                  spec=decode_json(c.spec.value), created_ns=created, extensions=extensions)


def _platform_manifest(manifests: Sequence[object]) -> str | None:
    """The index entry for linux on this machine's architecture (amd64 here)."""
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)
    for m in manifests:
        if isinstance(m, dict):
            platform = m.get("platform") or {}
            if isinstance(platform, dict) and platform.get("os") == "linux" and platform.get("architecture") == arch:
                digest = m.get("digest")
                return digest if isinstance(digest, str) else None
    return None


_EVENT_DECODERS: dict[str, Callable[[bytes], tuple[str, str] | None]] = {
    "/containers/create": lambda raw: ("start", events_pb2.ContainerCreate.FromString(raw).id),
    "/containers/delete": lambda raw: ("exit", events_pb2.ContainerDelete.FromString(raw).id),
    "/tasks/exit": lambda raw: _task_exit(events_pb2.TaskExit.FromString(raw)),
}


def _task_exit(ev: events_pb2.TaskExit) -> tuple[str, str] | None:
    # An exec'd process exiting (id != container_id) is not the container's end.
    return ("exit", ev.container_id) if ev.id == ev.container_id or not ev.id else None


def _event(envelope: events_pb2.Envelope) -> RuntimeEvent | None:
    decode = _EVENT_DECODERS.get(envelope.topic)
    if decode is None:
        return None
    try:
        decoded = decode(envelope.event.value)
    except Exception:  # a payload that does not parse is skipped, never fatal  # noqa: BLE001
        return None
    if decoded is None or not decoded[1]:
        return None
    kind, full_id = decoded
    return RuntimeEvent(kind="start" if kind == "start" else "exit", full_id=full_id)


register_runtime("cri", ContainerdClient, EngineSettings(sockets=DEFAULT_SOCKETS,
                                                         extra={"namespaces": list(DEFAULT_NAMESPACES)}))

__all__ = ["DEFAULT_NAMESPACES", "DEFAULT_SOCKETS", "ContainerdClient"]
