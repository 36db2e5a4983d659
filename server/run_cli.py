"""`falconet run` (the daemon) and `falconet install` (the config under /etc/falconet, the systemd unit).

Heavy imports (bcc, grpc, the engine) happen inside the functions, so `falconet --help` stays fast.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

RUN_EPILOG = """\
examples:
  falconet run
      the eBPF sensor with /etc/falconet/falconet.yaml (as root); alerts on stdout and over gRPC
  falconet run -c ./falconet.yaml -r ./my_rules.yaml -r ./rules.d
      another config; -r replaces the config's rules_files (files or directories, loaded in order)
  falconet run -c ./falconet.yaml --source replay:capture.jsonl
      replay a capture (from `falconet capture`) through the same engine and outputs, without root
  falconet run -o webserver.listen_address=0.0.0.0 -o rules_files[]=/etc/falconet/extra.yaml
      Falco's -o KEY=VALUE: set one config key (dots for nesting, [N] or [] for lists; the value is YAML)
  falconet run -c ./falconet.yaml --source none
      only the Kubernetes audit endpoint (webserver.k8s_audit_endpoint in the config), without root
  falconet run -c ./falconet.yaml --source ptrace -- /usr/sbin/nginx -g 'daemon off;'
      no eBPF, no root: launch the workload under the ptrace driver (Falco's pdig pattern); Falconet exits
      with it, and it ends with Falconet
  falconet run -c ./falconet.yaml --source ptrace --pid 1234 --pid 1240
      attach to running processes and their future children (needs CAP_SYS_PTRACE unless they are yours
      and kernel.yama.ptrace_scope is 0)
  kill -HUP $(pidof -x falconet)
      reload config, rules and certificates; open streams and alert sequence numbers carry on
then subscribe:
  falco-client subscribe --output json

ptrace driver limits (docs/ptrace.md):
  - only the traced workload and its descendants are seen, no other process on the host;
  - a process already being traced (a debugger, strace) cannot be attached;
  - --pid cannot put a seccomp filter into a running process: every one of its syscalls stops (slow);
  - a launched workload runs with no_new_privs: set-uid/set-gid bits and file capabilities do not raise
    its privileges (sudo, ping with file capabilities stop working);
  - the workload ends with Falconet: on SIGTERM it gets SIGTERM, then SIGKILL 2 s later; if Falconet is
    SIGKILLed or crashes the kernel kills it at once (PTRACE_O_EXITKILL). It cannot run on untraced: its
    filter makes the traced syscalls fail with ENOSYS once no tracer is attached;
  - the tracer's stop thread follows the workload's CPU (pins itself there) and wakes a workload thread on
    that CPU by narrowing its affinity for the wake-up only; sched_getaffinity/sched_setaffinity stop so the
    workload never sees it; FALCONET_PTRACE_PLACEMENT=0 turns this off (docs/ptrace.md);
  - an eBPF Falconet or Falco on the same host sees this driver's ptrace(2) calls: its PTRACE_SEIZE of the
    workload (once per launch, once per thread with --pid) raises "PTRACE attached to process"; exclude
    it with Falco's list known_ptrace_binaries (items: [falconet], the proc.name of this process) or, with
    Falconet's default rules, by appending the tracer to the known_debugger macro.
"""

INSTALL_EPILOG = """\
examples:
  falconet install
      /etc/falconet/falconet.yaml (kept if present), falconet_rules.yaml (refreshed), rules.d/
  falconet install --dir /tmp/falconet --systemd-dir /etc/systemd/system
      also writes falconet.service there (then: systemctl daemon-reload && systemctl enable --now falconet)
"""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "run",
        help="run the daemon: eBPF sensor -> rules -> gRPC subscribers and outputs",
        description="Watch the kernel with eBPF, evaluate the rules and send alerts to every output and subscriber.",
        epilog=RUN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-c", "--config", type=Path, default=None,
                   help="configuration file (default: /etc/falconet/falconet.yaml)")
    p.add_argument("-r", "--rules", type=Path, action="append", default=[], metavar="RULES",
                   help="rules file or directory; repeatable; replaces the config's rules_files")
    p.add_argument("--source", default=None, metavar="ebpf|ptrace|replay:FILE|none",
                   help="where syscall events come from (default: the config's engine.kind, else ebpf, which needs "
                        "root; ptrace: trace `-- COMMAND` or --pid without eBPF or root; replay:FILE also reads "
                        "Kubernetes audit events; none: only the k8s audit endpoint)")
    p.add_argument("--pid", type=int, action="append", default=[], metavar="PID",
                   help="with --source ptrace: attach to this running process and its future children; repeatable")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="-- COMMAND [ARGS...]",
                   help="with --source ptrace: the workload to launch and trace")
    p.add_argument("--store", type=Path, default=None, metavar="FILE",
                   help="persistent alert store (overrides the config's alert_store.path; the packaged config "
                   "uses /var/lib/falconet/alerts.db)")
    p.add_argument("--no-store", action="store_true",
                   help="keep alerts in memory only (no persistent store)")
    p.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, as Falco's -o (e.g. webserver.listen_port=8765); repeatable; "
                   "kept across SIGHUP reloads")
    p.set_defaults(func=_run)

    i = sub.add_parser(
        "install",
        help="install the default config and rules under /etc/falconet (and the systemd unit)",
        description="Put the default configuration, the default rules and an empty rules.d in place.",
        epilog=INSTALL_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    i.add_argument("--dir", type=Path, default=Path("/etc/falconet"), help="config directory (default: %(default)s)")
    i.add_argument("--systemd-dir", type=Path, default=None, help="also write falconet.service into this directory")
    i.add_argument("--force", action="store_true", help="overwrite an existing falconet.yaml")
    i.set_defaults(func=_install)


def _run(args: argparse.Namespace) -> int:
    from falconet.server.daemon import Daemon
    from falconet.server.daemon_config import DEFAULT_CONFIG_PATH, ConfigError, load_config
    from falconet.server.overrides import OverrideError, parse_all

    path: Path = args.config or DEFAULT_CONFIG_PATH
    if args.config is None and not path.exists():
        print(
            f"falconet run: no configuration at {path}; run `falconet install` to put the default there, "
            "or pass -c FILE",
            file=sys.stderr,
        )
        return 1
    try:
        overrides = parse_all(args.option)
        config = load_config(path, overrides)
        if args.rules:
            config = config.with_rules(args.rules)
        if args.store is not None or args.no_store:
            store: Path | None = None if args.no_store else Path(args.store).absolute()
            config = dataclasses.replace(config, alert_store=dataclasses.replace(config.alert_store, path=store))
    except (ConfigError, OverrideError) as exc:
        print(f"falconet run: {exc}", file=sys.stderr)
        return 1
    try:
        source = source_spec(args.source or config.engine_source or "ebpf", args.pid, args.command)
    except ValueError as exc:
        print(f"falconet run: {exc}", file=sys.stderr)
        return 2
    daemon = Daemon(config, source=source, config_path=path, rules_override=args.rules, overrides=overrides)
    return daemon.run()


def source_spec(source: str, pids: list[int], command: list[str]) -> str:
    """The --source text the daemon's registry reads: the ptrace driver's workload goes into its argument
    (`ptrace:exec=JSON-LIST` or `ptrace:pid=N,M`); a workload with any other source is refused."""
    if command and command[0] == "--":
        command = command[1:]
    if source != "ptrace":
        if pids or command:
            raise ValueError(f"--pid and -- COMMAND go with --source ptrace, not --source {source}")
        return source
    if pids and command:
        raise ValueError("--source ptrace takes either -- COMMAND or --pid, not both")
    if command:
        resolved = shutil.which(command[0]) if "/" not in command[0] else command[0]
        if resolved is None:
            raise ValueError(f"{command[0]!r}: command not found")
        return "ptrace:exec=" + json.dumps([resolved, *command[1:]])
    if pids:
        return "ptrace:pid=" + ",".join(str(p) for p in pids)
    raise ValueError("--source ptrace needs a workload: -- COMMAND [ARGS...] or --pid PID")


def install(directory: Path, *, systemd_dir: Path | None = None, force: bool = False) -> list[Path]:
    """Writes the default config (unless present), the default rules and rules.d; returns what was written."""
    from falconet.rules import DEFAULT_RULES
    from falconet.server.daemon_config import PACKAGED_CONFIG

    written: list[Path] = []
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "rules.d").mkdir(exist_ok=True)
    config = directory / "falconet.yaml"
    if force or not config.exists():
        shutil.copyfile(PACKAGED_CONFIG, config)
        written.append(config)
    # The default rules belong to the package and are refreshed on every install, as Falco's packages do;
    # local rules go in rules.d, which is never touched.
    rules = directory / "falconet_rules.yaml"
    shutil.copyfile(DEFAULT_RULES, rules)
    written.append(rules)
    if systemd_dir is not None:
        unit = Path(__file__).with_name("falconet.service").read_text(encoding="utf-8")
        exe = shutil.which("falconet") or str(Path(sys.executable).with_name("falconet"))
        unit = unit.replace("/usr/local/bin/falconet", os.path.abspath(exe))
        unit = unit.replace("/etc/falconet/", f"{directory.resolve()}/")
        systemd_dir.mkdir(parents=True, exist_ok=True)
        target = systemd_dir / "falconet.service"
        target.write_text(unit, encoding="utf-8")
        written.append(target)
    return written


def _install(args: argparse.Namespace) -> int:
    try:
        written = install(args.dir, systemd_dir=args.systemd_dir, force=args.force)
    except OSError as exc:
        print(f"falconet install: {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {path}")
    return 0
