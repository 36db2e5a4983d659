"""The engine: compiled rules indexed by event type; events in, alerts out.

This is the hot path. An event looks up its evaluator by its type (a dict hit): one function, generated once
per event type (compiler.dispatch), that holds the candidate rules' conditions specialised for that type, in
load order, and returns which matched. For a match the rule's output is rendered through the output module's
formatter into an Alert ready for the hub. `rule_matching: first` (Falco's default) stops at the first
matching rule; `all` alerts for every match. Types no enabled rule can match cost a dict hit and a call.

The engine is pure: no grpc, no bcc, no asyncio, no I/O. What needs the outside world (the host name for
alerts, DNS for fd.*ip.name) comes through `Resolvers`, which the daemon injects and tests fix. A rule whose
evaluation raises (a bug, or a value of an unexpected shape from a replayed file) is counted in
`stats.eval_errors` and skipped for that event; it never takes the engine down.
"""

from __future__ import annotations

import fnmatch
import inspect
import socket
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from falconet.model.alert import Alert, Priority
from falconet.model.audit import AuditEvent
from falconet.model.event import Event
from falconet.model.prefilter import EVERYTHING, EventGate

from . import buffer_fields, event_gates, open_prefixes
from .open_gate import OpenGate
from .codegen import MAX_INLINE_NESTING, nesting_depth
from .errors import LoadResult, RulesLoadError
from .fields.dns import DEFAULT_TTL as DEFAULT_DNS_TTL
from .fields.dns import DnsCache
from .hostname import default_hostname
from .k8saudit_index import AuditRuleIndex
from .loader import CompiledRule, Loader, Ruleset

RuleMatching = Literal["first", "all"]


def system_dns(domain: str) -> list[str]:
    """The system resolver, uncached (the engine's DnsCache decides how often it is asked); raises OSError
    when the lookup fails, which the cache answers with its last answer and a back-off."""
    infos = socket.getaddrinfo(domain, None, proto=socket.IPPROTO_TCP)
    return sorted({str(info[4][0]) for info in infos})


@dataclass(frozen=True, slots=True)
class Resolvers:
    """What evaluation needs from outside: the host name for alerts and DNS for fd.*ip.name.

    `dns` is a plain resolver (domain -> addresses; it may raise). The resolvers own the engine's only DNS
    cache (`dns_cache`, answers reused for `dns_ttl` seconds), shared by every rule compiled with them and
    dropped with them: a reload builds new resolvers and so starts a fresh cache.
    """

    hostname: Callable[[], str]
    dns: Callable[[str], list[str]]
    dns_ttl: float = DEFAULT_DNS_TTL
    dns_cache: DnsCache = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "dns_cache", DnsCache(self.dns, ttl=self.dns_ttl))

    @classmethod
    def local(cls) -> Resolvers:
        """FALCO_HOSTNAME or this machine's name (as Falco), and no DNS (names match nothing)."""
        name = default_hostname()
        return cls(hostname=lambda: name, dns=lambda _domain: [])

    @classmethod
    def system(cls) -> Resolvers:
        """Like local(), with the system resolver for DNS: for the daemon, which owns the I/O."""
        base = cls.local()
        return cls(hostname=base.hostname, dns=system_dns)


