"""What the ptrace driver's seccomp filter costs a syscall it does not trace (getpid), with no tracer at all:
bare, a one-instruction ALLOW filter, the driver's filter for the default rules' syscalls, and both again
behind a load of args[0], which the kernel's seccomp action cache (Linux 5.11+) cannot decide ahead, so the
filter runs at every syscall as it would on an older kernel. Rows interleaved per repeat; the median and the
minimum of the repeats' CPU ns per getpid (the minimum: a shared machine only adds time), and the median's
ratio to bare. Explains the `getpid` row of bench.ptrace_overhead: what is left there beyond bare is this.

    python -m bench.ptrace_filter [--calls N] [--repeat N]
"""

from __future__ import annotations

import argparse
import statistics
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

from bench._daemon_common import machine_state
from falconet.sensor import syscalls as sc
from falconet.sensor.ptrace.seccomp import RET_ALLOW, build_filter
from falconet.sensor.ptrace.tracer import traced_names

LD_ARG0 = struct.pack("<HBBI", 0x20, 0, 0, 16)  # BPF_LD|BPF_W|BPF_ABS of seccomp_data.args[0]: not constant


def variants() -> dict[str, bytes | None]:
    allow = struct.pack("<HBBI", 0x06, 0, 0, RET_ALLOW)
    full = build_filter(sc.BY_NAME[n].nr for n in traced_names(None))
    return {"bare": None, "ALLOW only": allow, f"driver's filter ({len(full) // 8} insns)": full,
            "ALLOW only, uncached": LD_ARG0 + allow, "driver's filter, uncached": LD_ARG0 + full}


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.ptrace_filter")
    p.add_argument("--calls", type=int, default=3_000_000, help="getpid calls per run")
    p.add_argument("--repeat", type=int, default=9, help="runs per row")
    args = p.parse_args(argv)
    rows = variants()
    runs: dict[str, list[float]] = {name: [] for name in rows}
    print(f"machine before: {machine_state()}")
    with tempfile.TemporaryDirectory() as tmp:
        exe = Path(tmp) / "ptrace_filter"
        subprocess.run(["gcc", "-O2", "-o", str(exe), str(Path(__file__).with_name("ptrace_filter.c"))], check=True)
        for _ in range(args.repeat):
            for name, prog in rows.items():
                cmd = [str(exe), str(args.calls), *([prog.hex()] if prog is not None else [])]
                runs[name].append(float(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout))
    print(f"machine after: {machine_state()}")
    bare = statistics.median(runs["bare"])
    print(f"{'getpid under':32} {'median ns':>9} {'min ns':>7} {'x bare':>7}")
    for name, got in runs.items():
        med = statistics.median(got)
        print(f"{name:32} {med:9.1f} {min(got):7.1f} {med / bare:7.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
