"""The container settings of the daemon's configuration: Falco's `container_engines` and `append_output`.

`container_engines` has Falco's keys (`docker`, `podman`, `cri`, each with `enabled`; `cri.sockets`), and
ours: `sockets` for every engine (the API sockets tried in order), `timeout` (seconds one request to a
runtime may take), `podman.storage_root` / `podman.events_log` (Podman's on-disk state, used when no API
socket is served), `cri.namespaces` (the containerd namespaces searched; `k8s.io` and `default` by
default). Falco's `lxc`, `libvirt_lxc` and `bpm` engines, and `cri.disable_async`, are accepted and ignored
with a warning. An absent key means the engine's registered defaults (sensor/containers), which work
on a normal host.

`container_metadata_wait` (ours; Falco looks metadata up asynchronously and has no such wait): seconds a
just-started container's events may wait for its metadata before the engine sees them without it (the hold in
sensor/containers/hold.py). 0.5 by default, 0 (never wait) to 10.

`append_output` is Falco's list of entries (`match: {source, tags, rule}`, `extra_output`, `extra_fields`);
`suggested_output: true` (Falco's default entry, where the container plugin suggests its fields) adds the
container and pod identity fields below to every syscall alert's output_fields.
"""

from __future__ import annotations

from typing import Any, Protocol

from falconet.sensor.containers import EngineSettings, load_runtimes, registered
from falconet.sensor.containers.hold import MAX_WAIT

SUGGESTED_FIELDS = (
    "container.id",
    "container.name",
    "container.image.repository",
    "container.image.tag",
    "k8s.ns.name",
    "k8s.pod.name",
)
"""What `suggested_output: true` adds to output_fields (Falco's container plugin suggests these)."""

_IGNORED_ENGINES = frozenset({"lxc", "libvirt_lxc", "bpm"})
_ENGINE_KEYS = frozenset(
    {"enabled", "sockets", "timeout", "disable_async", "storage_root", "events_log", "namespaces"}
)


METADATA_WAIT_MAX = 10.0
"""The longest `container_metadata_wait` accepted: beyond it a container's held events would age past what
the sweep and the outputs expect of live alerts."""


class Problems(Protocol):
    problems: list[str]
    warnings: list[str]


def parse_container_engines(r: Problems, data: dict[str, Any]) -> tuple[tuple[str, EngineSettings], ...]:
    """(name, settings) for every registered engine, the config's keys over the engine's defaults."""
    load_runtimes()
    known = registered()
    section = data.get("container_engines")
    if section is None:
        section = {}
    if not isinstance(section, dict):
        r.problems.append(f"container_engines must be a mapping of engine names to settings, got {section!r:.60}.")
        section = {}
    out: list[tuple[str, EngineSettings]] = []
    for name in section:
        if name in _IGNORED_ENGINES:
            r.warnings.append(f"container_engines.{name} is a Falco engine that Falconet does not support; ignored.")
        elif name not in known:
            r.problems.append(
                f"container_engines.{name} is not a known engine (known: {', '.join(sorted(known))})."
            )
    for name, (_factory, defaults) in known.items():
        entry = section.get(name)
        if entry is None:
            out.append((name, defaults))
            continue
        if not isinstance(entry, dict):
            r.problems.append(f"container_engines.{name} must be a mapping (enabled, sockets, ...).")
            continue
        out.append((name, _engine(r, name, entry, defaults)))
    return tuple(out)


