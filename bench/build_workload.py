"""A real workload at full speed: a pinned Debian source package built with `make -j2`, bare and under the daemon.

Issue 12's target: "a named, pinned source tree built with `make -j2` ...: zero kernel drops and at most 10% more
wall time than bare (median of 3 interleaved runs)".

The tree: XZ Utils 5.4.1, the upstream release tarball of Debian 12's source package xz-utils 5.4.1-1+deb12u1
(main; 5.4.1 predates the compromised 5.6.0/5.6.1 releases by a year), fetched from Debian's mirror and checked
against pinned SHA-256 sums. The pins come from the archive's chain of trust: bookworm's InRelease (good
signature from the Debian Stable Release Key (12/bookworm)) lists main/source/Sources.xz's SHA-256, whose
xz-utils entry lists the .dsc's and the orig tarball's; the bench fetches the .dsc too and checks that it lists
the tarball with the same sum and size. If a later Debian revision replaces the .dsc in the pool, point --mirror
at http://snapshot.debian.org/archive/debian/20250520T000000Z (the machine's own apt snapshot) or update the
pins. Why xz-utils: it needs nothing beyond build-essential (NLS off, so the build is the same wherever it runs),
it builds cleanly from the pristine tarball (gawk's Debian tarball lacks its manual's sources and fails in doc/),
and its build is a mix a build farm sees: a configure script (thousands of short-lived shells and compiler
probes: the exec path), then liblzma's ~100 C files compiled two at a time through libtool (opens, mmaps, execs
below the build directory). On this 2-core machine under load 12: configure 8 s of CPU, make -j2 26 s of CPU.

Each run extracts a fresh tree (not timed), then times `./configure` and `make -j2` separately (wall time, and
CPU time of the build's processes), and checks the result runs (`./src/xz/xz --version`). Rows, interleaved (every
repeat runs every row once, the starting row rotating) and a daemon started afresh for each of its runs:
- bare: nothing attached;
- daemon, default rules: `falconet run` with rules/falconet_rules.yaml (open filter on, as deployed);
- daemon, upstream stable rules: `falconet run` with Falco's falco_rules.yaml (/work/shared/upstream-rules).
The build directory is below /tmp by default (--workdir): the default rules watch reads and writes below /tmp
as below a home directory, so the compiler's opens of the tree are candidate events that reach the engine, as
a build in a user's home would be. Per daemon run: events the engine evaluated during the build, the daemon's
own CPU seconds meanwhile (on 2 cores they come out of the build's share), and the kernel's drop counter once
the daemon has drained its ring buffer (the daemon's metrics endpoint; it counts the whole machine's dropped
records, not only the build's). The target is checked
on the whole build (configure + make -j2) and on make -j2 alone; both are printed.

Run (as root; downloads about 1.5 MB once into --cache):
  python -m bench.build_workload                 3 interleaved repeats of 3 rows: about 5-7 minutes on a quiet
                                                 machine (25 minutes at load 18)
  python -m bench.build_workload --repeat 1      one of each (a smoke run, not a measurement): about 2 minutes
  [--repeat N] [--jobs N] [--workdir DIR] [--cache DIR] [--rules default,upstream]
  --stages                                       also the daemon's engine thread CPU by stage (ring-buffer wait,
                                                 read, enricher, engine, the loop's rest; bench._stage_probe),
                                                 records read and opens the user-space gate kept from the engine
Per daemon run it also prints the daemon's CPU by thread (the busiest one, the engine thread, user and system).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench._daemon_common import UPSTREAM_STABLE, Daemon, machine_state, scrape
from bench._stage_probe import LOG_ENV, STAGES, as_daemon
from bench._interleave import Figures, Row, interleaved, paired_ratio, spread, timed_child

MIRROR = "http://deb.debian.org/debian"


@dataclass(frozen=True, slots=True)
class SourcePackage:
    """A Debian source package's upstream tarball, pinned by the sums its .dsc (itself pinned) lists."""

    name: str
    version: str
    pool: str
    dsc: str
    dsc_sha256: str
    orig: str
    orig_sha256: str
    orig_size: int
    tree: str
    """The directory the tarball unpacks to."""
    configure: tuple[str, ...]
    check: tuple[str, ...]
    """A command run in the built tree that must succeed (the build really produced its program)."""


