"""Builds the Go and Rust examples and Falco's Go client probe, and runs them as separate processes.

Builds go into in-tree, gitignored directories (.tools/sdk-bin for Go, sdk/rust/target for cargo) so that a
second `make test` reuses them; a cold build on a fresh machine happens here (or in `make sdk-build`).
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from falconet.model.text import json_safe
from falconet.model.alert import Alert, Cursor, Priority

REPO = Path(__file__).resolve().parents[2]
BIN_DIR = REPO / ".tools" / "sdk-bin"
VECTORS: dict[str, Any] = json.loads(
    (REPO / "sdk/python/testdata/alert_vectors.json").read_text(encoding="utf-8")
)


def tool_env() -> dict[str, str]:
    """The environment with Go and cargo on PATH, as the Makefile sets it."""
    env = dict(os.environ)
    home = Path(env.get("HOME", "/root"))
    env["PATH"] = os.pathsep.join([str(home / ".cargo/bin"), "/usr/local/go/bin", env.get("PATH", "")])
    return env


def _run_build(cmd: list[str], cwd: Path) -> None:
    proc = subprocess.run(cmd, cwd=cwd, env=tool_env(), capture_output=True, text=True, timeout=1500)
    if proc.returncode != 0:
        raise RuntimeError(f"build failed: {' '.join(cmd)} (in {cwd})\n{proc.stdout}\n{proc.stderr}")


def build_go_example() -> Path:
    out = BIN_DIR / "falconet-subscribe"
    _run_build(
        ["go", "build", "-buildvcs=false", "-o", str(out), "./cmd/falconet-subscribe"], REPO / "sdk/go"
    )
    return out


def build_clientgo_probe() -> Path:
    out = BIN_DIR / "clientgo-probe"
    _run_build(["go", "build", "-buildvcs=false", "-o", str(out), "."], REPO / "tests/sdk_multilang/clientgo")
    return out


def build_rust_example() -> Path:
    _run_build(["cargo", "build", "--release", "--locked", "--bin", "subscribe"], REPO / "sdk/rust")
    return REPO / "sdk/rust/target/release/subscribe"


@dataclass(frozen=True)
class Expected:
    """An alert to publish and the exact line a client must print for it once published."""

    alert: Alert
    line_template: str  # the vector's canonical line, cursor to be filled in

    def line(self, cursor: Cursor, hub_hostname: str) -> str:
        doc = json.loads(self.line_template)
        # The hub stamps its own host name on alerts that carry none, as Falco does.
        doc["hostname"] = doc["hostname"] or hub_hostname
        doc["cursor"] = {"epoch": cursor.epoch, "sequence": cursor.sequence}
        return json_safe(json.dumps(doc, separators=(",", ":"), ensure_ascii=False))


def vector_alerts() -> list[Expected]:
    """Every vector's alert, plus copies of the first at each priority no vector has (so all eight appear)."""
    out: list[Expected] = []
    for vec in VECTORS["vectors"]:
        a = vec["alert"]
        alert = Alert(
            time_ns=a["time_ns"],
            rule=a["rule"],
            priority=Priority(a["priority"]),
            source=a["source"],
            output=a["output"],
            output_fields=dict(a["output_fields"]),
            tags=list(a["tags"]),
            hostname=a["hostname"],
        )
        out.append(Expected(alert, vec["line"]))
    seen = {e.alert.priority for e in out}
    base = out[0]
    for prio in Priority:
        if prio in seen:
            continue
        alert = Alert(
            time_ns=base.alert.time_ns + int(prio),
            rule=f"{base.alert.rule} ({prio.falco_name})",
            priority=prio,
            source=base.alert.source,
            output=base.alert.output,
            output_fields=dict(base.alert.output_fields),
            tags=list(base.alert.tags),
            hostname=base.alert.hostname,
        )
        doc = json.loads(base.line_template)
        doc.update(alert.to_json_dict())
        doc["output_fields"] = dict(sorted(doc["output_fields"].items()))
        out.append(Expected(alert, json_safe(json.dumps(doc, separators=(",", ":"), ensure_ascii=False))))
    return out


def canonical(line: str) -> str:
    """A JSON text with every object's keys sorted: the comparison the issue asks for."""
    return json.dumps(json.loads(line), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
