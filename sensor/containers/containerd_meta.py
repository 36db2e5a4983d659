"""What a containerd container record says about the container: the pure half of the containerd client.

containerd keeps one record per container (its containers service): labels, the image reference, the OCI
runtime spec it hands to the shim, its creation time, and extensions. Kubernetes' CRI plugin, which lives
inside containerd, writes there everything a kubelet asked for: the spec's `io.kubernetes.cri.*` annotations
name the pod (namespace, name, uid, sandbox id) and the container, and the `io.cri-containerd.*.metadata`
extension holds the CRI request itself (the security context, the mounts, the labels) plus, for a pod
sandbox, the IP the CRI reports in PodSandboxStatus. So one record (two for a pod's container: its own and its
sandbox's) answers every field without asking CRI separately, and it exists before the container's first
process runs. Nothing here does I/O; containerd.py fetches the records.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from falconet.model.event import Container
from falconet.sensor.containers import parse

CRI_CONTAINER_EXT = "io.cri-containerd.container.metadata"
CRI_SANDBOX_EXT = "io.cri-containerd.sandbox.metadata"
ANN_TYPE = "io.kubernetes.cri.container-type"  # "sandbox" or "container"
ANN_NAME = "io.kubernetes.cri.container-name"
ANN_IMAGE = "io.kubernetes.cri.image-name"
ANN_SANDBOX_ID = "io.kubernetes.cri.sandbox-id"
ANN_POD_NAME = "io.kubernetes.cri.sandbox-name"
ANN_POD_NS = "io.kubernetes.cri.sandbox-namespace"
ANN_POD_UID = "io.kubernetes.cri.sandbox-uid"
# What a kubelet puts in the CRI labels (older CRI plugins wrote no sandbox annotations).
LABEL_POD_NAME = "io.kubernetes.pod.name"
LABEL_POD_NS = "io.kubernetes.pod.namespace"
LABEL_POD_UID = "io.kubernetes.pod.uid"
LABEL_NERDCTL_NAME = "nerdctl/name"  # the name nerdctl gives a plain containerd container
_KUBELET_LABEL_PREFIX = "io.kubernetes."

_CAP_NAMES = (
    "CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID SETPCAP LINUX_IMMUTABLE NET_BIND_SERVICE "
    "NET_BROADCAST NET_ADMIN NET_RAW IPC_LOCK IPC_OWNER SYS_MODULE SYS_RAWIO SYS_CHROOT SYS_PTRACE SYS_PACCT "
    "SYS_ADMIN SYS_BOOT SYS_NICE SYS_RESOURCE SYS_TIME SYS_TTY_CONFIG MKNOD LEASE AUDIT_WRITE AUDIT_CONTROL "
    "SETFCAP MAC_OVERRIDE MAC_ADMIN SYSLOG WAKE_ALARM BLOCK_SUSPEND AUDIT_READ PERFMON BPF CHECKPOINT_RESTORE"
).split()
"""Capability names by bit number (linux/capability.h), as OCI specs spell them after `CAP_`."""

_PROPAGATIONS = ("rshared", "shared", "rslave", "slave", "rprivate", "private")
_CRI_PROPAGATION = {"PROPAGATION_PRIVATE": "private", "PROPAGATION_HOST_TO_CONTAINER": "rslave",
                    "PROPAGATION_BIDIRECTIONAL": "rshared", 0: "private", 1: "rslave", 2: "rshared"}
_NODE = 2  # CRI NamespaceMode NODE: the pod shares the host's namespace

JsonObj = dict[str, object]


@dataclass(frozen=True, slots=True)
class Record:
    """One container record as containerd's containers service returns it (fields already decoded)."""

    id: str
    namespace: str  # the containerd namespace it lives in (k8s.io for the CRI plugin's)
    image: str
    labels: dict[str, str]
    spec: JsonObj  # the OCI runtime spec
    created_ns: int | None
    extensions: dict[str, JsonObj] = field(default_factory=dict)  # JSON extensions (the CRI's), decoded


@dataclass(frozen=True, slots=True)
class ImageInfo:
    digest: str | None  # the manifest (or index) digest the image name points at
    config_digest: str | None  # the image id: the digest of its config


def _obj(value: object) -> JsonObj:
    return cast(JsonObj, value) if isinstance(value, dict) else {}


