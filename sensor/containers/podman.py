"""Podman, through its API socket when something serves one, else through the state it keeps on disk.

Podman has no daemon: its API exists only while `podman system service` runs (systemd's podman.socket
usually starts it; hosts without systemd have none). So the client prefers the configured API sockets
(Podman's Docker-compatible API, the same calls as dockerd: docker.py's DockerApi) and otherwise reads what
every rootful `podman run` writes before the container's first process starts:

- containers/storage's `<root>/<driver>-containers/containers.json`: id, names, image id and the image name;
- the OCI bundle `<root>/<driver>-containers/<id>/userdata/config.json`: privileged (libpod's annotation),
  mounts, and which namespaces are the host's (a namespace the spec does not create is shared with the host);
- the events log (`events_logger = "file"`, the default without journald), whose lines carry the labels and
  say when containers are created and die.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from falconet.model.event import Container
from falconet.sensor.containers import parse
from falconet.sensor.containers.docker import DockerApi
from falconet.sensor.containers.registry import EngineSettings, RuntimeEvent, RuntimeUnavailable, register_runtime

STORAGE_ROOT = "/var/lib/containers/storage"
EVENTS_LOG = "/run/libpod/events/events.log"
TAIL_INTERVAL = 0.05
OCI_STATE_ROOTS = ("/run/runc",)
"""Where the OCI runtime keeps each container's state.json (rootful runc; the address is read through it)."""
LOG_SCAN_BYTES = 2 << 20
"""How much of the events log's end is searched for a container's labels (Podman rotates it at 1 MB)."""
_START = frozenset({"create", "init", "start", "restart"})
_EXIT = frozenset({"died", "remove", "cleanup"})


class PodmanClient:
    name = "podman"
    types = frozenset({"podman"})

    def __init__(self, settings: EngineSettings) -> None:
        self.settings = settings
        self.api = DockerApi("podman", "podman", settings)
        root = settings.extra.get("storage_root", STORAGE_ROOT)
        log = settings.extra.get("events_log", EVENTS_LOG)
        self.disk = PodmanDisk(Path(str(root)), Path(str(log)))

    def _has_socket(self) -> bool:
        return any(os.path.exists(p) for p in self.settings.sockets)

    def lookup(self, container_id: str) -> Container | None:
        # The files first: Podman's API waits on the container's lock, which `podman run` holds while the
        # container starts (often longer than the hold's 500 ms under load); the files are there from create.
        if self.disk.available():
            found = self.disk.lookup(container_id)
            if found is not None:
                return found
        if self._has_socket():
            try:
                return self._merged(self.api.lookup(container_id))
            except RuntimeUnavailable:
                # With the files readable Podman is not unavailable, only its API slow (the container's
                # lock, under load): "not known yet" keeps the runtime up, so holds still wait and the
                # events log's next line for this container completes the record.
                if not self.disk.available():
                    raise
                return None
        if not self.disk.available():
            raise RuntimeUnavailable(f"no Podman API socket and no storage at {self.disk.root}")
        return None

    def events(self, stop: threading.Event) -> Iterator[RuntimeEvent]:
        # Podman's own events log first: read every 50 ms here, it is faster than the API service's stream
        # (which follows the same file), and a container that lives a moment is announced before it is gone.
        if self.disk.available() and self.disk.events_log.exists():
            yield from self.disk.events(stop)
            return
        if self._has_socket():
            try:
                for ev in self.api.events(stop):
                    full = ev.container is not None and not ev.partial
                    yield dataclasses.replace(ev, container=self._merged(ev.container)) if full else ev
                return
            except RuntimeUnavailable:
                if not self.disk.available():
                    raise
        yield from self.disk.events(stop, until=self._has_socket)

    def _merged(self, found: Container | None) -> Container | None:
        """The API's answer with the bundle's mounts (the compat API leaves their mode empty; the OCI options
        say `ro`), so both paths give the same container.mount.* values."""
        if found is None or not self.disk.available():
            return found
        try:
            disk = self.disk.lookup(found.full_id)
        except RuntimeUnavailable:
            return found
        if disk is not None:
            found.mounts = disk.mounts
            found.labels = found.labels or disk.labels
        return found

    def close(self) -> None:
        self.api.close()


