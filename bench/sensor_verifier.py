"""The sensor's BPF programs as the kernel holds them: translated and JITed sizes and how many instructions the
verifier processed to accept each (its budget is 1,000,000 per program; a change that nears it must split work
into tail programs, as the exec tails of sensor/probe_exec.h are).

Loads the program of this checkout exactly as the sensor does (all tails included) and reads each program's
bpf_prog_info (BPF_OBJ_GET_INFO_BY_FD); nothing runs, so the figures do not depend on the machine's load.

Run: python -m bench.sensor_verifier   (root)
"""

from __future__ import annotations

import ctypes
import os
import struct
import sys

SYS_BPF = 321  # x86_64
BPF_OBJ_GET_INFO_BY_FD = 15
INFO_SIZE = 232  # struct bpf_prog_info up to attach_btf_id; the kernel fills what it knows
# offsets in struct bpf_prog_info (include/uapi/linux/bpf.h)
OFF_JITED_LEN, OFF_XLATED_LEN, OFF_VERIFIED_INSNS = 16, 20, 216
VERIFIER_LIMIT = 1_000_000


def prog_info(fd: int) -> tuple[int, int, int]:
    """(xlated bytes, jited bytes, verified instructions) of the program behind `fd`."""
    libc = ctypes.CDLL(None, use_errno=True)
    info = ctypes.create_string_buffer(INFO_SIZE)
    # union bpf_attr.info: bpf_fd u32, info_len u32, info u64 (pointer)
    attr = ctypes.create_string_buffer(struct.pack("<IIQ", fd, INFO_SIZE, ctypes.addressof(info)), 128)
    if libc.syscall(SYS_BPF, BPF_OBJ_GET_INFO_BY_FD, attr, 128) != 0:
        raise OSError(ctypes.get_errno(), "BPF_OBJ_GET_INFO_BY_FD failed")
    raw = info.raw
    jited, xlated = struct.unpack_from("<II", raw, OFF_JITED_LEN)
    (verified,) = struct.unpack_from("<I", raw, OFF_VERIFIED_INSNS)
    return xlated, jited, verified


def main() -> int:
    if os.geteuid() != 0:
        print("bench.sensor_verifier needs root (it loads BPF programs)", file=sys.stderr)
        return 1
    from falconet.sensor import Sensor, SensorConfig

    s = Sensor(SensorConfig(syscalls=set(), seed_from_proc=False))
    s.start()
    try:
        funcs = s._bpf.funcs  # bcc's loaded programs: name -> Function(fd)
        rows = sorted((name.decode(), prog_info(f.fd)) for name, f in funcs.items())
    finally:
        s.close()
    print(f"{'program':44} {'xlated B':>9} {'jited B':>9} {'verified insns':>15} {'of budget':>10}")
    for name, (xlated, jited, verified) in rows:
        print(f"{name:44} {xlated:9,} {jited:9,} {verified:15,} {verified / VERIFIER_LIMIT:10.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
