"""The seccomp-bpf filter installed in a launched workload: SECCOMP_RET_TRACE for the syscalls the rules and
the tracer's state need, SECCOMP_RET_ALLOW for every other, so untraced syscalls never stop the tracee.

A classic BPF program over struct seccomp_data: the arch is checked first (the numbers below are x86-64's;
a 32-bit int 0x80 syscall or an x32 one would carry other numbers), then a binary search over the sorted traced
numbers (JGE splits down to leaves of at most LEAF equality tests, each leaf with its own returns), so a
syscall meets about 2*log2(n) comparisons rather than n. On Linux 5.11+ the kernel's seccomp action cache
answers a syscall this filter always allows from a bitmap without running it, so the layout matters there only
for the traced syscalls; older kernels (AWS Fargate's 5.10) run it at every syscall (bench.ptrace_filter).
The data field of SECCOMP_RET_TRACE says why a syscall stopped (TRACED, or FOREIGN for another ABI), which the
tracer reads with PTRACE_GETEVENTMSG. Pure: bytes out; launch.py installs them.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

AUDIT_ARCH_X86_64 = 0xC000003E
X32_SYSCALL_BIT = 0x40000000
RET_ALLOW, RET_TRACE = 0x7FFF0000, 0x7FF00000
DATA_TRACED, DATA_FOREIGN = 1, 2
_LD_W_ABS, _JEQ_K, _JGE_K, _RET_K = 0x20, 0x15, 0x35, 0x06
_OFF_NR, _OFF_ARCH = 0, 4
MAX_TRACED = 250  # a conditional jump reaches at most 255 instructions ahead (the search's left half)
LEAF = 4  # equality tests in a leaf of the search


def _insn(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("<HBBI", code, jt, jf, k)


def _search(nrs: list[int]) -> list[bytes]:
    """The search over sorted numbers (the accumulator holds the syscall number): TRACE for these, ALLOW else."""
    if len(nrs) <= LEAF:
        tests = [_insn(_JEQ_K, len(nrs) - i, 0, nr) for i, nr in enumerate(nrs)]
        return tests + [_insn(_RET_K, 0, 0, RET_ALLOW), _insn(_RET_K, 0, 0, RET_TRACE | DATA_TRACED)]
    mid = len(nrs) // 2
    below, above = _search(nrs[:mid]), _search(nrs[mid:])
    if len(below) > 255:
        raise ValueError("the filter's search does not fit classic BPF's jumps")
    return [_insn(_JGE_K, len(below), 0, nrs[mid]), *below, *above]


def build_filter(numbers: Iterable[int]) -> bytes:
    """The program (struct sock_filter[]) that traces these x86-64 syscall numbers and lets the rest run."""
    nrs = sorted(set(numbers))
    if len(nrs) > MAX_TRACED:
        raise ValueError(f"{len(nrs)} syscalls to trace; the filter handles at most {MAX_TRACED}")
    out = [
        _insn(_LD_W_ABS, 0, 0, _OFF_ARCH),
        _insn(_JEQ_K, 0, 2, AUDIT_ARCH_X86_64),  # not x86-64: to the FOREIGN return
        _insn(_LD_W_ABS, 0, 0, _OFF_NR),
        _insn(_JGE_K, 0, 1, X32_SYSCALL_BIT),  # x32 ABI: FOREIGN; else over it to the search
        _insn(_RET_K, 0, 0, RET_TRACE | DATA_FOREIGN),
        *_search(nrs),
    ]
    return b"".join(out)


def run_filter(program: bytes, nr: int, arch: int = AUDIT_ARCH_X86_64) -> int:
    """Interprets the program for one syscall (the subset build_filter emits): for tests of the filter's
    logic without installing it."""
    return run_counted(program, nr, arch)[0]


def run_counted(program: bytes, nr: int, arch: int = AUDIT_ARCH_X86_64) -> tuple[int, int]:
    """run_filter's result and the number of instructions it ran (the filter's cost where it runs)."""
    pc, acc, ran = 0, 0, 0
    insns: list[tuple[int, int, int, int]] = [struct.unpack_from("<HBBI", program, i)
                                              for i in range(0, len(program), 8)]
    while True:
        code, jt, jf, k = insns[pc]
        ran += 1
        if code == _LD_W_ABS:
            acc = nr if k == _OFF_NR else arch
            pc += 1
        elif code in (_JEQ_K, _JGE_K):
            hit = acc == k if code == _JEQ_K else acc >= k
            pc += 1 + (jt if hit else jf)
        elif code == _RET_K:
            return k, ran
        else:
            raise ValueError(f"instruction {code:#x} is not one build_filter emits")
