"""A node's side of rules pushed to the fleet: watch the bucket, validate, hot-reload, cache, report.

The pushed version is the last part of the node's rules: the local rules files (rules_files, or -r) load first,
then the pushed files in their pushed order, so a pushed file may append to or override local lists, macros and
rules as a later file does in Falco. A new version goes through the SIGHUP path (server/reload.py, given a
`FleetCandidate`): the whole running set is rebuilt with the candidate and swapped in only if everything
builds, so a bad version keeps the running set; it is then reported three ways (a log line, the counter
`falconet_fleet_rules_refused_total`, an internal "reload failed" alert naming the version) and not retried
until a newer revision appears. A version that cannot even be decoded (rules_bundle.py) is refused the same
way without a rebuild.

The bucket is watched: a plain subscription to the key's subject (names.rules_subject) wakes the loop the moment a
push is published, even before the bucket exists, and nats-py renews it after every reconnect; the loop then
reads the newest value by the stream's last sequence (one small request; the value is fetched only when it
moved). The same look also runs every `check_interval`, so a wake-up lost in a NATS failover costs at most one
interval. NATS being down never stops the node:
it runs its cached version (rules_cache.py) or its local files, and the connection retries forever in the
background. The version that runs is `rules_version` (for the heartbeat) and `falconet_fleet_rules_info`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric

from falconet.model.alert import Priority
from falconet.model.text import escape_controls
from falconet.server.errors import describe_error
from falconet.server.fleet.names import RULES_KEY, rules_subject
from falconet.server.fleet.rules_bundle import BundleError, RulesBundle
from falconet.server.fleet.rules_cache import CachedVersion, RulesCache
from falconet.server.fleet.rules_config import FleetRulesConfig
from falconet.server.reload import FleetCandidate, Reloader
from falconet.server.reports import RELOAD_RULE, Reporter
from falconet.server.source import Log

FOLLOW_UP_SECONDS = 0.2
FOLLOW_UP_WINDOW = 10.0
"""After a push is heard, the bucket is looked at every FOLLOW_UP_SECONDS for this long, until it has moved."""

if TYPE_CHECKING:
    from nats.aio.msg import Msg
    from nats.js.kv import KeyValue

    from falconet.server.daemon_config import DaemonConfig
    from falconet.server.pipeline import EngineBuilder, RuleEngine


@dataclass(slots=True)
class _Counts:
    applied: int = 0
    refused: int = 0
    connected: bool = False


class FleetRulesNode:
    """Owns the pushed version a daemon runs. `start_engine` at start, `attach` once the reloader exists, then
    `run()` as a task on the daemon's loop until cancelled."""

    def __init__(self, config: FleetRulesConfig, log: Log, registry: CollectorRegistry) -> None:
        self.config = config
        self._log = log
        self._cache = RulesCache(config.cache_dir)
        self.running: CachedVersion | None = None
        self.counts = _Counts()
        self._seen_seq = 0  # the bucket stream's last sequence as of the last look
        self._refused_revision = 0
        self._reloader: Reloader | None = None
        self._reporter: Reporter | None = None
        self._wake: asyncio.Event | None = None
        self._problem = ""
        self._bucket_state = ""
        self._push_heard: float | None = None  # loop time a push was last heard and not yet seen in the stream
        self._reloading: asyncio.Future[bool] | None = None
        registry.register(_Collector(self))

    @property
    def rules_version(self) -> str:
        """The pushed version that runs (names.rules_version), or "" when only local files run."""
        return self.running.label if self.running is not None else ""

    # -- start ---------------------------------------------------------------------------------------------

    def start_engine(self, config: DaemonConfig, build: EngineBuilder, hostname: str) -> tuple[DaemonConfig,
                                                                                                RuleEngine]:
        """The engine the daemon starts with: local files plus the cached version, or the local files alone
        when there is no usable cached version or it does not load with this node's local files."""
        try:
            cached = self._cache.load()
        except (BundleError, OSError) as exc:
            self._log(f"fleet rules: the cache in {self.config.cache_dir} is unusable ({_safe(exc)}); "
                      "starting with the local rules files only")
            cached = None
        if cached is None:
            self._log("fleet rules: no cached version; running the local rules files until a version is pushed")
            return config, build(config, hostname)
        try:
            with_cached = config.with_fleet_rules(cached.paths)
            engine = build(with_cached, hostname)
        except Exception as exc:  # the local files changed under it, say: run them alone rather than not at all
            self._log(f"fleet rules: the cached version {cached.label} does not load with the local rules files; "
                      f"starting with the local rules files only:\n{describe_error(exc)}")
            return config, build(config, hostname)
        self.running = cached
        self._log(f"fleet rules: running the cached version {cached.label} ({len(cached.paths)} files)")
        return with_cached, engine

    def attach(self, reloader: Reloader, reporter: Reporter) -> None:
        self._reloader, self._reporter = reloader, reporter

    async def settle(self) -> None:
        """Waits for a reload the cancelled watch had started (its thread runs on), so the daemon's shutdown
        closes the outputs that reload swapped in, not the ones it replaced."""
        if self._reloading is not None:
            await asyncio.gather(self._reloading, return_exceptions=True)

    # -- the watch loop -------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Watches until cancelled; a failure outside the loop's own handling (an unreadable credentials file)
        is said once and retried every check_interval, never fatal to the daemon."""
        while True:
            try:
                await self._run_connected()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the node keeps its rules; the watch starts over
                self.counts.connected = False
                self._note(f"the watch stopped ({_safe(exc)}); retrying")
                await asyncio.sleep(self.config.check_interval)

    async def _run_connected(self) -> None:
        """Connects (retrying forever), then looks at the bucket whenever woken or every check_interval."""
        from nats.js.errors import BucketNotFoundError

        from falconet.server.fleet.connection import connect

        self._wake = asyncio.Event()
        nc = None
        try:
            nc = await connect(
                self.config.connection,
                error_cb=self._on_error,
                disconnected_cb=self._on_disconnected,
                reconnected_cb=self._on_reconnected,
                reconnect_time_wait=1,
            )
            self.counts.connected = True
            self._log(f"fleet rules: watching bucket {self.config.bucket} on {self.config.connection.describe()}")
            # Only a wake-up: a small pending limit, so a flood on the subject cannot pile up megabytes here.
            await nc.subscribe(rules_subject(self.config.bucket), cb=self._on_push, pending_msgs_limit=16,
                               pending_bytes_limit=4 << 20)
            js = nc.jetstream()
            kv: KeyValue | None = None
            while True:
                if nc.is_connected:
                    try:
                        kv = kv or await js.key_value(self.config.bucket)
                        self._note(await self._check(kv))
                    except BucketNotFoundError:
                        self._note(f"bucket {self.config.bucket} does not exist yet (nothing pushed)")
                    except Exception as exc:  # any failure: say so once, keep the running rules
                        self._note(_safe(exc))
                await self._sleep()
        finally:
            if nc is not None:
                await nc.close()

    async def _sleep(self) -> None:
        """Until woken or check_interval; shortly after a push went by, only FOLLOW_UP_SECONDS: the subscriber
        can hear a push before the stream has stored it (a replicated stream, a busy server), and the look that
        woke it then finds nothing new."""
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        following = self._push_heard is not None and loop.time() - self._push_heard < FOLLOW_UP_WINDOW
        try:
            await asyncio.wait_for(self._wake.wait(), FOLLOW_UP_SECONDS if following else self.config.check_interval)
        except TimeoutError:
            pass
        self._wake.clear()

    async def _on_push(self, _msg: Msg) -> None:
        """A push went by: look now. The message is not read (the revision and the checks come with the get)."""
        self._push_heard = asyncio.get_running_loop().time()
        if self._wake is not None:
            self._wake.set()

    async def _check(self, kv: KeyValue) -> str:
        """Reads the newest version if the bucket moved since the last look; returns the trouble, or ""."""
        from nats.js.errors import KeyDeletedError, KeyNotFoundError

        status = await kv.status()
        last = int(status.stream_info.state.last_seq)
        if last == self._seen_seq:
            return self._bucket_state
        self._push_heard = None
        try:
            entry = await kv.get(RULES_KEY)
        except (KeyNotFoundError, KeyDeletedError):  # none yet, or withdrawn: keep what runs (a push replaces it)
            self._seen_seq = last
            self._bucket_state = f"no version in bucket {self.config.bucket}"
            return self._bucket_state
        self._bucket_state = ""
        revision = int(entry.revision or 0)
        await self.consider(revision, entry.value or b"")
        self._seen_seq = max(last, revision)
        return ""

    async def consider(self, revision: int, value: bytes) -> bool | None:
        """Runs the version in `value` if it is new and good: True (runs now), False (refused), None (nothing
        to do: the running or an already refused revision)."""
        running = self.running
        # Only the newest value is ever read, so any other revision is news (a bucket made anew counts from 1).
        if revision <= 0 or revision == self._refused_revision or (running is not None
                                                                   and revision == running.revision):
            return None
        try:
            bundle = RulesBundle.decode(value)
        except BundleError as exc:
            self._refuse(revision, str(exc))
            return False
        loop = asyncio.get_running_loop()
        if running is not None and bundle.digest == running.bundle.digest:
            # The same files pushed again: nothing to rebuild, but the running revision moves on.
            staged = await loop.run_in_executor(None, self._cache.stage, revision, bundle)
            await loop.run_in_executor(None, self._cache.commit, staged)
            self.running = staged
            self._log(f"fleet rules: {staged.label} holds the files that run; no reload needed")
            return True
        staged = await loop.run_in_executor(None, self._cache.stage, revision, bundle)
        reloader = self._reloader
        if reloader is None:
            raise RuntimeError("FleetRulesNode.attach() must run before run()")
        self._reloading = loop.run_in_executor(None, reloader.reload, FleetCandidate(staged.paths, staged.label))
        ok = await self._reloading
        if not ok:  # the reloader logged it and raised the internal alert
            self.counts.refused += 1
            self._refused_revision = revision
            await loop.run_in_executor(None, self._cache.discard, staged, running)
            return False
        await loop.run_in_executor(None, self._cache.commit, staged)
        self.running = staged
        self.counts.applied += 1
        label = f" ({_safe_text(bundle.name)})" if bundle.name else ""
        self._log(f"fleet rules: running {staged.label}{label}: {len(staged.paths)} files")
        return True

    def _refuse(self, revision: int, reason: str) -> None:
        self.counts.refused += 1
        self._refused_revision = revision
        keeping = self.rules_version or "the local rules files only"
        self._log(f"fleet rules revision {revision} refused, keeping {keeping}: {reason}")
        if self._reporter is not None:
            self._reporter.report(
                RELOAD_RULE,
                Priority.ERROR,
                f"Falconet internal: fleet rules revision {revision} refused, the previous configuration and "
                f"rules keep running: {reason}",
                {"error": reason, "fleet_rules_version": str(revision)},
            )

    def _note(self, problem: str) -> None:
        """One log line per change of trouble (not one per check), and one when it clears."""
        if problem == self._problem:
            return
        if problem:
            self._log(f"fleet rules: {problem}; running {self.rules_version or 'the local rules files only'}")
        elif self._problem:
            self._log("fleet rules: NATS and the bucket are reachable again")
        self._problem = problem

    async def _on_error(self, exc: Exception) -> None:
        self._note(f"NATS at {self.config.connection.describe()}: {_safe(exc)}")

    async def _on_disconnected(self) -> None:
        self.counts.connected = False

    async def _on_reconnected(self) -> None:
        self.counts.connected = True
        self._note("")
        if self._wake is not None:
            self._wake.set()


def _safe(exc: BaseException) -> str:
    return _safe_text(describe_error(exc))


def _safe_text(text: str) -> str:
    return escape_controls(text if len(text) <= 300 else text[:297] + "...")


class _Collector:
    def __init__(self, node: FleetRulesNode) -> None:
        self.node = node

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        node = self.node
        running = node.running
        info = Metric("falconet_fleet_rules", "The pushed rules version this node runs (version=\"\": local "
                      "rules files only); always 1.", "info")
        labels: dict[str, str] = {"version": "", "revision": "0", "digest": "", "name": ""}
        if running is not None:
            labels = {"version": running.label, "revision": str(running.revision), "digest": running.bundle.digest,
                      "name": _safe_text(running.bundle.name)}
        info.add_sample("falconet_fleet_rules_info", labels, 1)
        yield info
        for name, doc, value in (
            ("falconet_fleet_rules_applied", "Pushed rules versions this node validated and switched to.",
             node.counts.applied),
            ("falconet_fleet_rules_refused", "Pushed rules versions this node refused (it kept the running set).",
             node.counts.refused),
        ):
            c = Metric(name, doc, "counter")
            c.add_sample(name + "_total", {}, value)
            yield c
        g = Metric("falconet_fleet_rules_connected", "1 while the fleet rules watch is connected to NATS.", "gauge")
        g.add_sample("falconet_fleet_rules_connected", {}, int(node.counts.connected))
        yield g