XZ_UTILS = SourcePackage(
    name="xz-utils", version="5.4.1-1+deb12u1", pool="pool/main/x/xz-utils",
    dsc="xz-utils_5.4.1-1+deb12u1.dsc", dsc_sha256="38f98e356f7e7e89b0920d39c55dd5f3d1a9f2684bff83c8b4890561e1832e94",
    orig="xz-utils_5.4.1.orig.tar.xz",
    orig_sha256="5d9827aa1875b21c288f78864bb26d2650b436ea8d2cad364e4921eb6266a5a5",
    orig_size=1_485_272, tree="xz-5.4.1",
    configure=("./configure", "--quiet", "--disable-nls"),
    check=("./src/xz/xz", "--version"),
)
PACKAGE = XZ_UTILS

BARE = "bare"
DEFAULT = "daemon, default rules"
UPSTREAM = "daemon, upstream stable rules"
TARGET_RATIO = 1.10
DEFAULT_CACHE = Path("/var/cache/falconet-bench")


class FetchError(Exception):
    """The pinned source could not be fetched or did not match its pins."""


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _download(url: str, dest: Path, want_sha256: str) -> None:
    """Fetches url into dest (atomically), unless dest already has the pinned sum; a mismatch is an error and
    leaves nothing behind."""
    if dest.is_file() and sha256(dest) == want_sha256:
        return
    part = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as resp, part.open("wb") as out:
            shutil.copyfileobj(resp, out)
    except OSError as e:
        part.unlink(missing_ok=True)
        raise FetchError(f"could not fetch {url}: {e}") from e
    got = sha256(part)
    if got != want_sha256:
        part.unlink()
        raise FetchError(f"{url}: SHA-256 {got}, pinned {want_sha256}; refusing it")
    part.replace(dest)


def fetch(pkg: SourcePackage, cache: Path, mirror: str = MIRROR) -> Path:
    """The pinned orig tarball in `cache`, downloaded and verified if not there yet; the .dsc must list it with
    the same SHA-256 and size (so the tarball is the one Debian's package builds from)."""
    cache.mkdir(parents=True, exist_ok=True)
    dsc = cache / pkg.dsc
    _download(f"{mirror}/{pkg.pool}/{pkg.dsc}", dsc, pkg.dsc_sha256)
    listed = re.search(rf"^ ([0-9a-f]{{64}}) (\d+) {re.escape(pkg.orig)}$", dsc.read_text(errors="replace"), re.M)
    if listed is None or listed.group(1) != pkg.orig_sha256 or int(listed.group(2)) != pkg.orig_size:
        raise FetchError(f"{pkg.dsc} does not list {pkg.orig} with the pinned SHA-256 and size")
    orig = cache / pkg.orig
    _download(f"{mirror}/{pkg.pool}/{pkg.orig}", orig, pkg.orig_sha256)
    return orig


def extract(tarball: Path, into: Path, tree: str) -> Path:
    """A fresh copy of the tree below `into` (any earlier copy removed first)."""
    target = into / tree
    shutil.rmtree(target, ignore_errors=True)
    # tar(1), not tarfile: Debian 12's Python (3.11.2) has no extraction filters, and the archive is pinned anyway.
    subprocess.run(["tar", "-xf", str(tarball), "-C", str(into), "--no-same-owner"], check=True)
    if not target.is_dir():
        raise FetchError(f"{tarball.name} did not unpack to {tree}/")
    return target


def build_env() -> dict[str, str]:
    """The same environment for every run: C locale, no compiler cache, no inherited make flags."""
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "TMPDIR")}
    return {**keep, "LC_ALL": "C", "CCACHE_DISABLE": "1"}


