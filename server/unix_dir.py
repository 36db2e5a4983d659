"""The UNIX socket's directory must be ours alone: whoever can write it can put a listener in our socket's place.

A client (`falconet publish` as root, a local falco-client) trusts whatever answers at the socket path. If
another user can write the directory, or any directory above it without the sticky bit, they can remove or
rename our socket and bind their own, and receive the next publish connection. So the directory is created
0755, and a directory that another user owns, or that group or others can write, is refused before binding,
with the fix in the message. Directories above it may be world-writable only with the sticky bit (like /tmp),
which keeps others from renaming what they do not own.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from falconet.server.errors import ConfigError


def _owner_ok(st: os.stat_result) -> bool:
    return st.st_uid in (0, os.geteuid())


def _problem(directory: Path, *, leaf: bool) -> str | None:
    st = directory.stat()
    if not _owner_ok(st):
        return f"{str(directory)!r} is owned by uid {st.st_uid}, not by root or this server's user"
    writable = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    if writable and (leaf or not st.st_mode & stat.S_ISVTX):
        who = "others" if st.st_mode & stat.S_IWOTH else "its group"
        return (
            f"{str(directory)!r} (mode {stat.S_IMODE(st.st_mode):04o}) can be written by {who}, who could replace "
            f"the socket with their own listener; use a directory only root can write (chmod go-w "
            f"{directory}), e.g. /run/falconet"
        )
    return None


def prepare_socket_directory(socket_path: Path) -> None:
    """Creates the socket's directory (0755) if missing; ConfigError when it or a parent is not safe."""
    directory = socket_path.parent
    address = f"unix://{socket_path}"
    missing = [d for d in (directory, *directory.parents) if not d.exists()]
    try:
        for each in reversed(missing):  # 0755 exactly, whatever the umask: the check below would refuse more
            os.mkdir(each, 0o755)
            os.chmod(each, 0o755)
    except FileExistsError:  # made meanwhile by someone else: the check below judges it
        pass
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on {address}: cannot create {str(directory)!r}: {exc.strerror}"
        ) from None
    resolved = directory.resolve()
    # The real directory first (a symlink is judged where it points), then the path as written.
    chains = [resolved, *resolved.parents]
    if resolved != directory:
        chains += [directory, *directory.parents]
    for each in chains:
        problem = _problem(each, leaf=each in (directory, resolved))
        if problem is not None:
            raise ConfigError(f"cannot listen on {address}: the socket's directory is not safe: {problem}")
