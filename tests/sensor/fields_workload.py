"""A workload that exercises what the sensor can fill (run as its own process by tests/sensor's field tests).

Files, directories and links under a scratch folder, TCP/UDP over IPv4 and IPv6 loopback, UNIX sockets,
pipes, fd duplication, a fork that execs with arguments and environment, identity and session changes, a
thread, a signal, and executables run from an overlayfs upper layer and from a memfd: each event family the
field registry reads from. Needs root (mount, loginuid). Usage: python fields_workload.py DIR.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading

NOBODY = 65534  # Debian's nobody/nogroup: in every passwd and group file


def files(base: str) -> None:
    os.chdir(base)
    path = os.path.join(base, "data.txt")
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
    os.write(fd, b"hello")
    os.close(fd)
    fd = os.open("data.txt", os.O_RDONLY)  # relative: resolved against the cwd
    os.read(fd, 5)
    os.dup2(fd, 50)
    os.close(50)
    os.close(fd)
    os.rename(path, path + ".moved")
    os.link(path + ".moved", path + ".hard")
    os.symlink(path + ".moved", path + ".sym")
    os.chmod(path + ".moved", 0o600)
    os.chown(path + ".moved", 0, 0)
    os.truncate(path + ".moved", 1)
    os.mkdir(os.path.join(base, "sub"))
    os.rmdir(os.path.join(base, "sub"))
    for name in ("data.txt.hard", "data.txt.sym", "data.txt.moved"):
        os.unlink(os.path.join(base, name))
    r, w = os.pipe()
    os.write(w, b"x")
    os.close(r)
    os.close(w)
    os.close(os.open(os.path.join(base, "tool"), os.O_CREAT | os.O_WRONLY, 0o755))  # an executable created
    os.unlink(os.path.join(base, "tool"))
    mfd = os.memfd_create("falconet-fields")
    os.close(mfd)


def network(base: str) -> None:
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        with socket.socket(family, socket.SOCK_STREAM) as srv:
            srv.bind((host, 0))
            srv.listen(1)
            with socket.socket(family, socket.SOCK_STREAM) as cli:
                cli.connect(srv.getsockname()[:2])
                conn, _ = srv.accept()
                with conn:
                    cli.sendall(b"ping")
                    conn.recv(4)
        with socket.socket(family, socket.SOCK_DGRAM) as rx, socket.socket(family, socket.SOCK_DGRAM) as tx:
            rx.bind((host, 0))
            tx.sendto(b"dgram", rx.getsockname()[:2])
            rx.recvfrom(16)
    path = os.path.join(base, "unix.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as srv:
        srv.bind(path)
        srv.listen(1)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as cli:
            cli.connect(path)
            conn, _ = srv.accept()
            conn.close()
    a, b = socket.socketpair()
    a.close()
    b.close()


def processes() -> None:
    """A child that becomes a session leader with a controlling terminal, takes a login uid, drops to nobody
    and execs with arguments and environment: values that differ from an empty event's (uid 0, no tty)."""
    leader, follower = os.openpty()
    pid = os.fork()
    if pid == 0:
        os.setsid()
        os.close(os.open(os.ttyname(follower), os.O_RDWR))  # the first tty a session leader opens is its own
        with open("/proc/self/loginuid", "w") as f:
            f.write(str(NOBODY))
        os.setgid(NOBODY)
        os.setuid(NOBODY)
        env = {"PATH": "/usr/bin:/bin", "FALCONET_FIELDS": "1"}
        os.execve("/bin/sh", ["sh", "-c", "exec /bin/true one two"], env)
    os.waitpid(pid, 0)
    os.close(leader)
    os.close(follower)
    os.kill(os.getpid(), 0)
    worker = threading.Thread(target=lambda: os.close(os.open("/dev/null", os.O_RDONLY)))  # not the main thread
    worker.start()
    worker.join()


def run(argv: list[str]) -> None:
    pid = os.fork()
    if pid == 0:
        try:
            os.execv(argv[0], argv)
        finally:
            os._exit(127)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{argv[0]} failed: {status}")


def executables(base: str) -> None:
    """An executable in an overlayfs upper layer (as in a container that wrote it) and one run from a memfd
    (fileless): proc.is_exe_upper_layer, proc.is_exe_from_memfd."""
    with open("/bin/true", "rb") as f:
        image = f.read()
    dirs = {name: os.path.join(base, name) for name in ("lower", "upper", "work", "merged")}
    for d in dirs.values():
        os.mkdir(d)
    opts = f"lowerdir={dirs['lower']},upperdir={dirs['upper']},workdir={dirs['work']}"
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", opts, dirs["merged"]], check=True)
    try:
        exe = os.path.join(dirs["merged"], "true")
        with open(exe, "wb") as f:
            f.write(image)
        os.chmod(exe, 0o755)
        run([exe])
    finally:
        subprocess.run(["umount", dirs["merged"]], check=True)
    mfd = os.memfd_create("falconet-fields", 0)  # no MFD_CLOEXEC: the exec goes through /proc/self/fd
    os.write(mfd, image)
    run([f"/proc/self/fd/{mfd}"])
    os.close(mfd)


def main() -> int:
    base = sys.argv[1]
    files(base)
    network(base)
    processes()
    executables(base)
    return 0


if __name__ == "__main__":
    sys.exit(main())
