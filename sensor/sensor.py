"""The Sensor: loads probe.c into the kernel, reads its ring buffer, and turns records into enriched Events.

Pipeline: kernel record bytes, a batch at a time straight from the ring buffer's memory map (`ringbuf`) ->
`record.decode` (pure) -> `enricher.Enricher` (process/fd tables from
`state`, names, Falco parameter names from `syscalls`) -> `falconet.model.event.Event`. The Enricher needs no
kernel, so everything after the ring buffer is testable with bytes alone; this module is the kernel side (the
program's flags, the BPF maps user space controls, the ring buffer) and re-exports Enricher.

What reaches user space is decided in the kernel: `set_syscalls(names)` writes the `sysconf` map (syscall id ->
on/off), so changing the rule set never recompiles. Syscalls the tables need (process lifecycle always; fd
lifecycle unless `track_fds=False`) stay on; the Enricher uses them to keep state but hands the caller only the
events it asked for.
"""

from __future__ import annotations

import ctypes
import os
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from falconet.model.event import Event
from falconet.model.prefilter import EventGate
from falconet.sensor.clocks import wall_minus
from falconet.sensor import btf as btfmod
from falconet.sensor import cgroups, eventgate, openfilter, recut
from falconet.sensor import syscalls as sc
from falconet.sensor.enricher import Enricher
from falconet.sensor.ringbuf import Batch, RingBuffer, RingBufferError
from falconet.sensor.state import ProcInfo
from falconet.sensor.wakeup import DEFAULT_INTERVAL_MS, WakeControl, fill_threshold

__all__ = ["PROBE_C", "Enricher", "probe_source", "Sensor", "SensorConfig", "SensorError", "SensorStats", "program_text"]

PROBE_C = Path(__file__).with_name("probe.c")
SWEEP_SECONDS = 60.0  # how often /proc is checked for processes whose exit record was dropped (see poll)
POLL_BATCH = 4096  # records one poll() takes at most: bounds its latency and memory under a flood
BUSY_ROUNDS = 100  # drain(): how many 0.1 ms waits a record the kernel is still writing gets before giving up


class SensorError(Exception):
    """The sensor cannot start; the message says what is missing (root, BPF, BTF, headers, tracefs)."""


ENTER_TRACEPOINTS = frozenset({"unshare", "setns", "execveat"})
"""The syscalls probe.c does work for at their enter (syscalls:sys_enter_<name>): syscalls.SAVED_AT_ENTER."""

RINGBUF_MIN_BYTES = 4096
"""One page: the smallest BPF ring buffer the kernel makes."""


def ringbuf_bytes_valid(n: int) -> bool:
    """The kernel makes a BPF ring buffer only of a power-of-two number of pages; the daemon's configuration
    checks `sensor.ring_buffer_bytes` with this too, so a file that loads also starts the sensor."""
    return n >= RINGBUF_MIN_BYTES and not n & (n - 1)


DEFAULT_SNAPLEN = 80
"""Falco's default snaplen: the first 80 bytes of a data buffer."""
SNAPLEN_MAX = 4096
"""probe.c's DATA_MAX: the most a record carries of one buffer."""
ENV_BASE = 48
"""probe.c's MAX_ENVP: environment entries every exec record carries."""
ENV_MAX = ENV_BASE + 1024
"""... plus probe.c's ENV_MORE_MAX more (within 12 KiB) when rules look for a variable."""
POLL_INTERVAL_MAX_MS = 60_000
"""The longest poll interval the sensor takes (tests use long ones; the daemon allows 1,000 ms, default 1)."""


