"""The UNIX socket's directory must be writable by the server's user alone (issue 10, defect 7): otherwise
another user can remove the socket and bind their own listener in its place."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from resources import require_root

from falconet.server.app import AlertServer
from falconet.server.config import ServerConfig
from falconet.server.errors import ConfigError

NOBODY = 65534


@pytest.fixture
def base() -> Iterator[Path]:
    """A short directory (AF_UNIX paths are limited to 108 bytes) that only root can write."""
    path = Path(tempfile.mkdtemp(prefix="fn-dir-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _start(sock: Path) -> None:
    async def main() -> None:
        server = AlertServer(ServerConfig(listen=(f"unix://{sock}",)))
        await server.start()
        await server.stop(0)

    asyncio.run(main())


@pytest.mark.parametrize(
    ("mode", "who"), [(0o777, "others"), (0o1777, "others"), (0o775, "its group"), (0o757, "others")]
)
def test_a_socket_directory_others_can_write_is_refused(base: Path, mode: int, who: str) -> None:
    directory = base / "shared"
    directory.mkdir()
    directory.chmod(mode)
    with pytest.raises(ConfigError) as info:
        _start(directory / "f.sock")
    text = str(info.value)
    assert f"can be written by {who}" in text and str(directory) in text and "chmod go-w" in text
    assert not (directory / "f.sock").exists()


@pytest.mark.root
def test_a_socket_directory_owned_by_another_user_is_refused(base: Path) -> None:
    require_root("giving a directory to another user")
    directory = base / "theirs"
    directory.mkdir(mode=0o755)
    os.chown(directory, NOBODY, NOBODY)
    with pytest.raises(ConfigError, match=f"owned by uid {NOBODY}"):
        _start(directory / "f.sock")


def test_a_writable_parent_without_sticky_bit_is_refused(base: Path) -> None:
    parent = base / "open"
    parent.mkdir()
    parent.chmod(0o777)
    with pytest.raises(ConfigError, match="open.*can be written by others"):
        _start(parent / "mine" / "f.sock")


def test_a_symlinked_directory_is_judged_where_it_points(base: Path) -> None:
    target = base / "target"
    target.mkdir()
    target.chmod(0o777)
    (base / "link").symlink_to(target)
    with pytest.raises(ConfigError, match="target.*can be written by others"):
        _start(base / "link" / "f.sock")


@pytest.mark.root
def test_the_directory_made_for_the_socket_keeps_other_users_from_replacing_it(base: Path) -> None:
    require_root("acting as another user")
    sock = base / "run" / "falconet" / "f.sock"
    old = os.umask(0)
    try:
        async def main() -> tuple[int, str]:
            server = AlertServer(ServerConfig(listen=(f"unix://{sock}",)))
            await server.start()
            try:
                # Another user tries to take the socket's place: remove it, or rename the directory.
                attack = (
                    "import os,sys\n"
                    f"os.setgid({NOBODY}); os.setuid({NOBODY})\n"
                    "for act in (lambda: os.unlink(sys.argv[1]), lambda: os.rename(sys.argv[2], sys.argv[2] + '.x'),"
                    " lambda: open(sys.argv[2] + '/other', 'w')):\n"
                    "    try: act(); print('done'); sys.exit(1)\n"
                    "    except PermissionError: pass\n"
                    "print('refused')\n"
                )
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-c", attack, str(sock), str(sock.parent), stdout=subprocess.PIPE
                )
                out, _ = await proc.communicate()
                return proc.returncode or 0, out.decode()
            finally:
                await server.stop(0)

        status, out = asyncio.run(main())
    finally:
        os.umask(old)
    assert (status, out.strip()) == (0, "refused")
    assert sock.parent.stat().st_mode & 0o777 == 0o755
