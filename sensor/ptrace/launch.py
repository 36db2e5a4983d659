"""The launcher a traced workload starts as (`python -I -S launch.py SYNC_FD FILTER_HEX COMMAND...`).

Run as its own interpreter, not forked from the daemon: the daemon has threads (gRPC, outputs), and a forked
copy of a threaded Python may deadlock before it reaches exec. Standard library only (it runs with -I -S).
It sets no_new_privs (the kernel's condition for an unprivileged seccomp filter), waits until the tracer has
attached (one byte on SYNC_FD; end of file means the tracer gave up), installs the filter and execs COMMAND,
which is the first traced syscall.
"""

import ctypes
import os
import sys

PR_SET_SECCOMP, PR_SET_NO_NEW_PRIVS, SECCOMP_MODE_FILTER = 22, 38, 2


class _Fprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]


def main(argv: list[str]) -> int:
    sync_fd, program, command = int(argv[1]), bytes.fromhex(argv[2]), argv[3:]
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        sys.stderr.write(f"falconet ptrace launcher: no_new_privs: {os.strerror(ctypes.get_errno())}\n")
        return 126
    if os.read(sync_fd, 1) != b"g":
        return 126  # the tracer could not attach and said so itself
    os.close(sync_fd)
    prog = _Fprog(len(program) // 8, program)
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) != 0:
        sys.stderr.write(f"falconet ptrace launcher: seccomp filter: {os.strerror(ctypes.get_errno())}\n")
        return 126
    try:
        os.execvp(command[0], command)
    except OSError as exc:
        sys.stderr.write(f"falconet ptrace launcher: cannot run {command[0]!r}: {exc.strerror}\n")
    return 127


if __name__ == "__main__":
    sys.exit(main(sys.argv))