def build_once(pkg: SourcePackage, tarball: Path, workdir: Path, jobs: int) -> Figures:
    """Extracts, configures and builds one fresh tree; wall and CPU seconds of each phase."""
    tree = extract(tarball, workdir, pkg.tree)
    env = build_env()
    try:
        conf, _ = timed_child(pkg.configure, cwd=tree, env=env)
        make, _ = timed_child(["make", f"-j{jobs}"], cwd=tree, env=env)
        timed_child(pkg.check, cwd=tree, env=env)
    finally:
        shutil.rmtree(tree, ignore_errors=True)
    return {"configure": conf.wall_ns / 1e9, "configure_cpu": conf.cpu_ns / 1e9,
            "make": make.wall_ns / 1e9, "make_cpu": make.cpu_ns / 1e9,
            "total": (conf.wall_ns + make.wall_ns) / 1e9, "total_cpu": (conf.cpu_ns + make.cpu_ns) / 1e9}


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds a running process has used (/proc/PID/stat), all its threads included: the
    daemon's share of the 2 cores during a build, which the build's own CPU column does not contain."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_cpu_s(pid: int) -> dict[int, tuple[float, float]]:
    """Thread id -> (user, system) CPU seconds of each of a process's threads: the engine thread (the busiest)
    is the per-event path; the others are gRPC, metrics, outputs. A thread that ends meanwhile is left out."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, tuple[float, float]] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(task.name)] = (int(fields[11]) / tick, int(fields[12]) / tick)
    return out


def cpu_split(before: dict[int, tuple[float, float]], after: dict[int, tuple[float, float]]) -> Figures:
    """The busiest thread's user and system CPU seconds between two thread_cpu_s samples, and the rest."""
    deltas = {tid: (u - before.get(tid, (0.0, 0.0))[0], s - before.get(tid, (0.0, 0.0))[1])
              for tid, (u, s) in after.items()}
    busiest = max(deltas, key=lambda tid: sum(deltas[tid]), default=None)
    if busiest is None:
        return {"engine_user": 0.0, "engine_sys": 0.0, "other_threads": 0.0}
    user, system = deltas[busiest]
    rest = sum(u + s for tid, (u, s) in deltas.items() if tid != busiest)
    return {"engine_user": user, "engine_sys": system, "other_threads": rest}


@contextmanager
def nothing() -> Iterator[None]:
    yield


@contextmanager
def daemon(rules: Path, stages: bool = False) -> Iterator[Daemon]:
    """`falconet run` on rules; with `stages`, through bench._stage_probe's timers (this module's --as-daemon)."""
    entry = {"module": "bench.build_workload", "module_args": ["--as-daemon"]} if stages else {}
    with Daemon([rules], metrics_port=0, **entry) as d:  # type: ignore[arg-type]
        yield d


def stage_totals(d: Daemon, log: Path) -> dict[str, int]:
    """The probed daemon's running stage totals (bench._stage_probe), asked for by SIGUSR1."""
    import json
    import time

    before = log.stat().st_mtime_ns if log.exists() else 0
    d.proc.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if log.exists() and log.stat().st_mtime_ns != before:
            totals: dict[str, int] = json.loads(log.read_text())
            return totals
        time.sleep(0.02)
    raise RuntimeError("the probed daemon did not write its stage totals")


