"""Falco's `engine` block: which driver the daemon reads syscalls from when --source does not say.

`engine.kind` is Falco's key: `ebpf` and `modern_ebpf` select the eBPF sensor, `ptrace` the user-space tracer
(the workload still comes from the command line: `-- COMMAND` or `--pid`), `replay` a capture named by
`engine.replay.capture_file`, `nodriver` no syscall source (Falconet's `none`). Falco's `kmod` and `gvisor`
have no Falconet driver and are refused. The other sub-blocks (Falco's per-driver settings) are ignored.
"""

from __future__ import annotations

from falconet.server.config_values import Problems, show

KINDS = {"ebpf": "ebpf", "modern_ebpf": "ebpf", "ptrace": "ptrace", "replay": "replay", "nodriver": "none"}


def read_engine(section: object, problems: Problems) -> str | None:
    """The --source spelling engine.kind selects (`replay:FILE` with the capture file), None when absent."""
    if section is None:
        return None
    if not isinstance(section, dict):
        problems.add(f"engine must be a mapping (kind: ebpf, ptrace, replay, ...), got {show(section)}.")
        return None
    kind = section.get("kind")
    if kind is None:
        return None
    if not isinstance(kind, str) or kind not in KINDS:
        problems.add(f"engine.kind must be one of {', '.join(sorted(KINDS))}, got {show(kind)}.")
        return None
    if kind != "replay":
        return KINDS[kind]
    replay = section.get("replay")
    capture = replay.get("capture_file") if isinstance(replay, dict) else None
    if not isinstance(capture, str) or not capture:
        problems.add("engine.kind replay needs engine.replay.capture_file (a capture from `falconet capture`).")
        return None
    return f"replay:{problems.resolve(capture)}"
