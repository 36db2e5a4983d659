"""The engine is pure: it imports and runs with bcc and grpc (and asyncio) made unimportable."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from resources import shared_path

_SCRIPT = textwrap.dedent(
    """
    import sys

    class Blocker:
        BLOCKED = ("bcc", "grpc", "grpcio", "asyncio", "google.protobuf")

        def find_spec(self, name, path=None, target=None):
            if any(name == b or name.startswith(b + ".") for b in self.BLOCKED):
                raise ImportError(f"blocked: {name}")
            return None

    sys.meta_path.insert(0, Blocker())
    for mod in list(sys.modules):
        if mod.split(".")[0] in ("bcc", "grpc", "asyncio"):
            del sys.modules[mod]

    from falconet.rules.engine import Engine, Resolvers
    from falconet.model.event import Event, Process

    engine = Engine.from_files([sys.argv[1]], resolvers=Resolvers(lambda: "h", lambda d: []))
    proc = Process(pid=2, name="shred", exe="shred", exepath="/usr/bin/shred", args=["-u", "x"],
                   parent=Process(pid=1, name="bash"))
    alerts = engine.process(Event(num=1, ts=1, type="execve", tid=2, res=0, proc=proc))
    assert [a.rule for a in alerts] == ["Remove Bulk Data from Disk"], alerts
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("bcc", "grpc", "asyncio"))
    assert not leaked, leaked
    print("ok", len(engine.rules))
    """
)


@pytest.mark.upstream
def test_engine_imports_and_runs_without_bcc_and_grpc() -> None:
    stable = shared_path("upstream-rules", "current", "falco_rules.yaml")
    out = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(stable)], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok 25"


def test_the_blocker_really_blocks() -> None:
    """The same blocker makes an import of grpc fail, so the test above cannot pass by accident."""
    script = _SCRIPT.split("from falconet")[0] + "import grpc\n"
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode != 0 and "blocked: grpc" in out.stderr