class PodmanDisk:
    """Podman's on-disk state, read-only."""

    def __init__(self, root: Path, events_log: Path) -> None:
        self.root = root
        self.events_log = events_log
        self._labels: dict[str, dict[str, str]] = {}

    def available(self) -> bool:
        return bool(self._containers_files())

    def _containers_files(self) -> list[str]:
        return sorted(glob.glob(str(self.root / "*-containers" / "containers.json")))

    def _records(self) -> list[tuple[Path, dict[str, Any]]]:
        files = self._containers_files()
        if not files:
            raise RuntimeUnavailable(f"no Podman storage at {self.root}")
        out: list[tuple[Path, dict[str, Any]]] = []
        for f in files:
            try:
                data = json.loads(Path(f).read_text())
            except (OSError, ValueError) as exc:
                raise RuntimeUnavailable(f"{f}: {exc}") from None
            if isinstance(data, list):
                out.extend((Path(f).parent, r) for r in data if isinstance(r, dict) and isinstance(r.get("id"), str))
        return out

    def labels_of(self, full_id: str) -> dict[str, str]:
        """The labels the events log recorded for the container (they are in no other file Podman writes)."""
        if full_id not in self._labels:
            self._scan_log(full_id)
        return dict(self._labels.get(full_id, {}))

    def _scan_log(self, full_id: str) -> None:
        try:
            with open(self.events_log, "rb") as f:
                f.seek(max(0, os.fstat(f.fileno()).st_size - LOG_SCAN_BYTES))
                data = f.read()
        except OSError:
            return
        key = full_id.encode()
        for line in data.split(b"\n"):
            if key in line:
                self._event(line)
        self._labels.setdefault(full_id, {})

    def lookup(self, container_id: str) -> Container | None:
        """None until the container is initialised: its OCI bundle (privileges, mounts, namespaces) is written
        after `create`, before its first process, and a record without it would say "not privileged"."""
        for base, rec in self._records():
            if rec["id"] == container_id or rec["id"].startswith(container_id):
                if not (base / rec["id"] / "userdata" / "config.json").exists():
                    return None
                return self._container(base, rec)
        return None

    def _container(self, base: Path, rec: dict[str, Any]) -> Container | None:
        full_id: str = rec["id"]
        try:
            meta = json.loads(rec.get("metadata") or "{}")
        except ValueError:
            meta = {}
        if not isinstance(meta, dict):
            meta = {}
        names = rec.get("names") or []
        image = parse.clean(meta.get("image-name"))
        repo, tag, digest = parse.split_image(image)
        spec = _read_json(base / full_id / "userdata" / "config.json")
        annotations = spec.get("annotations") or {}
        namespaces = {str(n.get("type")) for n in (spec.get("linux") or {}).get("namespaces") or []
                      if isinstance(n, dict)}
        address = None
        if spec and "network" in namespaces:
            known, address = self._address(full_id)
            if not known:
                return None  # not started yet: its network (set up by now) is readable once it is
        mounts = [
            parse.mount(m.get("source"), m.get("destination"), _mode(m.get("options")),
                        "ro" not in (m.get("options") or []), _propagation(m.get("options")))
            for m in (spec.get("mounts") or [])[: parse.MAX_MOUNTS]
            if isinstance(m, dict) and m.get("type") == "bind" and not self._own_file(str(m.get("source") or ""))
        ]
        return Container(
            id=full_id[:12],
            full_id=full_id,
            type="podman",
            name=parse.clean(meta.get("name") or (names[0] if names else None)),
            image=image,
            image_repository=repo,
            image_tag=tag,
            image_digest=digest,
            image_id=parse.image_id(rec.get("image")),
            privileged=str(annotations.get("io.podman.annotations.privileged", "")).upper() == "TRUE",
            mounts=mounts,
            start_ts=parse.rfc3339_ns(rec.get("created")),
            host_pid="pid" not in namespaces if spec else None,
            host_network="network" not in namespaces if spec else None,
            host_ipc="ipc" not in namespaces if spec else None,
            ip=address,
            labels=self.labels_of(full_id),
        )

    def _address(self, full_id: str) -> tuple[bool, str | None]:
        """(known, address): the container's address read from its network namespace (Podman keeps it only in
        its database); the OCI runtime's state names the container's init process once the container exists."""
        for root in OCI_STATE_ROOTS:
            state = _read_json(Path(root) / full_id / "state.json")
            pid = state.get("init_process_pid")
            if isinstance(pid, int) and pid > 0:
                return True, parse.netns_ipv4(pid)
        return False, None

    def _own_file(self, source: str) -> bool:
        """Files Podman generates for the container (hosts, resolv.conf, .containerenv): not user mounts."""
        return "/userdata/" in source or source.startswith(("/run/containers/", "/run/libpod/"))

    def events(self, stop: threading.Event, until: Any = None) -> Iterator[RuntimeEvent]:
        """Tails the events log from its end; returns when `until()` becomes true (an API socket appeared)."""
        records = self._records()
        yield RuntimeEvent("ready")
        for base, rec in records[-1024:]:
            found = self._container(base, rec)
            if found is not None:
                yield RuntimeEvent("start", rec["id"], found)
        f = None
        ino: int | None = None
        pos = 0
        first = True  # the log as it is now is history (the records above cover it): start at its end
        buf = b""
        next_check = 0.0
        try:
            while not stop.is_set():
                now = time.monotonic()
                if now >= next_check:
                    next_check = now + 2.0
                    if until is not None and until():
                        return
                    try:
                        st = os.stat(self.events_log)
                    except OSError:
                        st = None
                    if st is not None and (f is None or st.st_ino != ino or st.st_size < pos):
                        if f is not None:
                            f.close()
                        f = open(self.events_log, "rb")  # noqa: SIM115 (kept open while tailing)
                        ino, pos, buf = st.st_ino, st.st_size if first else 0, b""
                        f.seek(pos)
                    first = False
                chunk = f.read(1 << 16) if f is not None else b""
                if not chunk:
                    stop.wait(TAIL_INTERVAL)
                    continue
                pos += len(chunk)
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    ev = self._event(line)
                    if ev is not None:
                        yield ev
        finally:
            if f is not None:
                f.close()

    def _event(self, line: bytes) -> RuntimeEvent | None:
        try:
            item = json.loads(line)
        except ValueError:
            return None
        if not isinstance(item, dict) or item.get("Type") != "container" or not isinstance(item.get("ID"), str):
            return None
        cid, status = item["ID"], item.get("Status")
        attrs = item.get("Attributes")
        if isinstance(attrs, dict):
            if len(self._labels) > 4096:
                self._labels.clear()
            self._labels[cid] = parse.labels({k: v for k, v in attrs.items() if k not in ("image", "name")})
        if status in _START:
            image = parse.clean(item.get("Image"))
            repo, tag, digest = parse.split_image(image)
            said = Container(id=cid[:12], full_id=cid, type="podman", name=parse.clean(item.get("Name")),
                             image=image, image_repository=repo, image_tag=tag, image_digest=digest,
                             labels=self._labels.get(cid, {}))
            return RuntimeEvent("start", cid, said, partial=True)
        if status in _EXIT:
            if status == "remove":
                self._labels.pop(cid, None)
            return RuntimeEvent("exit", cid)
        return None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _mode(options: object) -> str:
    opts = options if isinstance(options, list) else []
    return ",".join(o for o in opts if isinstance(o, str) and o in ("ro", "rw", "z", "Z"))


def _propagation(options: object) -> str:
    opts = options if isinstance(options, list) else []
    for o in opts:
        if isinstance(o, str) and o in ("rprivate", "private", "rshared", "shared", "rslave", "slave"):
            return o
    return ""


register_runtime("podman", PodmanClient, EngineSettings(sockets=("/run/podman/podman.sock",)))