@dataclass(frozen=True, slots=True)
class AppendOutput:
    """One `append_output` entry as in falco.yaml: when `match` holds (source, tags all present, rule name),
    `extra_output` is appended to the output text and `extra_fields` added to output_fields only (a field
    name, or {name: format})."""

    extra_output: str = ""
    extra_fields: tuple[str | tuple[str, str], ...] = ()
    source: str | None = None
    tags: tuple[str, ...] = ()
    rule: str | None = None

    @classmethod
    def from_config(cls, entry: Mapping[str, Any]) -> AppendOutput:
        """Reads a falco.yaml `append_output` entry; raises ValueError with a sentence for a malformed one."""
        if not isinstance(entry, Mapping):
            raise ValueError("an append_output entry must be a mapping")
        match = entry.get("match") or {}
        if not isinstance(match, Mapping):
            raise ValueError("append_output 'match' must be a mapping of source, tags and rule")
        fields: list[str | tuple[str, str]] = []
        for item in entry.get("extra_fields") or ():
            if isinstance(item, str):
                fields.append(item)
            elif isinstance(item, Mapping) and len(item) == 1:
                ((name, fmt),) = item.items()
                fields.append((str(name), str(fmt)))
            else:
                raise ValueError("append_output 'extra_fields' items must be a field name or {name: format}")
        tags = match.get("tags") or ()
        if isinstance(tags, str):
            tags = (tags,)
        return cls(
            extra_output=str(entry.get("extra_output") or ""),
            extra_fields=tuple(fields),
            source=match.get("source"),
            tags=tuple(str(t) for t in tags),
            rule=match.get("rule"),
        )

    def applies(self, rule: CompiledRule) -> bool:
        return (
            (self.source is None or self.source == rule.source)
            and all(t in rule.tags for t in self.tags)
            and (self.rule is None or self.rule == rule.name)
        )


@dataclass(slots=True)
class EngineStats:
    events: int = 0
    alerts: int = 0
    eval_errors: int = 0
    other_source: int = 0  # events of a source no loaded rule handles
    by_rule: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class _Active:
    """A rule as the hot loop needs it: predicate, and what to do on a match."""

    rule: CompiledRule
    predicate: Callable[[Any], bool]
    render: Callable[[Any], tuple[str, dict[str, Any]]]


