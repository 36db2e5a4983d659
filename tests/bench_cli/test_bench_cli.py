"""The target benchmarks' arguments, pinned sources and ratio arithmetic (no timing: the benches themselves run
only by hand, on a quiet machine, and print their figures; see bench/RESULTS.md)."""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from resources import require_root

from bench import build_workload, daemon_latency, daemon_overhead, latency_path, sensor_overhead
from bench._daemon_common import Daemon
from bench._interleave import Figures, Row, interleaved, paired_ratio, verdict
from falconet.model.alert import Alert, Cursor, Priority
from falconet.rules import DEFAULT_RULES
from falconet.server.hub import LOSS_RULE


def test_build_workload_defaults_are_the_target_run(tmp_path: Path) -> None:
    args = build_workload.parse(["--workdir", str(tmp_path)])
    assert (args.repeat, args.jobs, args.rules) == (3, 2, ["default", "upstream"])


@pytest.mark.parametrize("bad", [["--rules", "default,nightly"], ["--rules", ","], ["--repeat", "0"],
                                 ["--jobs", "0"], ["--workdir", "/nonexistent/falconet-bench"]])
def test_build_workload_rejects_bad_arguments(bad: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        build_workload.parse(bad)
    assert exc.value.code == 2
    assert "error:" in capsys.readouterr().err


def _mirror(tmp_path: Path, orig_body: bytes, listed_sha: str | None = None) -> tuple[str, build_workload.SourcePackage]:
    """A file:// mirror holding a package whose .dsc lists the tarball (with its real sum unless told)."""
    pool = tmp_path / "mirror" / "pool" / "main" / "t" / "toy"
    pool.mkdir(parents=True)
    (pool / "toy_1.0.orig.tar.xz").write_bytes(orig_body)
    real = hashlib.sha256(orig_body).hexdigest()
    dsc = (f"Format: 3.0 (quilt)\nSource: toy\nChecksums-Sha256:\n {listed_sha or real} {len(orig_body)} "
           "toy_1.0.orig.tar.xz\n").encode()
    (pool / "toy_1.0-1.dsc").write_bytes(dsc)
    pkg = build_workload.SourcePackage(
        name="toy", version="1.0-1", pool="pool/main/t/toy", dsc="toy_1.0-1.dsc",
        dsc_sha256=hashlib.sha256(dsc).hexdigest(), orig="toy_1.0.orig.tar.xz", orig_sha256=real,
        orig_size=len(orig_body), tree="toy-1.0", configure=("true",), check=("true",))
    return (tmp_path / "mirror").as_uri(), pkg


def test_fetch_verifies_the_pins_and_keeps_the_file(tmp_path: Path) -> None:
    mirror, pkg = _mirror(tmp_path, b"pretend tarball")
    got = build_workload.fetch(pkg, tmp_path / "cache", mirror)
    assert got.read_bytes() == b"pretend tarball"
    (tmp_path / "mirror" / pkg.pool / pkg.orig).unlink()  # a second fetch uses the verified copy
    assert build_workload.fetch(pkg, tmp_path / "cache", mirror) == got


def test_fetch_refuses_a_tarball_that_does_not_match_its_pin(tmp_path: Path) -> None:
    mirror, pkg = _mirror(tmp_path, b"pretend tarball")
    (tmp_path / "mirror" / pkg.pool / pkg.orig).write_bytes(b"tampered tarball")
    with pytest.raises(build_workload.FetchError, match="SHA-256"):
        build_workload.fetch(pkg, tmp_path / "cache", mirror)
    assert not (tmp_path / "cache" / pkg.orig).exists()
    assert not list((tmp_path / "cache").glob("*.part"))


def test_fetch_refuses_a_dsc_that_lists_another_tarball(tmp_path: Path) -> None:
    mirror, pkg = _mirror(tmp_path, b"pretend tarball", listed_sha="0" * 64)
    with pytest.raises(build_workload.FetchError, match="does not list"):
        build_workload.fetch(pkg, tmp_path / "cache", mirror)


def test_the_pinned_package_is_named_and_pinned() -> None:
    pkg = build_workload.PACKAGE
    assert len(pkg.orig_sha256) == 64 and len(pkg.dsc_sha256) == 64
    assert pkg.pool.startswith("pool/main/") and pkg.orig_size > 0


@pytest.mark.parametrize("module", [daemon_overhead, sensor_overhead])
def test_overhead_defaults_meet_the_target_spec(module: object) -> None:
    args = module.parse([])  # type: ignore[attr-defined]
    assert args.repeat >= 5 and args.exec >= 2_000 and not args.quick
    assert module.parse(["--quick"]).quick  # type: ignore[attr-defined]
    with pytest.raises(SystemExit):
        module.parse(["--repeat", "0"])  # type: ignore[attr-defined]


def test_latency_store_flag_and_rates() -> None:
    assert daemon_latency.store_config("off", "normal", Path("/x")) == ""
    assert "alert_store: {path: /x/alerts.db, synchronous: full}" in daemon_latency.store_config("on", "full",
                                                                                                 Path("/x"))


def test_interleaving_rotates_and_ratios_pair_each_repeat() -> None:
    order: list[str] = []

    @contextmanager
    def nothing() -> Iterator[None]:
        yield

    rows: list[Row] = [("a", nothing), ("b", nothing), ("c", nothing)]
    # b is twice a in every repeat while both drift by 10x: the paired ratio stays 2, a ratio of medians would not.
    scale = {0: 1.0, 1: 10.0, 2: 10.0}
    base = {"a": 1.0, "b": 2.0, "c": 3.0}

    def measure(label: str, _ctx: object) -> Figures:
        order.append(label)
        rep = (len(order) - 1) // 3
        return {"x": base[label] * scale[rep], "x_cpu": base[label]}

    results = interleaved(rows, 3, measure)
    assert order == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert paired_ratio(results["b"], results["a"], "x") == pytest.approx(2.0)
    assert "MISSED" in verdict(results, "b", "a", "x", 1.10, "b vs a")
    assert "met" in verdict(results, "a", "a", "x", 1.10, "a vs a")


def _alert(seq: int, rule: str = daemon_latency.RULE, cmdline: str = "") -> Alert:
    return Alert(time_ns=seq, rule=rule, priority=Priority.WARNING, source="syscall", output="o",
                 output_fields={"proc.cmdline": cmdline}, cursor=Cursor("e", seq))


def test_latency_tally_counts_by_tag_and_names_the_sequences_that_never_arrived() -> None:
    tally = daemon_latency.Tally()
    tag = daemon_latency.TAG_PREFIX + "1-0"
    for seq in (1, 2, 5, 6, 9):
        tally.add(_alert(seq, cmdline=f"daemon_loops paced /etc/shadow 10000 3.0 {tag}"), 100 + seq)
    tally.add(_alert(10, cmdline="cat /etc/shadow"), 0)  # another process: not this step's
    tally.add(_alert(11, rule=LOSS_RULE), 0)
    assert tally.count(tag) == 5 and tally.untagged == 1 and len(tally.losses) == 1
    assert tally.holes() == [(3, 4), (7, 8)]
    assert tally.wait(tag, 5, quiet_s=0.01, limit_s=1) == 5
    assert tally.wait(tag, 6, quiet_s=0.01, limit_s=1) == 5  # nothing more comes: the shortfall is returned


def test_latency_path_splits_each_alert_by_stage_and_marks_the_pauses() -> None:
    ms = 1_000_000
    t0 = 1_000 * ms
    log: dict[str, list[list[int | str]]] = {
        # seq, syscall, published, engine batch: seq 2 reaches the engine 39 ms after its syscall
        "publish": [[1, t0, t0 + 1 * ms, t0 + ms // 2], [2, t0 + 150 * ms, t0 + 190 * ms, t0 + 189 * ms]],
        # a stream write after each publish: time, the reader's next sequence
        "stream": [[t0 + 2 * ms, 2], [t0 + 191 * ms, 3]],
        "pause": [[t0 + 151 * ms, 38 * ms, "gc2", "falconet-engine"], [t0 + 5 * ms, 1 * ms, "gc0", "x"]],
    }
    lines = latency_path.report(log, {1: t0 + 3 * ms, 2: t0 + 192 * ms})
    text = "\n".join(lines)
    assert "syscall -> engine batch: p50   39.00  p99   39.00  max   39.00 ms" in text  # of two: the higher
    assert "engine batch -> published: p50    1.00" in text
    assert "published -> stream: p50    1.00  p99    1.00" in text
    assert "0.0s 3  0.1s 42 [gc2 38]" in text  # the 1 ms gc0 is below the 2 ms mark
    assert "gc2: 1 in the step, median 38.00 ms" in text


def _bench_dirs(tmp: Path) -> list[Path]:
    return sorted(tmp.glob("falconet-bench-*"))


def test_a_bench_daemon_that_never_starts_leaves_no_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with pytest.raises(RuntimeError, match="falconet run exited") as exc:
        Daemon([tmp_path / "absent_rules.yaml"])
    assert "absent_rules.yaml" in str(exc.value)  # the daemon's own words, kept in the error
    assert _bench_dirs(tmp_path) == []


@pytest.mark.bpf
def test_a_bench_daemon_removes_its_directory_when_it_stops_or_the_bench_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_root("bench daemons load the eBPF sensor")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with pytest.raises(KeyError):
        with Daemon([DEFAULT_RULES]) as daemon:
            assert _bench_dirs(tmp_path) == [daemon.dir] and daemon.socket.exists()
            raise KeyError("a bench failing with the daemon up")
    assert daemon.proc.poll() is not None
    assert _bench_dirs(tmp_path) == []


def test_the_engine_figures_take_the_busiest_thread_of_the_daemon() -> None:
    """--rqwait's engine columns: the daemon thread with the most CPU over the loop, per exec."""
    mine = daemon_overhead.thread_schedstats(os.getpid())
    assert threading.get_native_id() in mine and daemon_overhead.thread_schedstats(None) == {}
    before = {1: (100, 10), 2: (5_000, 3)}
    after = {1: (200, 30), 2: (9_000, 5), 3: (50, 1)}  # thread 2 ran 4,000 ns, the most
    assert daemon_overhead.engine_runs(before, after, 2) == {"rq_engine_ns": 2_000.0, "rq_engine_runs": 1.0}
    assert daemon_overhead.engine_runs({}, {}, 2) == {}
