"""The kernel's cache of the prefix trie's answers by a path's first 8 bytes (probe_openfilter.h's open_heads)
never changes a decision: as root, the real BPF program.

The cache is used only for heads no atom longer than 8 bytes starts with (open_long_heads), and each answer
carries the filter's generation, so a reload never reuses an answer of the earlier atoms. Each test opens the
same paths more than once (the second open is decided from the cache where it may be) and expects exactly the
opens sensor/openfilter.py's model keeps (tests/rules/test_prefilter_property.py proves the model
conservative)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from falconet.model.event import Event
from falconet.sensor.openfilter import HEAD_LEN, HEAD_LONG, compile_maps, open_need

from .conftest import PY, LiveSensor, collect

pytestmark = pytest.mark.bpf


def run_opens(sensor: LiveSensor, spec: dict[str, list[str]], paths: list[str], barrier: str) -> list[str]:
    """Sets the filter to `spec`, opens each path read-only in a child, then the (unclean) barrier; returns the
    paths of the child's opens that reached user space, in order."""
    code = "\n".join([
        "import os",
        f"for p in {paths!r}:",
        "    os.close(os.open(p, os.O_RDONLY))",
        f"os.close(os.open({barrier!r}, os.O_RDONLY | os.O_CREAT, 0o600))",
        "print(os.getpid(), flush=True)",
    ])  # fmt: skip

    def workload() -> int:
        return int(subprocess.run([PY, "-c", code], check=True, capture_output=True, text=True, timeout=60).stdout)

    wanted = set(paths) | {barrier}

    def keep(pid: int, e: Event) -> bool:
        return e.proc.pid == pid and e.type == "openat" and e.fd is not None and e.fd.nameraw in wanted

    sensor.sensor.set_open_prefixes(spec)
    _, events = collect(sensor, workload, keep, lambda k: any(e.fd.nameraw == barrier for e in k))  # type: ignore[union-attr]
    got: list[str] = []
    for e in events:
        name = e.fd.nameraw if e.fd is not None else None
        if name is not None and name != barrier:
            got.append(name)
    return got


def expected(spec: dict[str, list[str]], paths: list[str]) -> list[str]:
    maps = compile_maps(spec)
    return [p for p in paths if maps.keeps(p.encode(), open_need("openat", os.O_RDONLY))]


def cached_kinds(sensor: LiveSensor, path: str) -> int | None:
    """The kinds the kernel cached for the path's head under the filter's current generation, on any CPU (None:
    not cached; probe_openfilter.h's HEAD_LONG entries, which only say "ask the trie", count as not cached)."""
    head = int.from_bytes(path.encode()[:HEAD_LEN], "little")
    gen = sensor.sensor._filter_gen
    heads = sensor.sensor._bpf[b"open_heads"]
    for key in heads.keys():
        for slot in heads.getvalue(key):
            if slot.head == head and slot.val >> 8 == gen and not slot.val & HEAD_LONG:
                return int(slot.val) & 0xFF
    return None


def test_a_head_a_longer_atom_starts_with_is_never_cached(sensor: LiveSensor, short_tmp_path: Path) -> None:
    # "/tmp/" covers writes only; the longer atom {base}/keep (same first 8 bytes as every path here) covers
    # reads: caching the head's answer after base/other would drop base/keep.
    base = str(short_tmp_path)
    for name in ("other", "keep"):
        (short_tmp_path / name).write_text("x")
    spec = {"/tmp/": ["write"], f"{base}/keep": ["read"]}
    paths = [f"{base}/other", f"{base}/keep", f"{base}/other", f"{base}/keep"]
    try:
        got = run_opens(sensor, spec, paths, f"{base}/./END")
        assert cached_kinds(sensor, base) is None
    finally:
        sensor.sensor.set_open_prefixes(None)
    assert got == expected(spec, paths) == [f"{base}/keep", f"{base}/keep"]


def test_a_cached_answer_decides_and_a_reload_replaces_it(sensor: LiveSensor, short_tmp_path: Path) -> None:
    base = str(short_tmp_path)
    (short_tmp_path / "a").write_text("x")
    (short_tmp_path / "b").write_text("x")
    paths = [f"{base}/a", f"{base}/b", f"{base}/a"]
    try:
        writes_only = {"/tmp/": ["write"], "/etc/shadow-not-here": ["read"]}
        got = run_opens(sensor, writes_only, paths, f"{base}/./END")
        assert got == expected(writes_only, paths) == []
        assert cached_kinds(sensor, base) == 2  # the write kind: the later opens were decided from the cache
        reads = {"/tmp/": ["read"]}
        got = run_opens(sensor, reads, paths, f"{base}/./END2")
        assert got == expected(reads, paths) == paths
        assert cached_kinds(sensor, base) == 1
    finally:
        sensor.sensor.set_open_prefixes(None)
