"""The one node requirement bcc brings: the running kernel's headers at /lib/modules/$(uname -r)/build.

bcc compiles the sensor's C program on the node at start, against those headers. On a host, a package puts
them there (Debian: linux-headers-$(uname -r), or `make setup`); in a container they come from the host, by
mounting the host's /lib/modules and /usr/src read-only (the build entry is usually a link into /usr/src, so
/lib/modules alone leaves it dangling). This check runs before the rules load, so a node without them says
so in one sentence instead of a compiler error after a long start.
"""

from __future__ import annotations

import os
from pathlib import Path

MODULES = Path("/lib/modules")


def headers_problem(release: str | None = None, modules: Path = MODULES) -> str | None:
    """None when the headers are there; otherwise the one sentence the daemon logs before it stops."""
    release = release or os.uname().release
    build = modules / release / "build"
    if build.is_symlink() and not build.exists():
        state = f"is a link to {os.readlink(build)}, which does not exist here"
    elif not build.exists():
        state = "does not exist"
    elif not build.is_dir():
        state = "is not a directory"
    else:
        try:
            empty = next(build.iterdir(), None) is None
        except OSError as exc:
            empty, state = True, f"cannot be read ({exc.strerror})"
        else:
            state = "is empty"
        if not empty:
            return None
    return (
        f"the eBPF sensor cannot be compiled: the kernel headers bcc needs are missing ({build} {state}); "
        f"install the headers of kernel {release} on the host (Debian: apt-get install linux-headers-{release}, "
        "or `make setup`), or, in a container, mount the host's /lib/modules and /usr/src read-only"
    )
