"""Test images built here, with no registry: a root filesystem around Debian's static busybox, as a tar that
`docker import`, `podman import` and containerd's `ctr images import` (cont-cri) all take.

The tar is built once per busybox binary and layout version and cached in CACHE_DIR, so later runs only
import it (and imports are skipped when the runtime already has the repository:tag). Import it elsewhere with

    from container_images import rootfs_tar, IMAGE_REPO, IMAGE_TAG   # tests/containers is on sys.path

What the image holds, and why: busybox applets for the actions the container rules watch (sh for shells,
nc with -e for reverse shells, arping for a packet socket, mount); `/usr/sbin/debugfs`, a link to busybox
(busybox refuses the unknown applet, but the exec of a program named debugfs is what the rule watches); and
a plain `/bin/sleep` entrypoint so containers stay up while the tests exec into them.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tarfile
from pathlib import Path

BUSYBOX = Path("/bin/busybox")
CACHE_DIR = Path(os.environ.get("FALCONET_TEST_CACHE", "/var/cache/falconet-test"))
IMAGE_REPO = "falconet-test/busybox"
IMAGE_TAG = "1.0"
IMAGE_REF = f"{IMAGE_REPO}:{IMAGE_TAG}"
ALLOWED_REPO = "falconet-test/allowed"
"""A second repository for the same image: the exclusion in container_test_rules.yaml names it."""
LAYOUT_VERSION = "1"

APPLETS = ("sh", "ash", "nc", "cat", "ls", "mount", "umount", "sleep", "echo", "cp", "chmod", "mkdir", "id",
           "true", "false", "ps", "arping", "touch", "rm", "env", "uname", "hostname", "mkfifo", "stat",
           "readlink", "tee", "wc", "grep", "head", "printf", "test", "kill", "timeout")
SBIN_LINKS = ("debugfs",)


class ImageError(Exception):
    """The test image cannot be built (busybox-static is not installed)."""


def rootfs_tar() -> Path:
    """The image's root filesystem as a tar (built and cached on first use)."""
    if not BUSYBOX.exists() or BUSYBOX.is_symlink():
        raise ImageError(f"{BUSYBOX} is missing: install Debian's busybox-static (make setup does)")
    digest = hashlib.sha256(BUSYBOX.read_bytes() + LAYOUT_VERSION.encode()).hexdigest()[:16]
    out = CACHE_DIR / f"busybox-rootfs-{digest}.tar"
    if out.exists():
        return out
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".tmp{os.getpid()}")
    with tarfile.open(tmp, "w") as tar:
        for d in ("bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "tmp", "proc", "sys", "dev", "root", "var",
                  "var/tmp", "mnt"):
            _dir(tar, d, 0o1777 if d in ("tmp", "var/tmp") else 0o755)
        tar.add(str(BUSYBOX), arcname="bin/busybox")
        for applet in APPLETS:
            _link(tar, f"bin/{applet}", "busybox")
        for name in SBIN_LINKS:
            _link(tar, f"usr/sbin/{name}", "/bin/busybox")
        _file(tar, "etc/passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
        _file(tar, "etc/group", "root:x:0:\nnogroup:x:65534:\n")
    tmp.rename(out)
    return out


def _dir(tar: tarfile.TarFile, name: str, mode: int) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, mode
    tar.addfile(info)


def _link(tar: tarfile.TarFile, name: str, target: str) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = tarfile.SYMTYPE, target, 0o777
    tar.addfile(info)


def _file(tar: tarfile.TarFile, name: str, text: str) -> None:
    data = text.encode()
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o644
    tar.addfile(info, io.BytesIO(data))


def clear_cache() -> None:
    """Removes the cached tars (tests never need this; for a developer changing the layout)."""
    shutil.rmtree(CACHE_DIR, ignore_errors=True)
