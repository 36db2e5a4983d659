"""The live kernel decides each open as sensor/openfilter.py's model says: as root, the real BPF program.

The filter gets prefixes, base names and suffixes (several lengths, each with its kinds), and a child process
opens clean, unclean, relative, trailing-slash, missing and directory paths with every kind of flags; the
opens that reach user space must be exactly those the model keeps (tests/rules/test_prefilter_property.py
proves the model conservative against the rule engine)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from falconet.model.event import Event
from falconet.sensor.openfilter import compile_maps, open_need

from .conftest import PY, LiveSensor, collect

pytestmark = pytest.mark.bpf

O_RDONLY, O_WRONLY, O_RDWR = os.O_RDONLY, os.O_WRONLY, os.O_RDWR
FLAGS = [O_RDONLY, O_WRONLY, O_RDWR, O_WRONLY | os.O_TRUNC, O_RDONLY | os.O_CLOEXEC, O_WRONLY | os.O_APPEND,
         O_RDONLY | os.O_NONBLOCK, 3]  # fmt: skip
NAMES = ["name.log", "xname.log", "a_suffix_x", "exact", "plain", "ab"]


def opens(base: Path) -> list[tuple[str, int]]:
    """(path as passed, flags), in the order the child opens them."""
    out: list[tuple[str, int]] = []
    for d in ("pre", "other"):
        for name in NAMES:
            for flags in FLAGS:
                out.append((f"{base}/{d}/{name}", flags))
    b = str(base)
    for raw in (f"{b}/other/../other/plain", f"{b}//other/plain", f"{b}/other/./plain", f"{b}/other/plain/",
                f"{b}/oth../x", "plain", f"{b}/other/missing", f"{b}/other/missing.log", f"{b}/other/exact"):
        out.append((raw, O_RDONLY))
    out.append((f"{b}/other/sub", O_RDONLY))  # a directory opened without O_DIRECTORY: always kept
    out.append((f"{b}/other/sub", O_RDONLY | os.O_DIRECTORY))
    out.extend((raw, O_RDONLY) for raw in tricky(b))
    # The same opens once the process's fd table has grown past the one files_struct holds (the kernel reads a
    # directory's mode through another path then)
    out.append((GROW, 0))
    out.append((f"{b}/other/sub", O_RDONLY))
    out.append((f"{b}/other/plain", O_RDONLY))
    out.append((f"{b}/pre/plain", O_RDONLY))
    return out


GROW = "GROW"  # in the plan: the child makes an fd above 64 (its fd table grows) instead of an open


def tricky(b: str) -> list[str]:
    """Paths whose cleanliness the kernel's word-at-a-time scan must decide as the byte-wise model does: every
    dot and slash pattern at every offset within an 8-byte word (so each also straddles two words), names made
    of dots that are not `.` or `..`, and lengths around the longest path the kernel scans."""
    out = [f"{b}/other/.", f"{b}/other/..", f"{b}/other/...", f"{b}/other/.hidden", f"{b}/other/x.", f"{b}/other/..x",
           f"{b}/other/x..", f"{b}/other/x../y", f"{b}/other/a..b", f"{b}/other/sub/.", f"{b}/other/sub/..",
           "/.", "/..", "/...", "//", "/a", "/./a", "/../a"]  # fmt: skip
    for pad in range(9):
        d = f"{b}/other/{'p' * pad}"
        out += [f"{d}/./x", f"{d}//x", f"{d}/../x", f"{d}/..", f"{d}/.", f"{d}../x", f"{d}/...x", f"{d}.x",
                f"{d}/.x/y", f"{d}/..x", f"{d}/x.", f"{d}/x./y"]  # fmt: skip
    for total in range(246, 256):  # the model's limit: at most PATH_SCAN_MAX - 4 bytes (252) without the NUL
        head = f"{b}/other/"
        out.append(head + "q" * (total - len(head)))
        out.append(head + "q" * (total - len(head) - 2) + "/.")
        out.append(head + "q" * (total - len(head) - 3) + "/..")
    return out


def test_the_kernel_keeps_back_exactly_what_the_model_drops(sensor: LiveSensor, short_tmp_path: Path) -> None:
    tmp_path = short_tmp_path  # prefixes of it must fit the kernel's PREFIX_MAX
    for d in ("pre", "other", "oth.."):
        (tmp_path / d).mkdir()
        for name in NAMES:
            (tmp_path / d / name).write_text("x")
    (tmp_path / "oth.." / "x").write_text("x")
    (tmp_path / "other" / "sub").mkdir()
    spec = {
        f"{tmp_path}/pre/": ["read"],
        "*/name.log": ["other"],
        "*suffix_x": ["write"],
        "*/exact": ["read", "write", "other"],
        "*b": ["write"],
    }
    maps = compile_maps(spec)
    assert len(maps.lengths) == 4  # several suffix lengths, each tried by the kernel
    plan = opens(tmp_path)
    barrier = f"{tmp_path}/./END"  # unclean: always emitted
    # The opens run in a grandchild forked once the child has closed every fd above 2: a process forked while its
    # parent holds a high fd inherits a grown fd table (pytest may hold one), and the kernel reads a directory's
    # mode differently for the small table every process starts with; GROW then grows it.
    code = "\n".join([
        "import os",
        "os.closerange(3, 65536)",
        "if os.fork():",
        "    os._exit(os.waitstatus_to_exitcode(os.wait()[1]))",
        f"os.chdir({str(tmp_path / 'other')!r})",
        f"for p, f in {plan!r}:",
        f"    if p == {GROW!r}:",
        "        os.dup2(0, 200)",
        "        continue",
        "    try:",
        "        os.close(os.open(p, f))",
        "    except OSError:",
        "        pass",
        f"os.close(os.open({barrier!r}, os.O_RDONLY | os.O_CREAT, 0o600))",
        "print(os.getpid(), flush=True)",
    ])  # fmt: skip

    def workload() -> int:
        import subprocess

        return int(subprocess.run([PY, "-c", code], check=True, capture_output=True, text=True, timeout=60).stdout)

    raws = {raw for raw, _ in plan if raw != GROW} | {barrier}

    def keep(pid: int, e: Event) -> bool:
        return e.proc.pid == pid and e.type == "openat" and e.fd is not None and e.fd.nameraw in raws

    try:
        sensor.sensor.set_open_prefixes(spec)
        _, events = collect(sensor, workload, keep, lambda k: any(e.fd.nameraw == barrier for e in k))  # type: ignore[union-attr]
    finally:
        sensor.sensor.set_open_prefixes(None)
    # os.open adds O_CLOEXEC and the kernel O_LARGEFILE (both quiet: they change no decision)
    got = [(e.fd.nameraw, int(e.args["flags"]) & ~(0o100000 | os.O_CLOEXEC)) for e in events if e.fd is not None]
    directory = f"{tmp_path}/other/sub"
    expected = [(raw, flags & ~os.O_CLOEXEC) for raw, flags in plan if raw != GROW and
                (raw == directory or compile_maps(spec).keeps(raw.encode(), open_need("openat", flags)))]
    expected.append((barrier, O_RDONLY | os.O_CREAT))
    dropped = len(plan) - len(expected)
    assert dropped > 40 and len(expected) > 40  # both decisions are exercised
    assert got == expected