def _engine(r: Problems, name: str, entry: dict[str, Any], defaults: EngineSettings) -> EngineSettings:
    where = f"container_engines.{name}."
    for key in entry:
        if key not in _ENGINE_KEYS:
            r.problems.append(f"{where}{key} is not a known setting (known: {', '.join(sorted(_ENGINE_KEYS))}).")
    if "disable_async" in entry:
        r.warnings.append(f"{where}disable_async is ignored: lookups never block the engine in Falconet.")
    enabled = entry.get("enabled", defaults.enabled)
    if not isinstance(enabled, bool):
        r.problems.append(f"{where}enabled must be true or false, got {enabled!r:.60}.")
        enabled = defaults.enabled
    sockets = entry.get("sockets", defaults.sockets)
    if isinstance(sockets, str):
        sockets = (sockets,)
    if not isinstance(sockets, list | tuple) or not all(isinstance(s, str) and s for s in sockets):
        r.problems.append(f"{where}sockets must be a list of socket paths, got {sockets!r:.60}.")
        sockets = defaults.sockets
    sockets = tuple(s.removeprefix("unix://") for s in sockets)
    for s in sockets:
        if not s.startswith("/"):
            r.problems.append(f"{where}sockets entry {s!r} must be an absolute path (unix:// optional).")
    timeout = entry.get("timeout", defaults.timeout)
    if not isinstance(timeout, int | float) or isinstance(timeout, bool) or not 0 < timeout <= 60:
        r.problems.append(f"{where}timeout must be a number of seconds between 0 and 60, got {timeout!r:.60}.")
        timeout = defaults.timeout
    extra = dict(defaults.extra)
    for key in ("storage_root", "events_log"):
        if key in entry:
            if not isinstance(entry[key], str) or not entry[key].startswith("/"):
                r.problems.append(f"{where}{key} must be an absolute path, got {entry[key]!r:.60}.")
            else:
                extra[key] = entry[key]
    if "namespaces" in entry:  # cri: the containerd namespaces searched (sensor/containers/containerd.py)
        spaces = entry["namespaces"]
        if not isinstance(spaces, list) or not spaces or not all(
            isinstance(n, str) and n and n.replace(".", "").replace("-", "").replace("_", "").isalnum()
            for n in spaces
        ):
            r.problems.append(f"{where}namespaces must be a non-empty list of containerd namespace names.")
        else:
            extra["namespaces"] = list(spaces)
    return EngineSettings(enabled=enabled, sockets=sockets, timeout=float(timeout), extra=extra)


def parse_metadata_wait(r: Problems, data: dict[str, Any]) -> float:
    """`container_metadata_wait`: seconds, 0 to METADATA_WAIT_MAX; absent means the hold's default."""
    value = data.get("container_metadata_wait", MAX_WAIT)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= METADATA_WAIT_MAX:
        r.problems.append(
            f"container_metadata_wait must be a number of seconds from 0 to {METADATA_WAIT_MAX:g}, got {value!r:.60}."
        )
        return MAX_WAIT
    return float(value)


def parse_append_output(r: Problems, data: dict[str, Any]) -> tuple[dict[str, Any], ...]:
    """The `append_output` entries, checked for shape (field names are checked when the rules load); a
    `suggested_output: true` entry becomes its fields."""
    from falconet.rules.engine import AppendOutput

    value = data.get("append_output")
    if value is None:
        return ()
    if not isinstance(value, list):
        r.problems.append(f"append_output must be a list of entries, got {value!r:.60}.")
        return ()
    out: list[dict[str, Any]] = []
    for i, entry in enumerate(value):
        where = f"append_output[{i}]"
        if not isinstance(entry, dict):
            r.problems.append(f"{where} must be a mapping (match, extra_output, extra_fields), got {entry!r:.60}.")
            continue
        unknown = set(entry) - {"match", "extra_output", "extra_fields", "suggested_output"}
        if unknown:
            r.problems.append(f"{where} has unknown keys: {', '.join(sorted(map(str, unknown)))}.")
            continue
        match = entry.get("match") or {}
        if isinstance(match, dict) and set(match) - {"source", "tags", "rule"}:
            r.problems.append(f"{where}.match may only have source, tags and rule.")
            continue
        entry = dict(entry)
        suggested = entry.pop("suggested_output", False)
        if not isinstance(suggested, bool):
            r.problems.append(f"{where}.suggested_output must be true or false.")
            continue
        if suggested:
            entry["extra_fields"] = list(entry.get("extra_fields") or []) + list(SUGGESTED_FIELDS)
            if "match" not in entry:
                entry["match"] = {"source": "syscall"}
        if "extra_output" in entry and not isinstance(entry["extra_output"], str):
            r.problems.append(f"{where}.extra_output must be a string.")
            continue
        try:
            AppendOutput.from_config(entry)
        except ValueError as exc:
            r.problems.append(f"{where}: {exc}.")
            continue
        out.append(entry)
    return tuple(out)