def filtered(url: str) -> dict[str, float]:
    """filter -> events it kept from the engine so far (the daemon's falconet_events_filtered_total; a tree
    without that metric: none)."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    return {s.labels["filter"]: s.value for family in text_string_to_metric_families(text)
            for s in family.samples if s.name == "falconet_events_filtered_total" and "filter" in s.labels}


def stage_figures(t0: dict[str, int], t1: dict[str, int]) -> Figures:
    """Engine-thread CPU seconds per stage between two stage_totals, and the loop's own rest."""
    out: Figures = {f"stage_{k}": (t1[k] - t0[k]) / 1e9 for k in STAGES}
    out["stage_polls"] = float(t1["read_calls"] - t0["read_calls"])
    out["stage_records"] = float(t1["records"] - t0["records"])
    out["stage_gated"] = float(t1["gated_opens"] - t0["gated_opens"])
    thread = (t1["engine_thread"] - t0["engine_thread"]) / 1e9
    out["stage_loop"] = thread - sum(out[f"stage_{k}"] for k in STAGES)
    return out


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.build_workload", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=3, help="interleaved runs of each row (the target wants 3)")
    p.add_argument("--jobs", type=int, default=2, help="make -jN (the target: 2)")
    p.add_argument("--workdir", type=Path, default=Path("/tmp"),
                   help="where the trees are built (a fresh temporary directory is made below it)")
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="where the pinned tarball is kept")
    p.add_argument("--rules", default="default,upstream",
                   help="which daemon rows, comma-separated: default, upstream (bare always runs)")
    p.add_argument("--mirror", default=MIRROR, help=f"Debian mirror to fetch from (default {MIRROR})")
    p.add_argument("--fetch-only", action="store_true", help="fetch and verify the tarball, then stop")
    p.add_argument("--stages", action="store_true",
                   help="time the daemon's engine thread by stage (bench._stage_probe; adds a few clock reads per poll)")
    args = p.parse_args(argv)
    if args.repeat < 1 or args.jobs < 1:
        p.error("--repeat and --jobs must be at least 1")
    chosen = [r.strip() for r in args.rules.split(",") if r.strip()]
    unknown = sorted(set(chosen) - {"default", "upstream"})
    if unknown or not chosen:
        p.error(f"--rules takes default and/or upstream, got {args.rules!r}")
    args.rules = chosen
    if not args.workdir.is_dir():
        p.error(f"--workdir {args.workdir} is not a directory")
    return args


def rows(chosen: list[str], stages: bool) -> list[Row]:
    from falconet.rules import DEFAULT_RULES

    out: list[Row] = [(BARE, nothing)]
    if "default" in chosen:
        out.append((DEFAULT, lambda: daemon(DEFAULT_RULES, stages)))
    if "upstream" in chosen:
        out.append((UPSTREAM, lambda: daemon(UPSTREAM_STABLE, stages)))
    return out


def report(results: dict[str, list[Figures]], repeat: int, jobs: int) -> list[str]:
    lines = [f"{PACKAGE.name} {PACKAGE.version} ({PACKAGE.orig}), make -j{jobs}: median of {repeat} interleaved runs; "
             "ratios are medians of per-run ratios against the bare run of the same repeat",
             f"{'row':32} {'configure s':>11} {'make s':>8} {'total s':>8} {'spread':>9} {'total/bare':>10} "
             f"{'make/bare':>9} {'cpu s':>7} {'cpu/bare':>8} {'daemon cpu s':>12} {'events':>10}  kernel drops per run"]
    for label, runs in results.items():
        drops = ",".join(f"{r['drops']:.0f}" for r in runs) if "drops" in runs[0] else "-"
        events = f"{statistics.median(r['events'] for r in runs):,.0f}" if "events" in runs[0] else "-"
        daemon_cpu = f"{statistics.median(r['daemon_cpu'] for r in runs):.1f}" if "daemon_cpu" in runs[0] else "-"
        lines.append(
            f"{label:32} {statistics.median(r['configure'] for r in runs):11.1f} "
            f"{statistics.median(r['make'] for r in runs):8.1f} {statistics.median(r['total'] for r in runs):8.1f} "
            f"{spread(runs, 'total'):>9} {paired_ratio(runs, results[BARE], 'total'):10.3f} "
            f"{paired_ratio(runs, results[BARE], 'make'):9.3f} {statistics.median(r['total_cpu'] for r in runs):7.1f} "
            f"{paired_ratio(runs, results[BARE], 'total_cpu'):8.3f} {daemon_cpu:>12} {events:>10}  {drops}")
    for label, runs in results.items():
        if "engine_user" in runs[0]:
            lines.append(f"{label}: daemon CPU by thread (median s): busiest (engine) thread user "
                         f"{statistics.median(r['engine_user'] for r in runs):.2f}, system "
                         f"{statistics.median(r['engine_sys'] for r in runs):.2f}; other threads "
                         f"{statistics.median(r['other_threads'] for r in runs):.2f}")
        if "stage_wait" in runs[0]:
            parts = ", ".join(f"{k} {statistics.median(r['stage_' + k] for r in runs):.2f}"
                              for k in (*STAGES, "loop"))
            lines.append(f"{label}: engine thread CPU by stage (median s): {parts}; polls "
                         f"{statistics.median(r['stage_polls'] for r in runs):,.0f}, records "
                         f"{statistics.median(r['stage_records'] for r in runs):,.0f}, opens gated in user space "
                         f"{statistics.median(r['stage_gated'] for r in runs):,.0f}")
    for label, runs in results.items():
        kinds = sorted(k for k in runs[0] if k.startswith("filtered_"))
        if kinds:
            lines.append(f"{label}: kept from the engine by design (median per run): " + ", ".join(
                f"{k[len('filtered_'):]} {statistics.median(r.get(k, 0.0) for r in runs):,.0f}" for k in kinds))
    for label, runs in results.items():
        if label == BARE:
            continue
        total = paired_ratio(runs, results[BARE], "total")
        make = paired_ratio(runs, results[BARE], "make")
        no_drops = all(r["drops"] == 0 for r in runs)
        met = no_drops and total <= TARGET_RATIO
        lines.append(f"target, {label}: zero kernel drops ({'yes' if no_drops else 'NO'}) and at most "
                     f"{TARGET_RATIO:.2f}x bare: whole build {total:.3f}x, make -j{jobs} alone {make:.3f}x -> "
                     f"{'met' if met else 'MISSED'}{'' if repeat >= 3 else ' (fewer than 3 runs: not a measurement)'}")
    return lines