class Engine:
    """Evaluates events against a loaded ruleset. Build with `from_files` or `from_texts`.

    One engine belongs to one thread (the daemon's engine thread): it caches per-event-type evaluators
    lazily and keeps plain counters, without locks. Reloading rules means building a new Engine and
    swapping it in; a load that fails leaves the running one untouched.
    """

    def __init__(
        self,
        ruleset: Ruleset,
        *,
        rule_matching: RuleMatching = "first",
        enabled_rules: Iterable[str] = (),
        disabled_rules: Iterable[str] = (),
        enabled_tags: Iterable[str] = (),
        disabled_tags: Iterable[str] = (),
        append_output: str | Sequence[AppendOutput | Mapping[str, Any]] | None = None,
        resolvers: Resolvers | None = None,
        min_priority: Priority | None = None,
        compile_output: Callable[..., Any] | None = None,
    ) -> None:
        if rule_matching not in ("first", "all"):
            raise ValueError(f"rule_matching must be 'first' or 'all', not {rule_matching!r}")
        self.ruleset = ruleset
        self.load_result: LoadResult = ruleset.result
        self.rule_matching: RuleMatching = rule_matching
        self.resolvers = resolvers or Resolvers.local()
        self.min_priority = min_priority
        self.stats = EngineStats()
        self._first = rule_matching == "first"
        self._compile_output = compile_output or _default_compile_output(self.resolvers)
        self._append = _append_entries(append_output)
        self._enabled: dict[str, bool] = {}
        self._active: dict[str, _Active] = {}
        for rule in ruleset.rules:
            self._enabled[rule.name] = rule.enabled
        self._apply_selection(disabled_rules, disabled_tags, False)
        self._apply_selection(enabled_rules, enabled_tags, True)
        self._by_type: dict[str, tuple[_Active, ...]] = {}
        self._dispatch: dict[str, tuple[Callable[[Any], Sequence[int]], tuple[_Active, ...]]] = {}
        self._special: dict[tuple[str, str], Callable[[Any], bool] | bool | None] = {}
        self._sources: dict[tuple[str, str], str | bool] = {}
        self._rebuild()

    # -- construction --

    @classmethod
    def from_files(
        cls,
        paths: Iterable[str | Path],
        *,
        rule_matching: RuleMatching = "first",
        enabled_rules: Iterable[str] = (),
        disabled_rules: Iterable[str] = (),
        enabled_tags: Iterable[str] = (),
        disabled_tags: Iterable[str] = (),
        append_output: str | Sequence[AppendOutput | Mapping[str, Any]] | None = None,
        resolvers: Resolvers | None = None,
        min_priority: Priority | None = None,
    ) -> Engine:
        """Loads the files in order (later definitions win); raises RulesLoadError carrying the whole
        LoadResult if any error was found. Warnings are in `engine.load_result`."""
        loader = Loader()
        for path in paths:
            loader.add_file(path)
        options = dict(
            rule_matching=rule_matching,
            enabled_rules=enabled_rules,
            disabled_rules=disabled_rules,
            enabled_tags=enabled_tags,
            disabled_tags=disabled_tags,
            append_output=append_output,
            resolvers=resolvers,
            min_priority=min_priority,
        )
        return cls._from_loader(loader, options)

    @classmethod
    def from_texts(cls, texts: Iterable[tuple[str, str]], **options: Any) -> Engine:
        """Like from_files, from (name, text) pairs (tests, rules passed over an API)."""
        loader = Loader()
        for name, text in texts:
            loader.add_text(name, text)
        return cls._from_loader(loader, options)

    @classmethod
    def _from_loader(cls, loader: Loader, options: Mapping[str, Any]) -> Engine:
        opts = dict(options)
        resolvers = opts.get("resolvers") or Resolvers.local()
        opts["resolvers"] = resolvers
        compile_output = _default_compile_output(resolvers)
        ruleset = loader.compile(resolvers=resolvers, compile_output=compile_output)
        if not ruleset.result.ok:
            raise RulesLoadError(ruleset.result)
        return cls(ruleset, compile_output=compile_output, **opts)

    # -- enabling and disabling --

    def _apply_selection(self, names: Iterable[str], tags: Iterable[str], enable: bool) -> None:
        patterns = list(names)
        tagset = set(tags)
        for rule in self.ruleset.rules:
            if any(_name_matches(rule.name, p) for p in patterns) or tagset.intersection(rule.tags):
                self._enabled[rule.name] = enable

    def enable_rules(self, pattern: str, enabled: bool = True) -> int:
        """Enables (or disables) rules by name; `*` wildcards as in falco.yaml. Returns how many matched."""
        hits = [r for r in self.ruleset.rules if _name_matches(r.name, pattern)]
        for rule in hits:
            self._enabled[rule.name] = enabled
        self._rebuild()
        return len(hits)

    def enable_tag(self, tag: str, enabled: bool = True) -> int:
        """Enables (or disables) every rule carrying `tag`. Returns how many matched."""
        hits = [r for r in self.ruleset.rules if tag in r.tags]
        for rule in hits:
            self._enabled[rule.name] = enabled
        self._rebuild()
        return len(hits)

    def is_enabled(self, name: str) -> bool:
        rule = next((r for r in self.ruleset.rules if r.name == name), None)
        return rule is not None and self._is_active(rule)

    def _is_active(self, rule: CompiledRule) -> bool:
        if not self._enabled.get(rule.name, False):
            return False
        return self.min_priority is None or rule.priority <= self.min_priority

    @property
    def rules(self) -> list[CompiledRule]:
        """Every loaded rule in evaluation order (enabled or not)."""
        return list(self.ruleset.rules)

    @property
    def enabled_rules(self) -> list[CompiledRule]:
        return [r for r in self.ruleset.rules if self._is_active(r)]

    def _rebuild(self) -> None:
        active: dict[str, _Active] = {}
        for rule in self.ruleset.rules:
            if not self._is_active(rule):
                continue
            act = self._active.get(rule.name)
            if act is None:
                act = _Active(rule, rule.predicate, self._renderer(rule))
            active[rule.name] = act
        self._active = active
        ordered = [a for a in (active.get(r.name) for r in self.ruleset.rules) if a is not None]
        # Syscall rules go through the per-type index below; rules of other sources (k8s_audit) run in load
        # order on every event of their source, which carries no event type to index by.
        self._order = [a for a in ordered if a.rule.source == "syscall"]
        self._by_source: dict[str, tuple[_Active, ...]] = {}
        for act in ordered:
            if act.rule.source != "syscall":
                self._by_source[act.rule.source] = (*self._by_source.get(act.rule.source, ()), act)
        # k8s_audit rules are indexed by the event's verb and resource (rules/k8saudit_index.py); the loops
        # over each candidate subset are built on first use.
        self._audit_index = AuditRuleIndex(
            [(a.rule.condition_ast, a.rule.macro_asts or {}) for a in self._by_source.get("k8s_audit", ())]
        )
        self._source_runs: dict[tuple[str, tuple[int, ...] | None], tuple[Any, tuple[_Active, ...]]] = {}
        self._by_type = {}
        self._dispatch = {}

    def _renderer(self, rule: CompiledRule) -> Callable[[Any], tuple[str, dict[str, Any]]]:
        entries = [e for e in self._append if e.applies(rule)]
        if not entries:
            return rule.formatter.render  # type: ignore[no-any-return]
        extra = " ".join(e.extra_output for e in entries if e.extra_output)
        fields: list[str | dict[str, str]] = []
        for e in entries:
            for item in e.extra_fields:
                fields.append({item[0]: item[1]} if isinstance(item, tuple) else item)
        fmt = rule.formatter.with_extra(extra or None, fields, resolvers=self.resolvers)
        return fmt.render  # type: ignore[no-any-return]

    # -- evaluation --

    @property
    def event_types(self) -> frozenset[str] | None:
        """The event types any enabled rule can match; None when some rule can match every type."""
        names: set[str] = set()
        for act in self._order:
            if act.rule.types.cofinite:
                return None
            names |= act.rule.types.names
        return frozenset(names)

    def open_path_prefixes(self) -> dict[str, list[str]] | None:
        """The open paths the sensor must deliver for this engine's enabled rules, as Sensor.set_open_prefixes
        takes them (prefix -> kinds among read/write/other); None when some rule cannot be bounded, which
        means: no filter. Conservative (rules/open_prefixes.py): every event any enabled rule can match on
        an open, and every later event on an fd a rule reads through the fd table, has a path under them."""
        out: dict[str, int] = {}
        for act in self._order:
            rule = act.rule
            if rule.condition_ast is None:
                return None
            found = open_prefixes.rule_prefixes(
                rule.condition_ast, rule.macro_asts, rule.types.names, rule.types.cofinite
            )
            if found is None:
                return None
            for path, mask in found.items():
                out[path] = out.get(path, 0) | mask
        return open_prefixes.as_sensor_argument(out)

    def open_gate(self) -> OpenGate:
        """User space's gate on opens (rules/open_gate.py): False for an open of a resolved path and kind set
        no enabled rule can match, so the sensor need not build its Event. Tighter than the kernel's filter:
        it keeps each rule's conjunctions and judges relative paths once resolved."""
        return OpenGate.of((a.rule.condition_ast, a.rule.macro_asts, a.rule.types.__contains__) for a in self._order)

    def event_gates(self, names: Iterable[str]) -> dict[str, EventGate]:
        """For each of these event types, the gate every event an enabled rule can match passes
        (rules/event_gates.py): the union of its candidate rules' gates, NOTHING when none can match it. The
        sensor checks it in the kernel for syscalls without a state role."""
        out: dict[str, EventGate] = {}
        for name in names:
            gates = []
            for act in self._order:
                rule = act.rule
                if name not in rule.types:
                    continue
                if rule.condition_ast is None:
                    gates.append(EVERYTHING)
                    break
                gates.append(event_gates.rule_gate(rule.condition_ast, rule.macro_asts, name))
            out[name] = event_gates.union(gates)
        return out

    def buffer_event_types(self) -> frozenset[str] | None:
        """The event types whose data buffer (evt.buffer) some enabled rule reads, for the sensor's copy;
        None when some rule of any type may read it (rules/buffer_fields.py)."""
        return buffer_fields.buffer_event_types(
            (a.rule.condition_ast, a.rule.macro_asts, a.rule.output, a.rule.types.names, a.rule.types.cofinite)
            for a in self._order)

    def reads_environment(self) -> bool:
        """Whether some enabled rule reads a process's environment (proc.env, ...), so the sensor must read it
        whole at an exec (rules/buffer_fields.py)."""
        return buffer_fields.reads_environment(
            (a.rule.condition_ast, a.rule.macro_asts, a.rule.output, a.rule.types.names, a.rule.types.cofinite)
            for a in self._order)

    def open_path_blockers(self) -> list[str]:
        """Names of the enabled rules that keep open_path_prefixes() at None (to tell the user why)."""
        names = []
        for act in self._order:
            rule = act.rule
            if rule.condition_ast is None or open_prefixes.rule_prefixes(
                rule.condition_ast, rule.macro_asts, rule.types.names, rule.types.cofinite
            ) is None:
                names.append(rule.name)
        return names

    def warm(self, event_types: Iterable[str] | None = None) -> int:
        """Builds the per-type evaluators now (for `event_types`, default: every type a rule can match),
        so the first event of each type does not pay for generating them. Returns how many were built."""
        types = self.event_types if event_types is None else frozenset(event_types)
        built = 0
        for event_type in sorted(types or ()):
            if event_type not in self._dispatch:
                self._build_dispatch(event_type)
                built += 1
        return built

    def candidates(self, event_type: str) -> tuple[CompiledRule, ...]:
        """The enabled rules an event of this type runs, in evaluation order."""
        return tuple(a.rule for a in self._candidates(event_type))

    def _candidates(self, event_type: str) -> tuple[_Active, ...]:
        found = self._by_type.get(event_type)
        if found is None:
            acts = []
            for act in self._order:
                if event_type not in act.rule.types:
                    continue
                pred = self._specialized(act.rule, event_type)
                if pred is False:
                    continue  # can never match this type once its evt.type checks are known
                acts.append(act if pred is None or pred is True else _Active(act.rule, pred, act.render))
            found = tuple(acts)
            self._by_type[event_type] = found
        return found

    def _specialized(self, rule: CompiledRule, event_type: str) -> Callable[[Any], bool] | bool | None:
        """The rule's condition compiled for one event type (cached); None: use the generic predicate."""
        key = (rule.name, event_type)
        if key in self._special:
            return self._special[key]
        pred: Callable[[Any], bool] | bool | None = None
        if rule.specialize is not None:
            try:
                pred = rule.specialize(event_type)
            except Exception:  # specialising is an optimisation; the generic predicate is always right
                pred = None
            if pred is True:
                pred = _always
        self._special[key] = pred
        return pred

    def process(self, event: Event | AuditEvent) -> list[Alert]:
        """Evaluates one event; returns its alerts (at most one with rule_matching 'first')."""
        self.stats.events += 1
        if isinstance(event, AuditEvent) or event.source != "syscall":
            return self._process_other(event)
        entry = self._dispatch.get(event.type)
        if entry is None:
            entry = self._build_dispatch(event.type)
        run, acts = entry
        hits = run(event)
        if not hits:
            return []
        return [self._alert(acts[i], event) for i in hits]

    def _process_other(self, event: Event | AuditEvent) -> list[Alert]:
        """An event of another source (k8s_audit): that source's rules in load order; none loaded, counted."""
        acts = self._by_source.get(event.source)
        if acts is None:
            self.stats.other_source += 1
            return []
        subset = self._audit_index.candidates(event.data) if isinstance(event, AuditEvent) else None
        entry = self._source_runs.get((event.source, subset))
        if entry is None:
            chosen = acts if subset is None else tuple(acts[i] for i in subset)
            entry = self._source_runs[(event.source, subset)] = (self._loop(chosen), chosen)
        run, chosen = entry
        return [self._alert(chosen[i], event) for i in run(event)]

    def _build_dispatch(self, event_type: str) -> tuple[Callable[[Any], Sequence[int]], tuple[_Active, ...]]:
        """The per-type evaluator: one generated function over the candidate rules when the ruleset
        provides it (fields shared between rules extracted once), else a loop over their predicates."""
        acts = self._candidates(event_type)
        run: Callable[[Any], Sequence[int]] | None = None
        dispatch = self.ruleset.dispatch
        if acts and dispatch is not None and all(a.rule.condition_source is not None for a in acts):
            try:
                sources = [self._dispatch_source(a.rule, event_type) for a in acts]
                run = dispatch(sources, first=self._first, on_error=self._count_error)
            except Exception:  # generation is an optimisation; the loop below is always right
                run = None
        if run is None:
            run = self._loop(acts) if acts else _no_hits
        entry = (run, acts)
        self._dispatch[event_type] = entry
        return entry

    def _source(self, rule: CompiledRule, event_type: str) -> str | bool:
        """A rule's condition source for one type, generated once (enabling rules again reuses it)."""
        key = (rule.name, event_type)
        src = self._sources.get(key)
        if src is None:
            assert rule.condition_source is not None
            src = self._sources[key] = rule.condition_source(event_type)
        return src

    def _dispatch_source(self, rule: CompiledRule, event_type: str) -> str | bool | Callable[[Any], bool]:
        """Inline source for the dispatch function, or, for a condition too deep to inline, its own
        specialised predicate to call."""
        src = self._source(rule, event_type)
        if isinstance(src, str) and nesting_depth(src) > MAX_INLINE_NESTING:
            pred = self._specialized(rule, event_type)
            return pred if callable(pred) else rule.predicate
        return src

    def _count_error(self, _position: int) -> None:
        self.stats.eval_errors += 1

    def _loop(self, acts: tuple[_Active, ...]) -> Callable[[Any], Sequence[int]]:
        first = self._first
        stats = self.stats

        def run(event: Any) -> Sequence[int]:
            hits: list[int] = []
            for i, act in enumerate(acts):
                try:
                    if not act.predicate(event):
                        continue
                except Exception:  # a broken rule must not stop the engine: count it, go on
                    stats.eval_errors += 1
                    continue
                hits.append(i)
                if first:
                    break
            return hits

        return run

    def matching_rules(self, event: Event | AuditEvent) -> list[str]:
        """Names of every enabled rule matching the event, ignoring rule_matching (for tests and tools)."""
        if isinstance(event, AuditEvent) or event.source != "syscall":
            return [a.rule.name for a in self._by_source.get(event.source, ()) if a.predicate(event)]
        return [a.rule.name for a in self._candidates(event.type) if a.predicate(event)]

    def _alert(self, act: _Active, event: Event | AuditEvent) -> Alert:
        rule = act.rule
        text, fields = act.render(event)
        stats = self.stats
        stats.alerts += 1
        stats.by_rule[rule.name] = stats.by_rule.get(rule.name, 0) + 1
        return Alert(
            time_ns=event.ts,
            rule=rule.name,
            priority=rule.priority,
            source=rule.source,
            output=text,
            output_fields=fields,
            tags=list(rule.tags),
            hostname=self.resolvers.hostname(),
        )


def _always(_event: Any) -> bool:
    return True


def _no_hits(_event: Any) -> Sequence[int]:
    return ()


def _name_matches(name: str, pattern: str) -> bool:
    return name == pattern or ("*" in pattern and fnmatch.fnmatchcase(name, pattern))


def _append_entries(spec: str | Sequence[AppendOutput | Mapping[str, Any]] | None) -> list[AppendOutput]:
    if spec is None:
        return []
    if isinstance(spec, str):
        return [AppendOutput(extra_output=spec)] if spec.strip() else []
    return [e if isinstance(e, AppendOutput) else AppendOutput.from_config(e) for e in spec]


def _default_compile_output(resolvers: Resolvers | None) -> Callable[[str], Any]:
    """The fields engineer's output compiler, given the resolvers when it takes them."""
    from .output import compile_output

    try:
        takes_resolvers = "resolvers" in inspect.signature(compile_output).parameters
    except (TypeError, ValueError):
        takes_resolvers = False
    if takes_resolvers:
        # Resolvers is frozen; the fields module's protocol only reads its two callables.
        res: Any = resolvers
        return lambda fmt: compile_output(fmt, resolvers=res)
    return compile_output
