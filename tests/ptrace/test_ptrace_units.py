"""The pure parts of the ptrace driver: the seccomp filter's decisions, the syscall set it traces, the CLI's
target spelling and Falco's engine.kind."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from falconet.sensor import syscalls as sc
from falconet.sensor.ptrace.seccomp import (
    AUDIT_ARCH_X86_64,
    DATA_FOREIGN,
    DATA_TRACED,
    RET_ALLOW,
    RET_TRACE,
    LEAF,
    MAX_TRACED,
    X32_SYSCALL_BIT,
    build_filter,
    run_counted,
    run_filter,
)
from falconet.sensor.ptrace.tracer import CRED_STATE, traced_names
from falconet.server.config_values import Problems
from falconet.server.config_engine import read_engine
from falconet.server.errors import DaemonError
from falconet.server.run_cli import source_spec
from falconet.server.source_ptrace import parse_target


def test_the_filter_traces_exactly_its_syscalls_and_flags_other_abis() -> None:
    traced = {sc.BY_NAME[n].nr for n in ("openat", "execve", "connect")}
    prog = build_filter(traced)
    for nr in range(0, 460):
        want = RET_TRACE | DATA_TRACED if nr in traced else RET_ALLOW
        assert run_filter(prog, nr) == want, nr
    assert run_filter(prog, 39) == RET_ALLOW  # getpid never stops
    assert run_filter(prog, 257 | X32_SYSCALL_BIT) == RET_TRACE | DATA_FOREIGN
    assert run_filter(prog, 5, arch=0x40000003) == RET_TRACE | DATA_FOREIGN  # i386 (int 0x80)
    assert run_filter(build_filter([]), 257, AUDIT_ARCH_X86_64) == RET_ALLOW


@settings(max_examples=300, deadline=None)
@given(st.sets(st.integers(min_value=0, max_value=470), max_size=MAX_TRACED))
def test_the_filters_search_traces_exactly_its_syscalls_in_logarithmic_steps(traced: set[int]) -> None:
    """The binary-search layout: every number decided right (traced ones, their neighbours, the rest), other
    ABIs flagged, and no syscall runs more than the header, one JGE per level, a leaf and a return."""
    prog = build_filter(traced)
    bound = 4 + math.ceil(math.log2(max(len(traced), 1))) + LEAF + 1
    for nr in range(0, 480):
        got, ran = run_counted(prog, nr)
        assert got == (RET_TRACE | DATA_TRACED if nr in traced else RET_ALLOW), nr
        assert ran <= bound, (nr, ran, bound)
    assert run_filter(prog, 1 | X32_SYSCALL_BIT) == RET_TRACE | DATA_FOREIGN
    assert run_filter(prog, 1, arch=0x40000003) == RET_TRACE | DATA_FOREIGN


def test_the_traced_set_is_the_rules_plus_the_state_syscalls() -> None:
    got = traced_names(frozenset({"symlink", "connect"}))
    assert {"symlink", "connect"} <= got
    assert sc.PROCESS_STATE | sc.FD_STATE | CRED_STATE <= got
    assert "read" not in got and "write" not in got  # named only, as the probe
    assert "read" not in traced_names(None)


def test_the_cli_spells_the_workload_into_the_source() -> None:
    assert source_spec("ptrace", [], ["--", "sh", "-c", "x"]) == 'ptrace:exec=["/usr/bin/sh", "-c", "x"]'
    assert source_spec("ptrace", [12, 13], []) == "ptrace:pid=12,13"
    assert parse_target('exec=["/usr/bin/sh", "-c", "x"]') == (["/usr/bin/sh", "-c", "x"], [])
    for bad in (("ptrace", [], []), ("ptrace", [1], ["x"]), ("ebpf", [1], []), ("ptrace", [], ["no-such-cmd-x"])):
        with pytest.raises(ValueError):
            source_spec(*bad)
    for arg in ("exec=[]", "exec=nope", "pid=x", "pid=-1", "other"):
        with pytest.raises(DaemonError):
            parse_target(arg)


def test_engine_kind_selects_the_source(tmp_path: Path) -> None:
    p = Problems(tmp_path)
    assert read_engine({"kind": "ptrace"}, p) == "ptrace"
    assert read_engine({"kind": "modern_ebpf"}, p) == "ebpf"
    assert read_engine({"kind": "nodriver"}, p) == "none"
    assert read_engine({"kind": "replay", "replay": {"capture_file": "c.jsonl"}}, p) == f"replay:{tmp_path}/c.jsonl"
    assert read_engine(None, p) is None and not p.problems
    for bad in ({"kind": "kmod"}, {"kind": "replay"}, "ebpf"):
        read_engine(bad, p)
    assert len(p.problems) == 3


def test_the_syscall_info_buffer_has_the_kernels_layout() -> None:
    """struct ptrace_syscall_info of linux/ptrace.h: the seccomp member (nr, args[6], ret_data) after the op,
    arch, instruction and stack pointers; the exit member's rval where nr is."""
    import ctypes

    from falconet.sensor.ptrace.kernel import SyscallInfo

    assert ctypes.sizeof(SyscallInfo) == 88
    assert (SyscallInfo.arch.offset, SyscallInfo.nr.offset, SyscallInfo.args.offset,
            SyscallInfo.ret_data.offset) == (4, 24, 32, 80)
    info = SyscallInfo()
    info.nr = (1 << 64) - 2
    assert info.rval() == -2