def _list(value: object) -> list[object]:
    return cast(list[object], value) if isinstance(value, list) else []


def _str_map(value: object) -> dict[str, str]:
    return {str(k): str(v) for k, v in _obj(value).items() if isinstance(v, (str, int, float, bool))}


def cri_metadata(record: Record) -> JsonObj:
    """The CRI plugin's own record of the request (`Metadata` of its extension), {} for a plain container."""
    ext = record.extensions.get(CRI_CONTAINER_EXT) or record.extensions.get(CRI_SANDBOX_EXT) or {}
    return _obj(ext.get("Metadata"))


def spec_annotations(record: Record) -> dict[str, str]:
    return _str_map(record.spec.get("annotations"))


def is_sandbox(record: Record) -> bool:
    """A pod sandbox (pause) container, by the CRI's annotation or, failing that, its extension."""
    kind = spec_annotations(record).get(ANN_TYPE) or record.labels.get("io.cri-containerd.kind")
    return kind == "sandbox" or CRI_SANDBOX_EXT in record.extensions


def is_cri(record: Record) -> bool:
    return ANN_TYPE in spec_annotations(record) or bool(cri_metadata(record))


@functools.cache
def _host_caps() -> frozenset[str]:
    """Capabilities in this process's bounding set: what "every capability" means on this host (a host whose
    root lacks one cannot grant it to a privileged container either)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("CapBnd:"):
                    mask = int(line.split()[1], 16)
                    return frozenset(f"CAP_{n}" for bit, n in enumerate(_CAP_NAMES) if mask >> bit & 1)
    except OSError:
        pass
    return frozenset(f"CAP_{n}" for n in _CAP_NAMES)


def spec_privileged(spec: JsonObj) -> bool:
    """Privileged as a plain containerd container can be: its spec grants every capability the host has and
    access to every device (the cgroup device rule that allows all, which `ctr run --privileged` writes)."""
    process = _obj(spec.get("process"))
    bounding = _obj(process.get("capabilities")).get("bounding")
    caps = set(bounding) if isinstance(bounding, list) else set()
    if not _host_caps() <= caps:
        return False
    rules = _obj(_obj(spec.get("linux")).get("resources")).get("devices")
    allow_all = False
    for rule in rules if isinstance(rules, list) else []:  # the last matching rule wins, as in the kernel
        r = _obj(rule)
        if r.get("type") in (None, "a") and r.get("major") is None and r.get("minor") is None:
            allow_all = bool(r.get("allow")) and set(str(r.get("access", ""))) >= set("rwm")
    return allow_all


def _ns_is_host(spec: JsonObj, ns_type: str) -> bool:
    """The spec leaves the namespace out (the host's), or joins the host's own by path."""
    for ns in _list(_obj(spec.get("linux")).get("namespaces")):
        entry = _obj(ns)
        if entry.get("type") == ns_type:
            path = entry.get("path")
            if not path:
                return False
            proc_name = {"network": "net", "mount": "mnt"}.get(ns_type, ns_type)
            try:
                return os.stat(str(path)).st_ino == os.stat(f"/proc/1/ns/{proc_name}").st_ino
            except OSError:
                return False
    return True


def spec_mounts(spec: JsonObj) -> list[dict[str, Any]]:
    """The spec's bind mounts (what a user asked for; the runtime's own /proc, /dev... are not listed)."""
    out: list[dict[str, Any]] = []
    for m in _list(spec.get("mounts")):
        mount = _obj(m)
        options = [str(o) for o in _list(mount.get("options"))]
        if mount.get("type") != "bind" and "bind" not in options and "rbind" not in options:
            continue
        out.append(parse.mount(mount.get("source"), mount.get("destination"), "ro" if "ro" in options else "",
                               "ro" not in options, next((o for o in options if o in _PROPAGATIONS), "")))
    return out


def cri_mounts(config: JsonObj) -> list[dict[str, Any]]:
    """The mounts the kubelet asked for in the CRI ContainerConfig."""
    out: list[dict[str, Any]] = []
    for m in _list(config.get("mounts")):
        mount = _obj(m)
        readonly = bool(mount.get("readonly"))
        propagation = mount.get("propagation", 0)
        out.append(parse.mount(mount.get("host_path"), mount.get("container_path"),
                               "z" if mount.get("selinux_relabel") else "", not readonly,
                               _CRI_PROPAGATION.get(propagation if isinstance(propagation, (int, str)) else 0,
                                                    "private")))
    return out


def _security_context(config: JsonObj) -> JsonObj:
    return _obj(_obj(config.get("linux")).get("security_context"))


def pod_labels(sandbox: Record | None) -> dict[str, str]:
    """The pod's labels as the kubelet passed them in the sandbox config, less its own io.kubernetes.* keys
    (those are the pod's name, namespace and uid, which the k8s.pod.* fields already give)."""
    if sandbox is None:
        return {}
    config = _obj(cri_metadata(sandbox).get("Config"))
    labels = parse.labels(config.get("labels")) if config else parse.labels(sandbox.labels)
    return {k: v for k, v in labels.items() if not k.startswith(_KUBELET_LABEL_PREFIX) and
            not k.startswith("io.cri-containerd.")}


def to_container(record: Record, image: ImageInfo | None, sandbox: Record | None,
                 container_type: str = "containerd") -> Container:
    """Falco's container and k8s fields for `record` (a pod's container needs its `sandbox` record for the
    pod's labels and IP; for a sandbox itself pass the record again)."""
    ann = spec_annotations(record)
    meta = cri_metadata(record)
    config = _obj(meta.get("Config"))
    cri = is_cri(record)
    sandboxed = is_sandbox(record)
    image_ref = ann.get(ANN_IMAGE) or record.image or (sandbox.image if sandbox and sandboxed else "")
    repo, tag, ref_digest = parse.split_image(image_ref)
    ns_opts = _obj(_security_context(config).get("namespace_options"))

    def host_ns(cri_key: str, oci_type: str) -> bool:
        if cri and config:  # the CRI request's namespace options, as the kubelet set them
            return ns_opts.get(cri_key) == _NODE
        return _ns_is_host(record.spec, oci_type)

    if cri:
        name = ann.get(ANN_POD_NAME) if sandboxed else ann.get(ANN_NAME)
        name = name or _str_map(_obj(config.get("metadata"))).get("name")
        privileged = bool(_security_context(config).get("privileged")) if config else spec_privileged(record.spec)
        mounts = cri_mounts(config)
        labels = parse.labels(config.get("labels") if config else record.labels)
    else:
        name = record.labels.get(LABEL_NERDCTL_NAME) or record.id
        privileged = spec_privileged(record.spec)
        mounts = spec_mounts(record.spec)
        labels = parse.labels(record.labels)
    image_id = str(meta.get("ImageRef") or "") or (image.config_digest if image else None) or None
    pod_ip = str(cri_metadata(sandbox).get("IP") or "") or None if sandbox is not None else None
    pod_ns = ann.get(ANN_POD_NS) or record.labels.get(LABEL_POD_NS)
    return Container(
        id=record.id[:12],
        full_id=record.id,
        name=parse.clean(name),
        image=parse.clean(image_ref),
        image_repository=parse.clean(repo),
        image_tag=parse.clean(tag),
        image_digest=parse.clean(ref_digest or (image.digest if image else None)),
        image_id=parse.image_id(image_id),
        type=container_type,
        privileged=privileged,
        mounts=mounts[: parse.MAX_MOUNTS],
        start_ts=record.created_ns,
        host_pid=host_ns("pid", "pid"),
        host_network=host_ns("network", "network"),
        host_ipc=host_ns("ipc", "ipc"),
        ip=parse.clean(pod_ip),
        labels=labels,
        k8s_ns_name=parse.clean(pod_ns),
        k8s_pod_name=parse.clean(ann.get(ANN_POD_NAME) or record.labels.get(LABEL_POD_NAME)) if pod_ns else None,
        k8s_pod_uid=parse.clean(ann.get(ANN_POD_UID) or record.labels.get(LABEL_POD_UID)) if pod_ns else None,
        k8s_pod_labels=pod_labels(sandbox) if pod_ns else {},
        k8s_pod_ip=pod_ip,
        k8s_pod_sandbox_id=parse.clean(record.id if sandboxed else ann.get(ANN_SANDBOX_ID)) if pod_ns else None,
    )


def decode_json(raw: bytes) -> JsonObj:
    """A JSON object from a record's spec or extension; {} for anything else (never raises)."""
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return {}
    return _obj(value)


def image_config_digest(manifest: Mapping[str, object]) -> str | None:
    return str(_obj(manifest.get("config")).get("digest") or "") or None