def main(argv: list[str]) -> int:
    if argv[:1] == ["--as-daemon"]:
        return as_daemon(argv[1:])
    args = parse(argv)
    try:
        tarball = fetch(PACKAGE, args.cache, args.mirror)
    except FetchError as e:
        print(f"bench.build_workload: {e}", file=sys.stderr)
        return 1
    print(f"source: {tarball} (SHA-256 {PACKAGE.orig_sha256}, Debian {PACKAGE.name} {PACKAGE.version})")
    if args.fetch_only:
        return 0
    if os.geteuid() != 0:
        print("bench.build_workload needs root (the daemon loads BPF programs)", file=sys.stderr)
        return 1
    if "upstream" in args.rules and not UPSTREAM_STABLE.is_file():
        print(f"bench.build_workload needs Falco's stable rules at {UPSTREAM_STABLE} (or --rules default)",
              file=sys.stderr)
        return 1
    print(f"machine before: {machine_state()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="falconet-build-", dir=args.workdir) as tmp:

        def measure(_label: str, ctx: object) -> Figures:
            if not isinstance(ctx, Daemon):
                return build_once(PACKAGE, tarball, Path(tmp), args.jobs)
            before = scrape(ctx.metrics_url).get("falconet_events_total", 0.0)
            kept0 = filtered(ctx.metrics_url)
            stage_log = Path(os.environ.get(LOG_ENV, "/nonexistent"))
            st0 = stage_totals(ctx, stage_log) if args.stages else {}
            cpu0 = process_cpu_s(ctx.proc.pid)
            threads0 = thread_cpu_s(ctx.proc.pid)
            figures = build_once(PACKAGE, tarball, Path(tmp), args.jobs)
            daemon_cpu = process_cpu_s(ctx.proc.pid) - cpu0
            split = cpu_split(threads0, thread_cpu_s(ctx.proc.pid))
            if args.stages:
                split.update(stage_figures(st0, stage_totals(ctx, stage_log)))
            events, drops = ctx.settled_counters()
            if ctx.proc.poll() is not None:
                raise RuntimeError("the daemon exited during the build")
            kept = {f"filtered_{k}": v - kept0.get(k, 0.0) for k, v in filtered(ctx.metrics_url).items()}
            return {**figures, **split, **kept, "events": events - before, "drops": drops, "daemon_cpu": daemon_cpu}

        if args.stages:
            os.environ[LOG_ENV] = str(Path(tmp) / "stages.json")
        results = interleaved(rows(args.rules, args.stages), args.repeat, measure)
    print(f"machine after: {machine_state()}")
    for line in report(results, args.repeat, args.jobs):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
