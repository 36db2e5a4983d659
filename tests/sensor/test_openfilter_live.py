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
    code = "\n".join([
        "import os",
        f"os.chdir({str(tmp_path / 'other')!r})",
        f"for p, f in {plan!r}:",
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

    raws = {raw for raw, _ in plan} | {barrier}

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
    expected = [(raw, flags & ~os.O_CLOEXEC) for raw, flags in plan
                if raw == directory or compile_maps(spec).keeps(raw.encode(), open_need("openat", flags))]
    expected.append((barrier, O_RDONLY | os.O_CREAT))
    dropped = len(plan) + 1 - len(expected)
    assert dropped > 40 and len(expected) > 40  # both decisions are exercised
    assert got == expected
