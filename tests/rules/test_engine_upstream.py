"""Falco's own rules files load as Falco loads them: counts, event types, and every warning accounted for.

The files are read from ../shared/upstream-rules (never copied into the repo); the expected counts are read
from its SOURCE.txt, and the stable rules' event types are the table in the rules-language reference (5.3).
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest
from engine_support import CURRENT, FALCO_025, FALCO_025_K8S, INCUBATING, RESOLVERS, SANDBOX, STABLE, UPSTREAM
from resources import shared_path

from falconet.rules.engine import Engine
from falconet.rules.loader import Ruleset

pytestmark = pytest.mark.upstream
shared_path("upstream-rules")  # absent: the module skips here (fails with CI=true)

SOURCE_TXT = (UPSTREAM / "SOURCE.txt").read_text(encoding="utf-8")


def _counts() -> dict[str, tuple[int, int, int]]:
    """(rules, macros, lists) per file, as SOURCE.txt states them."""
    m = re.search(r"stable (\d+) rules, (\d+) macros, (\d+) lists; incubating (\d+)/(\d+)/(\d+); "
                  r"sandbox (\d+)/(\d+)/(\d+)", SOURCE_TXT)  # fmt: skip
    old = re.search(r"(\d+) rules / (\d+) macros / (\d+) lists", SOURCE_TXT)
    assert m and old, "SOURCE.txt no longer states the counts in the expected form"
    n = [int(g) for g in m.groups()]
    return {
        "falco_rules.yaml": (n[0], n[1], n[2]),
        "falco-incubating_rules.yaml": (n[3], n[4], n[5]),
        "falco-sandbox_rules.yaml": (n[6], n[7], n[8]),
        "falco-0.25/falco_rules.yaml": tuple(int(g) for g in old.groups()),  # type: ignore[dict-item]
    }


def _sandbox_disabled() -> int:
    m = re.search(r"sandbox \d+/\d+/\d+ \((\d+) disabled\)", SOURCE_TXT)
    assert m
    return int(m.group(1))


def _engine(*paths: Path) -> Engine:
    return Engine.from_files(paths, resolvers=RESOLVERS)


def _ruleset(engine: Engine) -> Ruleset:
    return engine.ruleset


@pytest.mark.parametrize(
    ("path", "key", "disabled"),
    [
        (STABLE, "falco_rules.yaml", 0),
        (INCUBATING, "falco-incubating_rules.yaml", 0),
        (SANDBOX, "falco-sandbox_rules.yaml", None),
    ],
)
def test_current_file_loads_with_counts(path: Path, key: str, disabled: int | None) -> None:
    engine = _engine(path)  # raises RulesLoadError on any error
    rs = _ruleset(engine)
    assert rs.result.errors == []
    assert rs.result.warnings == [], rs.result.format()  # the current files load without a single warning
    assert (len(rs.rules), len(rs.macros), len(rs.lists)) == _counts()[key]
    want_disabled = _sandbox_disabled() if disabled is None else disabled
    assert sum(not r.enabled for r in rs.rules) == want_disabled
    assert len(engine.enabled_rules) == len(rs.rules) - want_disabled
    # Every current rule carries a MITRE tactic tag (SOURCE.txt, reference 5.3).
    assert all(any(t.startswith("mitre_") for t in r.tags) for r in rs.rules)


def test_all_current_files_load_together() -> None:
    """Loaded in order, the shared macros and lists are redefined by later files without visibility errors."""
    engine = _engine(STABLE, INCUBATING, SANDBOX)
    rs = _ruleset(engine)
    assert rs.result.ok and rs.result.warnings == []
    c = _counts()
    assert len(rs.rules) == sum(c[k][0] for k in ("falco_rules.yaml", "falco-incubating_rules.yaml",
                                                  "falco-sandbox_rules.yaml"))  # fmt: skip
    assert sorted(CURRENT.glob("*.yaml")) == sorted([STABLE, INCUBATING, SANDBOX])


def test_falco_025_loads_with_its_warnings_listed() -> None:
    engine = _engine(FALCO_025)
    rs = _ruleset(engine)
    assert rs.result.errors == []
    assert (len(rs.rules), len(rs.macros), len(rs.lists)) == _counts()["falco-0.25/falco_rules.yaml"]
    codes = Counter(d.code.value for d in rs.result.warnings)
    # Every warning is accounted for: the old dialect's evt.dir and %container.info (deprecated), helper
    # macros and lists no rule uses, and rules that match every event type (inbound/outbound via fd.typechar).
    assert codes == {
        "LOAD_DEPRECATED_ITEM": 32,
        "LOAD_UNUSED_MACRO": 13,
        "LOAD_UNUSED_LIST": 7,
        "LOAD_NO_EVTTYPE": 6,
    }
    deprecated = Counter(
        d.message.split(" ", 1)[0] for d in rs.result.warnings if d.code.value == "LOAD_DEPRECATED_ITEM"
    )
    assert deprecated == {"evt.dir": 18, "%container.info": 14}
    no_evttype = sorted(d.contexts[0].label for d in rs.result.warnings if d.code.value == "LOAD_NO_EVTTYPE")
    assert no_evttype == [
        "rule 'Disallowed SSH Connection'",
        "rule 'Network Connection outside Local Subnet'",
        "rule 'Outbound or Inbound Traffic not to Authorized Server Process and Port'",
        "rule 'System procs network activity'",
        "rule 'Unexpected K8s NodePort Connection'",
        "rule 'Unexpected UDP Traffic'",
    ]
    assert engine.event_types is None  # those rules can match any event type


def test_falco_025_k8s_audit_rules_load_for_the_k8s_audit_source() -> None:
    engine = _engine(FALCO_025_K8S)
    rs = _ruleset(engine)
    assert rs.result.errors == [] and len(rs.rules) == 39
    assert Counter(d.code.value for d in rs.result.warnings)["LOAD_UNKNOWN_SOURCE"] == 0
    assert engine.event_types == frozenset()  # audit rules need no syscall from the sensor


OPEN = {"open", "openat", "openat2"}
EXECVE = {"execve", "execveat"}
# Reference (falco-rules-language.md 5.3, "falco_rules.yaml (stable)"): rule -> event types after macro expansion.
STABLE_EVENT_TYPES: dict[str, set[str]] = {
    "Directory traversal monitored file read": OPEN,
    "Read sensitive file trusted after startup": OPEN,
    "Read sensitive file untrusted": OPEN,
    "Run shell untrusted": EXECVE,
    "System user interactive": EXECVE,
    "Terminal shell in container": EXECVE,
    "Contact K8S API Server From Container": {"connect"},
    "Netcat Remote Code Execution in Container": EXECVE,
    "Search Private Keys or Passwords": EXECVE,
    "Clear Log Activities": OPEN,
    "Remove Bulk Data from Disk": EXECVE,
    "Create Symlink Over Sensitive Files": {"symlink", "symlinkat"},
    "Create Hardlink Over Sensitive Files": {"link", "linkat"},
    "Packet socket created in container": {"socket"},
    "Redirect STDOUT/STDIN to Network Connection in Container": {"dup", "dup2", "dup3"},
    "Linux Kernel Module Injection Detected": {"init_module", "finit_module"},
    "Debugfs Launched in Privileged Container": EXECVE,
    "Detect release_agent File Container Escapes": OPEN,
    "PTRACE attached to process": {"ptrace"},
    "PTRACE anti-debug attempt": {"ptrace"},
    "Find AWS Credentials": EXECVE,
    "Execution from /dev/shm": EXECVE,
    "Drop and execute new binary in container": EXECVE,
    "Disallowed SSH Connection Non Standard Port": {"connect", "sendto", "sendmsg"},
    "Fileless execution via memfd_create": EXECVE,
}
# Reference 5.5: the union for the stable file.
STABLE_UNION = {"connect", "dup", "dup2", "dup3", "execve", "execveat", "finit_module", "init_module", "link",
                "linkat", "open", "openat", "openat2", "ptrace", "sendmsg", "sendto", "socket", "symlink",
                "symlinkat"}  # fmt: skip


def test_stable_rules_event_types_match_the_reference() -> None:
    engine = _engine(STABLE)
    got = {r.name: r.types for r in engine.rules}
    assert set(got) == set(STABLE_EVENT_TYPES)
    for name, want in STABLE_EVENT_TYPES.items():
        assert not got[name].cofinite, name
        assert set(got[name].names) == want, name
    assert engine.event_types == frozenset(STABLE_UNION)
    # Rules are indexed by event type: an openat runs only the open rules, a read runs nothing.
    assert {r.name for r in engine.candidates("openat")} == {
        n for n, t in STABLE_EVENT_TYPES.items() if "openat" in t
    }
    assert engine.candidates("read") == ()
