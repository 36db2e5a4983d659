"""OCI image archives built here, from Debian's busybox-static: no image registry is reachable on this machine.

`ctr images import` takes an OCI image layout in a tar (oci-layout, index.json, blobs/sha256/...), so the
archive is written by hand: one gzip layer holding /bin/busybox and a link per applet, an image config, a
manifest, and an index whose `org.opencontainers.image.ref.name` annotation gives the image its name. The
archive's bytes depend only on the busybox binary and the arguments, so the image id is stable between runs.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import subprocess
import tarfile
from pathlib import Path

BUSYBOX = Path("/bin/busybox")


def _tar_info(name: str, *, kind: bytes = tarfile.REGTYPE, mode: int = 0o755, size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.size = size
    info.mtime = 0
    info.uname = info.gname = "root"
    return info


def busybox_layer() -> bytes:
    """An uncompressed layer tar: busybox, its applets as symlinks, and the directories a container expects."""
    if not BUSYBOX.is_file():
        raise RuntimeError(f"{BUSYBOX} is missing: install Debian's busybox-static (the Makefile does)")
    applets = subprocess.run([str(BUSYBOX), "--list"], check=True, capture_output=True, text=True).stdout.split()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in ("bin", "dev", "etc", "proc", "sys", "tmp", "root", "var", "run"):
            tar.addfile(_tar_info(d, kind=tarfile.DIRTYPE, mode=0o1777 if d == "tmp" else 0o755))
        data = BUSYBOX.read_bytes()
        tar.addfile(_tar_info("bin/busybox", size=len(data)), io.BytesIO(data))
        for applet in sorted(set(applets) - {"busybox"}):
            if "/" not in applet and applet not in ("[", "[["):
                link = _tar_info(f"bin/{applet}", kind=tarfile.SYMTYPE, mode=0o777)
                link.linkname = "busybox"
                tar.addfile(link)
        for name, text in (("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"), ("etc/group", "root:x:0:\n")):
            raw = text.encode()
            tar.addfile(_tar_info(name, mode=0o644, size=len(raw)), io.BytesIO(raw))
    return buf.getvalue()


def _blob(tar: tarfile.TarFile, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    tar.addfile(_tar_info(f"blobs/sha256/{digest[7:]}", mode=0o644, size=len(data)), io.BytesIO(data))
    return digest


def write_oci_archive(path: Path, ref: str, cmd: list[str], labels: dict[str, str] | None = None) -> str:
    """Writes an OCI archive of the busybox image named `ref` running `cmd`; returns its config digest."""
    layer = busybox_layer()
    layer_gz = gzip.compress(layer, mtime=0)
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": cmd, "Env": ["PATH=/bin"], "WorkingDir": "/", "Labels": labels or {}},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]},
        "history": [{"created_by": "falconet tests: busybox-static"}],
    }
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        layer_digest = _blob(tar, layer_gz)
        config_raw = json.dumps(config, sort_keys=True).encode()
        config_digest = _blob(tar, config_raw)
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest,
                       "size": len(config_raw)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest,
                        "size": len(layer_gz)}],
        }
        manifest_raw = json.dumps(manifest, sort_keys=True).encode()
        manifest_digest = _blob(tar, manifest_raw)
        index = {
            "schemaVersion": 2,
            "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest,
                           "size": len(manifest_raw), "annotations": {"org.opencontainers.image.ref.name": ref},
                           "platform": {"architecture": "amd64", "os": "linux"}}],
        }
        for name, raw in (("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'),
                          ("index.json", json.dumps(index, sort_keys=True).encode())):
            tar.addfile(_tar_info(name, mode=0o644, size=len(raw)), io.BytesIO(raw))
    path.write_bytes(buf.getvalue())
    return config_digest
