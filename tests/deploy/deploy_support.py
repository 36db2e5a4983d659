"""The chart under test: helm (pinned, .tools/bin, from `make helm-tools`), rendering with a given set of
values, and the strict decoder (tests/deploy/k8sdecode, built like the other Go probes into .tools/sdk-bin)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from resources import missing

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy/helm/falconet"
HELM = REPO / ".tools/bin/helm"
DECODER_SRC = REPO / "tests/deploy/k8sdecode"
DECODER = REPO / ".tools/sdk-bin/k8sdecode"
KUBE_VERSION = "1.36.0"
"""The Kubernetes release of the pinned k8s.io/api module (v0.36.2) the decoder checks against."""
RELEASE, NAMESPACE = "fleet", "security"


NATS_SERVER = REPO / ".tools/bin/nats-server"
"""The pinned nats-server (`make nats-tools`), the version the chart's deployed NATS runs and tests/fleet test."""


def nats_server() -> Path:
    if not NATS_SERVER.exists():
        missing(f"{NATS_SERVER} is absent: `make nats-tools` builds the pinned nats-server")
    return NATS_SERVER


def helm() -> Path:
    if not HELM.exists():
        missing(f"{HELM} is absent: `make helm-tools` installs the pinned helm")
    return HELM


def decoder() -> Path:
    """The decoder binary, built when absent or older than its source (a Go toolchain is then needed)."""
    newest = max(p.stat().st_mtime for p in DECODER_SRC.iterdir())
    if not DECODER.exists() or DECODER.stat().st_mtime < newest:
        go = shutil.which("go") or "/usr/local/go/bin/go"
        if not Path(go).exists():
            missing("the Go toolchain is absent: it builds tests/deploy/k8sdecode")
        DECODER.parent.mkdir(parents=True, exist_ok=True)
        done = subprocess.run([go, "build", "-buildvcs=false", "-o", str(DECODER), "."], cwd=DECODER_SRC,
                              capture_output=True, text=True, timeout=1500, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"building k8sdecode failed:\n{done.stdout}\n{done.stderr}")
    return DECODER


def run(cmd: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=120, check=False,
                          env=dict(os.environ, HELM_CACHE_HOME="/tmp/falconet-helm-cache",
                                   HELM_CONFIG_HOME="/tmp/falconet-helm-config"))


def values_file(tmp: Path, values: dict[str, Any]) -> Path:
    path = tmp / "values.json"  # JSON is YAML: helm reads it as a values file
    path.write_text(json.dumps(values))
    return path


def lint(tmp: Path, values: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return run([str(helm()), "lint", str(CHART), "--strict", "--kube-version", KUBE_VERSION, "-f",
                str(values_file(tmp, values))])


def template_text(tmp: Path, values: dict[str, Any]) -> str:
    done = run([str(helm()), "template", RELEASE, str(CHART), "-n", NAMESPACE, "--kube-version", KUBE_VERSION,
                "-f", str(values_file(tmp, values))])
    if done.returncode != 0:
        raise AssertionError(f"helm template failed:\n{done.stderr}")
    return done.stdout


@dataclass(frozen=True)
class Rendered:
    text: str
    objects: list[dict[str, Any]]

    def find(self, kind: str, name: str | None = None) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]

    def one(self, kind: str, name: str) -> dict[str, Any]:
        found = self.find(kind, name)
        assert len(found) == 1, f"expected one {kind} {name}, got {len(found)}: {[o['kind'] for o in self.objects]}"
        return found[0]


def render(tmp: Path, values: dict[str, Any]) -> Rendered:
    text = template_text(tmp, values)
    return Rendered(text, [o for o in yaml.safe_load_all(text) if o])


def decode(text: str) -> subprocess.CompletedProcess[str]:
    return run([str(decoder())], stdin=text)