@dataclass(slots=True)
class SensorConfig:
    ringbuf_bytes: int = 8 << 20
    syscalls: set[str] | None = None  # event names to deliver; None = every syscall the sensor knows
    exclude_pids: set[int] = field(default_factory=lambda: {os.getpid()})
    track_fds: bool = True  # keep the fd table (ships open/close/... to user space even if no rule needs them)
    seed_from_proc: bool = True
    # Optional kernel-side filter for the open family (see set_open_prefixes); None = every open is emitted.
    open_prefixes: list[str] | dict[str, list[str]] | None = None
    # Falco's snaplen: bytes of a data buffer (evt.buffer) copied per read/recv/send; 0 = none.
    snaplen: int = DEFAULT_SNAPLEN
    # The syscalls whose data buffer is copied (see set_data_syscalls); None = every one that has one.
    data_syscalls: set[str] | None = None
    # Environment entries read at an exec: the first ENV_BASE always, up to this many when asked (see set_env_max)
    env_max: int = ENV_MAX
    # While records keep coming, poll() reads at most this often instead of being woken per record (wakeup.py).
    poll_interval_ms: int = DEFAULT_INTERVAL_MS
    # Unread bytes past which a record wakes the reader at once (None: wakeup.fill_threshold of the ring).
    wake_fill_bytes: int | None = None
    # The record cuts (sensor/recut.py): with the event gates on, records of state syscalls that change no table
    # and that no rule can match stay in the kernel. False only to compare (tests, benches).
    record_cuts: bool = True

    def validate(self) -> None:
        n = self.ringbuf_bytes
        if not ringbuf_bytes_valid(n):
            raise SensorError(f"ringbuf_bytes must be a power of two of at least 4096, not {n}")
        if not ENV_BASE <= self.env_max <= ENV_MAX:
            raise SensorError(f"env_max must be between {ENV_BASE} and {ENV_MAX} entries, not {self.env_max}")
        if not 0 <= self.snaplen <= SNAPLEN_MAX:
            raise SensorError(f"snaplen must be between 0 and {SNAPLEN_MAX} bytes, not {self.snaplen}")
        if not 0 <= self.poll_interval_ms <= POLL_INTERVAL_MAX_MS:
            raise SensorError(f"poll_interval_ms must be between 0 (off) and {POLL_INTERVAL_MAX_MS}, "
                              f"not {self.poll_interval_ms}")
        if self.wake_fill_bytes is not None and not 1 <= self.wake_fill_bytes <= n:
            raise SensorError(f"wake_fill_bytes must be between 1 and the ring's {n} bytes, not {self.wake_fill_bytes}")


@dataclass(slots=True)
class SensorStats:
    events: int = 0  # events handed to the caller
    records: int = 0  # records read from the ring buffer (including state-only ones)
    kernel_drops: int = 0  # ring buffer reserve/output failures, summed over CPUs
    kernel_drops_per_cpu: list[int] = field(default_factory=list)
    kernel_emitted: int = 0  # records the kernel wrote
    inflight_full: int = 0  # always 0: records are built at exit alone (kept for callers that read it)
    path_filtered: int = 0  # opens the open-prefix filter kept in the kernel, and their closes (by design)
    gated: int = 0  # syscalls without a state role the event gates kept in the kernel (by design)
    cut: int = 0  # records of state syscalls that changed no table and no rule could match (recut.py, by design)
    decode_errors: int = 0
    swept: int = 0  # processes forgotten because they were gone without an exit record (a dropped one)


def program_text(config: SensorConfig, offsets: dict[str, int] | None = None) -> tuple[str, list[str]]:
    """(C source, cflags) exactly as start() compiles them; offsets from the running kernel's BTF by default."""
    if offsets is None:
        btf = btfmod.BTF.load()
        offsets = btfmod.kernel_offsets(btf)
        controller = cgroups.v1_controller()
        offsets["CGROUP_V1_SUBSYS"] = btfmod.subsys_id(btf, controller) if controller else -1
        offsets.update(btfmod.register_offsets(btf, *sc.X86_64_REGS))
    cred_len = max(v for k, v in offsets.items() if k.startswith("OFF_CRED_")) + 8
    saved = {sc.BY_NR[nr].name for nr in sc.SAVED_AT_ENTER}
    if saved != ENTER_TRACEPOINTS:  # a developer's error: probe.c attaches one syscall tracepoint per name
        raise SensorError(f"probe.c saves values at the enter of {sorted(ENTER_TRACEPOINTS)}, not {sorted(saved)}")
    flags = btfmod.cflags(offsets) + [
        f"-DCRED_READ_LEN={cred_len}",
        f"-DRINGBUF_PAGES={config.ringbuf_bytes // 4096}",
        f"-DCLONE_NR={sc.CLONE_NR}",
        f"-DCLONE3_NR={sc.CLONE3_NR}",
        f"-DVFORK_NR={sc.VFORK_NR}",
        f"-DFORK_NR={sc.FORK_NR}",
        f"-DEXECVEAT_NR={sc.EXECVEAT_NR}",
        f"-DWAKE_FILL_BYTES={config.wake_fill_bytes or fill_threshold(config.ringbuf_bytes)}",
        "-DSAVED_AT_ENTER(id)=(" + "||".join(f"(id)=={nr}" for nr in sc.SAVED_AT_ENTER) + ")",
    ]
    return probe_source(), flags


_LOCAL_INCLUDE = re.compile(r'^#include "(probe_\w+\.h)"$', re.M)


def probe_source() -> str:
    """probe.c with its local includes (sensor/probe_*.h) inlined: the one text bcc compiles."""
    return _LOCAL_INCLUDE.sub(lambda m: PROBE_C.with_name(m.group(1)).read_text(), PROBE_C.read_text())


class Sensor:
    """The live sensor. Not thread-safe except set_syscalls/stats, which the daemon may call from elsewhere."""

    def __init__(self, config: SensorConfig | None = None) -> None:
        self.config = config or SensorConfig()
        self.config.validate()
        self._bpf: Any = None
        self._rb: RingBuffer | None = None
        self._stats = SensorStats()
        self.enricher = Enricher(wanted=self.config.syscalls)
        self.untraced: frozenset[str] = frozenset()
        self._last_sweep = time.monotonic()
        self._absent: dict[int, ProcInfo] | None = None
        """Processes /proc no longer had at the last sweep, forgotten once the records before it are read
        (bench/RESULTS.md, "latstall": forgetting them at once gave a burst's queued events a nameless process)."""
        self._names: set[str] | None = self.config.syscalls
        self._data: frozenset[str] | None = (None if self.config.data_syscalls is None
                                             else frozenset(self.config.data_syscalls))
        self._gated: frozenset[int] = frozenset()  # syscall numbers whose event gate is on (set_event_gates)
        self._gate_rules: Mapping[str, EventGate] | None = None  # the gates set_event_gates got (recut.py)
        self._wake: WakeControl | None = None  # the reader's side of the wake-up policy (wakeup.py), once started
        self._filter_gen = 0  # the open filter's generation in the kernel (set_open_prefixes)

    # --- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> None:
        _preflight()
        try:
            from bcc import BPF  # noqa: PLC0415 (heavy, root-only import kept out of module import)
        except ImportError as exc:
            raise SensorError(f"bcc is not importable ({exc}); install python3-bpfcc (make setup)") from None
        try:
            text, cflags = program_text(self.config)
        except btfmod.BTFError as exc:
            raise SensorError(str(exc)) from None
        try:
            self._bpf = BPF(text=text.encode(), cflags=cflags)
        except Exception as exc:  # bcc raises bare Exception for compile and load failures
            raise SensorError(f"the BPF program failed to compile or load: {exc}") from None
        try:
            # the exec tails (probe_exec.h; tails of the sys_exit raw tracepoint, so of its program type): in
            # place before any syscall is switched on
            tails = self._bpf[b"tails"]
            for index, name in enumerate((b"exec_exit", b"exec_env", b"exec_args")):
                tails[ctypes.c_int(index)] = ctypes.c_int(self._bpf.load_func(name, BPF.RAW_TRACEPOINT).fd)
        except Exception as exc:  # bcc raises bare Exception for load failures
            raise SensorError(f"the BPF program's exec tail failed to load: {exc}") from None
        self.enricher.offset_ns = wall_minus(time.CLOCK_MONOTONIC)
        try:
            events = self._bpf[b"events"]
            self._rb = RingBuffer(events.map_fd, int(events.max_entries))  # a ring buffer's size in bytes
            self._wake = WakeControl(self._bpf[b"wake_ctl"].map_fd, self.config.poll_interval_ms)
        except (RingBufferError, OSError, ValueError) as exc:
            raise SensorError(str(exc)) from None
        self._bpf[b"snaplen"][ctypes.c_int(0)] = ctypes.c_uint32(self.config.snaplen)
        self.set_env_max(self.config.env_max)
        self._write_sysconf(self.config.syscalls)
        excluded = self._bpf[b"excluded"]
        for pid in self.config.exclude_pids:
            excluded[ctypes.c_uint32(pid)] = ctypes.c_uint8(1)
        if self.config.open_prefixes is not None:
            self.set_open_prefixes(self.config.open_prefixes)
        # Seed after the probes are live, so no process slips between the snapshot and the first event.
        if self.config.seed_from_proc:
            boot_ns = wall_minus(time.CLOCK_BOOTTIME)
            self.enricher.table.seed_from_proc(boot_ns=boot_ns)

    def close(self) -> None:
        if self._rb is not None:
            self._rb.close()
            self._rb = None
        if self._wake is not None:
            self._wake.close()
            self._wake = None
        if self._bpf is not None:
            self._bpf.cleanup()
            self._bpf = None

    def __enter__(self) -> Sensor:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- control ---------------------------------------------------------------------------------------------

    def set_syscalls(self, names: Iterable[str] | None) -> frozenset[str]:
        """Changes the delivered event types in the kernel (no recompile). None = every known syscall.

        Returns the names the sensor cannot trace (ignored), so the caller can warn about them."""
        return self._write_sysconf(set(names) if names is not None else None)

    def set_env_max(self, entries: int) -> None:
        """How many environment entries an exec's event carries: ENV_BASE always (one record), more (a
        second record, at most ENV_MAX entries and 12 KiB) for rules that look for a variable, which may sit
        anywhere in the environment. The daemon asks for more only when a loaded rule reads proc.env."""
        if not ENV_BASE <= entries <= ENV_MAX:
            raise SensorError(f"env_max must be between {ENV_BASE} and {ENV_MAX} entries, not {entries}")
        if self._bpf is None:  # not started: start() applies it
            self.config.env_max = entries
            return
        self._bpf[b"env_more"][ctypes.c_int(0)] = ctypes.c_uint32(entries - ENV_BASE)

    def set_data_syscalls(self, names: Iterable[str] | None) -> None:
        """Which syscalls' data buffers the kernel copies (evt.buffer, up to the snaplen); None = every one
        that has one. The daemon passes the event types whose rules read the buffer, so a data copy is paid
        only where a rule looks at it."""
        self._data = None if names is None else frozenset(names)
        if self._bpf is not None:  # else start() applies it
            self._write_sysconf(self._names)

    def _write_sysconf(self, names: set[str] | None) -> frozenset[str]:
        self._names = names
        known = set(sc.BY_NAME)
        wanted = known - sc.NAMED_ONLY if names is None else names & known
        untraced = frozenset() if names is None else frozenset(names - known)
        on = wanted | sc.PROCESS_STATE | (sc.FD_STATE if self.config.track_fds else set())
        self.enricher.wanted = frozenset(wanted)
        self.untraced = untraced
        cuts = recut.compute(None if names is None else frozenset(wanted), self._gate_rules)
        recut.write(self._bpf[b"recuts"], cuts if self.config.record_cuts else {})
        table = self._bpf[b"sysconf"]
        for spec in sc.BY_NAME.values():
            leaf = table.Leaf()
            leaf.on = 1 if spec.name in on else 0
            leaf.str0, leaf.str1, leaf.sock, leaf.socklen = spec.str0, spec.str1, spec.sock, spec.socklen
            leaf.blob, leaf.bloblen, leaf.exec, leaf.sockfd = spec.blob, spec.bloblen, spec.exec, spec.sockfd
            leaf.pathfilter, leaf.fdeffect, leaf.credsbefore = spec.pathfilter, spec.fdeffect, spec.credsbefore
            leaf.forks = spec.forks
            leaf.gated = 1 if spec.nr in self._gated else 0
            copy = self.config.snaplen > 0 and (self._data is None or spec.name in self._data)
            leaf.data = spec.data if copy else sc.NO_ARG
            table[ctypes.c_int(spec.nr)] = leaf
        return untraced

    def set_open_prefixes(self, prefixes: Iterable[str] | Mapping[str, Iterable[str]] | None) -> None:
        """Turns the kernel-side open-path filter on (with these atoms) or off (None).

        `prefixes` is either atoms (each covering every open it holds) or a mapping atom -> the kinds of
        open it covers: "read" (O_RDONLY/O_RDWR), "write" (O_WRONLY/O_RDWR) and "other" (any flag beyond the
        access mode and O_NONBLOCK/O_CLOEXEC/O_DIRECTORY/O_NOFOLLOW/O_NOCTTY/O_NOATIME/O_LARGEFILE, e.g.
        O_CREAT or O_TRUNC). An atom is a path prefix, or with a leading `*` a suffix (`*/shadow`: base name
        shadow). With it on, an open/openat/creat whose path is absolute, lexically clean (no `//`, `/./`,
        `../`, no trailing `/`, under 253 bytes) and held by no atom covering its kind is not emitted: no
        event, and its fd stays unknown to the fd table. Other paths always pass (the kernel cannot resolve
        them cheaply), and so do openat2 and opens with O_DIRECTORY or O_PATH or of a directory (a directory
        fd may become a dirfd or fchdir target whose path user space needs). It is only conservative if the
        atoms hold every path any loaded rule can match on fd.name/fd.directory/fd.filename/evt.arg.* of
        ANY event (fds outlive their open): rules/open_prefixes.py proves that. Prefixes are compared on their
        first 64 bytes and suffixes on their last 32 (sensor/openfilter.py fits them to the kernel's
        maps), which only widens them. The close of a kept-back fd stays in the kernel too (user space never
        knew the fd; for fd numbers below 1,024, probe_openfilter.h's per-process bitmap); any fd creation that
        reaches user space clears that mark for its number first.
        Filtered opens and closes are counted in stats().path_filtered."""
        trie = self._bpf[b"open_prefixes"]
        suffixes = self._bpf[b"open_suffixes"]
        long_heads = self._bpf[b"open_long_heads"]
        on = self._bpf[b"path_filter_on"]
        # Off while the maps change: a half-filled map with the filter on would drop opens a rule needs (off
        # only lets more through). The trie's answers the kernel cached by path head (open_heads) carry the
        # generation they were computed under; a new one makes every earlier answer (even one a program still
        # running writes after this) unused, so that cache is never cleared.
        on[ctypes.c_int(0)] = ctypes.c_uint32(0)
        self._filter_gen = self._filter_gen % 0xFFFFFFFF + 1
        trie.clear()
        suffixes.clear()
        long_heads.clear()
        if prefixes is None:
            return
        maps = openfilter.compile_maps(prefixes)
        for raw, mask in maps.prefixes.items():
            key = trie.Key()
            key.prefixlen = len(raw) * 8
            for i, byte in enumerate(raw):
                key.data[i] = byte
            trie[key] = ctypes.c_uint8(mask)
        for head in maps.long_heads():
            long_heads[ctypes.c_uint64(int.from_bytes(head, "little"))] = ctypes.c_uint8(1)
        for raw, mask in maps.suffixes.items():
            skey = suffixes.Key()
            skey.len = len(raw)
            for i, byte in enumerate(raw):
                skey.data[i] = byte
            suffixes[skey] = ctypes.c_uint8(mask)
        lens_map = self._bpf[b"open_suffix_lens"]
        lens = lens_map.Leaf()
        for i, (length, kinds) in enumerate(maps.lengths):
            lens.len[i], lens.kinds[i] = length, kinds
        lens_map[ctypes.c_int(0)] = lens
        on[ctypes.c_int(0)] = ctypes.c_uint32(self._filter_gen)

    def set_event_gates(self, gates: Mapping[str, EventGate] | None) -> None:
        """Turns the event gates on (event type -> the gate its events must pass, from the rules:
        rules.engine.Engine.event_gates) or off (None). Only syscalls without a state role are gated
        (sensor/eventgate.py); an event a gate keeps back is counted in stats().gated. While the maps change
        every gate is off: a half-written map may only let more through."""
        self._gated = frozenset()
        self._gate_rules = None
        self._write_sysconf(self._names)
        table = self._bpf[b"gates"]
        values = self._bpf[b"gate_values"]
        values.clear()
        self._bpf[b"gate_prefixes"].clear()
        self._bpf[b"gate_suffixes"].clear()
        for spec in sc.BY_NAME.values():
            table[ctypes.c_int(spec.nr)] = table.Leaf()
        if gates is None:
            return
        maps = eventgate.compile_gates(gates)
        for nr, entry in maps.entries.items():
            leaf = table.Leaf()
            leaf.result, leaf.uid, leaf.comm = entry.result, entry.uid, entry.comm
            leaf.arg, leaf.argidx, leaf.argconv = entry.arg, entry.argidx, entry.argconv
            leaf.path, leaf.pathidx = entry.path, entry.pathidx
            leaf.bitsmask, leaf.bitsidx, leaf.bitsconv = entry.bitsmask, entry.bitsidx, entry.bitsconv
            for i, length in enumerate(entry.lens):
                leaf.lens[i] = length
            table[ctypes.c_int(nr)] = leaf
        eventgate.write_path_atoms(self._bpf[b"gate_prefixes"], self._bpf[b"gate_suffixes"], maps)
        for nr, kind, raw in maps.values:
            key = values.Key()
            key.nr, key.kind = nr, kind
            for i, byte in enumerate(raw):
                key.data[i] = byte
            values[key] = ctypes.c_uint8(1)
        self._gated = frozenset(maps.entries)
        self._gate_rules = gates  # and the record cuts they prove (recut.py), written with sysconf
        self._write_sysconf(self._names)

    def exclude_pid(self, pid: int) -> None:
        self._bpf[b"excluded"][ctypes.c_uint32(pid)] = ctypes.c_uint8(1)

    # --- data ------------------------------------------------------------------------------------------------

    def _ring(self) -> RingBuffer:
        if self._rb is None:
            raise SensorError("the sensor is not started")
        return self._rb

    def poll(self, timeout_ms: int = 100) -> list[Event]:
        """Waits up to timeout_ms for records; returns the enriched events (state-only records are absorbed).

        Takes at most POLL_BATCH records per call, so a caller's loop stays responsive under any load; the rest
        waits in the ring buffer, where overflow is counted as kernel drops.

        While records keep coming the kernel does not wake this wait (a burst past the fill threshold does):
        each wait is then at most config.poll_interval_ms, and a caller's long timeout is used only once the
        stream has gone quiet (sensor/wakeup.py, probe_wake.h)."""
        rb = self._ring()
        wake = self._wake
        if wake is None:  # made with the ring: not reached once _ring() returned
            raise SensorError("the sensor is not started")
        table = self.enricher.table
        if self._absent is None:
            now = time.monotonic()
            if now - self._last_sweep > SWEEP_SECONDS:
                self._last_sweep = now
                self._absent = table.absent() or None
        # /proc looked at before this wait and read: the records read from here on include every one written
        # before the look, which is what forgetting the absent processes below needs.
        batch = wake.take(rb, timeout_ms, POLL_BATCH)
        events = self._take(batch)
        if self._absent is not None and rb.available() == 0:
            # Caught up with every record the kernel had written when /proc was looked at, so with every
            # record of a process that was gone by then: forgetting it now takes no identity from its events.
            self._stats.swept += table.forget(self._absent)
            self._absent = None
        return events

    def _take(self, batch: Batch) -> list[Event]:
        """Enriches one batch of records (state-only ones are absorbed)."""
        st = self._stats
        st.records += len(batch)
        out, errors = self.enricher.feed_batch(batch.data, batch.offsets, batch.lengths)
        st.decode_errors += errors
        st.events += len(out)
        return out

    def drain(self) -> list[Event]:
        """Stops the kernel from emitting syscall records and returns every event it still holds.

        For a clean stop (`falconet capture`): a poll takes at most POLL_BATCH records, so a final poll
        alone would leave the rest of a burst that arrived just before the stop in the ring buffer. Turning
        every syscall off first makes what remains finite (only process-exit records can still arrive), so
        consuming until a round reads nothing ends; the round bound is a guard, not the expected exit. The
        sensor keeps tracing nothing afterwards: close it."""
        rb = self._ring()
        table = self._bpf[b"sysconf"]
        for spec in sc.BY_NAME.values():
            key = ctypes.c_int(spec.nr)
            leaf = table[key]
            leaf.on = 0
            table[key] = leaf
        out: list[Event] = []
        # Each round takes up to POLL_BATCH records, each of at least 16 bytes in the ring.
        busy = 0
        for _ in range(self.config.ringbuf_bytes // (16 * POLL_BATCH) + 16 + BUSY_ROUNDS):
            batch = rb.read(POLL_BATCH)
            if not batch.consumed:
                if rb.available() and busy < BUSY_ROUNDS:  # a record still being written (BUSY): it is close
                    busy += 1
                    time.sleep(0.0001)
                    continue
                break
            out.extend(self._take(batch))
        return out

    def consume_batch(self, limit: int = POLL_BATCH) -> Batch:
        """Takes up to `limit` records without waiting, undecoded, and counts nothing: for benchmarks that
        time the stages poll() runs together (bench/pipeline_stages.py). Feed it to `enricher.feed_batch`."""
        return self._ring().read(limit)

    def consume_raw(self) -> list[bytes]:
        """consume_batch as one bytes object per record (a copy each): for tools that keep raw records."""
        return self.consume_batch().records()

    def stats(self) -> SensorStats:
        st = self._stats
        if self._bpf is not None:
            counters = self._bpf[b"counters"]
            drops = [int(v) for v in counters.getvalue(ctypes.c_int(0))]
            st.kernel_drops_per_cpu = drops
            st.kernel_drops = sum(drops)
            st.inflight_full = sum(int(v) for v in counters.getvalue(ctypes.c_int(1)))
            st.kernel_emitted = sum(int(v) for v in counters.getvalue(ctypes.c_int(2)))
            st.path_filtered = sum(int(v) for v in counters.getvalue(ctypes.c_int(3)))
            st.gated = sum(int(v) for v in counters.getvalue(ctypes.c_int(4)))
            st.cut = sum(int(v) for v in self._bpf[b"recut_count"].getvalue(ctypes.c_int(0)))
        return SensorStats(**{k: getattr(st, k) for k in SensorStats.__slots__})


def _preflight() -> None:
    """Says plainly what is missing before bcc produces a less readable error."""
    if os.geteuid() != 0:
        raise SensorError("the eBPF sensor needs root (CAP_BPF and CAP_PERFMON): run it as root")
    try:
        sc.check_arch()
    except sc.UnknownSyscall as exc:
        raise SensorError(str(exc)) from None
    if not btfmod.VMLINUX_BTF.exists():
        raise SensorError(f"kernel BTF is missing ({btfmod.VMLINUX_BTF}); the kernel needs CONFIG_DEBUG_INFO_BTF")
    build = Path("/lib/modules") / os.uname().release / "build"
    if not build.exists():
        raise SensorError(f"kernel headers for bcc are missing ({build}); run `make setup`")
    tracing = Path("/sys/kernel/tracing/events/raw_syscalls")
    if not tracing.exists() and not Path("/sys/kernel/debug/tracing/events/raw_syscalls").exists():
        raise SensorError("tracefs is not mounted at /sys/kernel/tracing; run `make setup` "
                          "(mount -t tracefs nodev /sys/kernel/tracing)")
