"""SDK clients' receive rate: alerts/s the Go, Rust and Python clients take from one mTLS stream.

One server (in this process, its own event loop thread, as in the daemon) holds a backlog of N typical alerts.
Each client runs as a separate process and reads the backlog from the oldest alert, once over Falco's `sub`
(one alert per message) and once over Falconet's batched stream; it reports the time from its first alert to
its N-th, so process start-up and connection set-up are not counted. The Go and Rust figures are the example
binaries (sdk/go/cmd/falconet-subscribe, sdk/rust `subscribe`) with `--output none`, so they decode every alert
into the SDK's Alert type but print nothing; the Python figure is `falconet.sdk.Client.subscribe` doing the
same, and is the baseline of the ratios.

Run: python -m bench.sdk_clients [--alerts N] [--quick]. Builds the examples first if needed (cached).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.server_throughput import LoopThread, make_alert
from falconet.certs import init_certs
from falconet.server.app import AlertServer
from falconet.server.config import ServerConfig

REPO = Path(__file__).resolve().parents[1]

# The Python client, in its own process like the others: first-to-N-th alert, as the examples measure it.
_PY_CLIENT = """
import sys, time
from falconet.sdk import Client
host, port, certs, n, batched = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5] == "1"
with Client(host=host, port=port, ca=f"{certs}/ca.crt", cert=f"{certs}/client.crt", key=f"{certs}/client.key",
            server_name="localhost") as c:
    got, first = 0, 0.0
    for _ in c.subscribe(start="oldest", batched=batched):
        if got == 0:
            first = time.perf_counter()
        got += 1
        if got == n:
            break
    print(f"received {got} alerts in {time.perf_counter() - first:.6f} s", file=sys.stderr)
"""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path.home() / ".cargo/bin"), "/usr/local/go/bin", env.get("PATH", "")])
    return env


def build() -> dict[str, Path]:
    """The Go and Rust examples, built (or found up to date) in the same cached places the tests use."""
    go = REPO / ".tools/sdk-bin/falconet-subscribe"
    subprocess.run(
        ["go", "build", "-buildvcs=false", "-o", str(go), "./cmd/falconet-subscribe"],
        cwd=REPO / "sdk/go",
        env=_env(),
        check=True,
    )
    subprocess.run(
        ["cargo", "build", "--release", "--locked", "--quiet", "--bin", "subscribe"],
        cwd=REPO / "sdk/rust",
        env=_env(),
        check=True,
    )
    return {"go": go, "rust": REPO / "sdk/rust/target/release/subscribe"}


def measure(cmd: list[str], n: int) -> float:
    """Runs a client process; returns alerts/s from its first alert to its n-th."""
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=_env())
    m = re.search(r"received (\d+) alerts in ([0-9.]+) s", proc.stderr)
    if proc.returncode != 0 or m is None or int(m.group(1)) != n:
        raise RuntimeError(f"client failed: {' '.join(cmd)}\n{proc.stderr}")
    return (n - 1) / float(m.group(2))


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--alerts", type=int, default=100_000, help="backlog size (default 100000)")
    ap.add_argument("--quick", action="store_true", help="20000 alerts, for a fast look")
    args = ap.parse_args(argv)
    n = 20_000 if args.quick else args.alerts
    binaries = build()

    work = Path(tempfile.mkdtemp(prefix="fn-bench-sdk-"))
    certs = work / "certs"
    init_certs(certs)
    loop = LoopThread()
    config = ServerConfig.with_certs_dir(
        certs, listen=(f"unix://{work / 's.sock'}", "127.0.0.1:0"), retention=n, hostname="bench-host"
    )
    server = AlertServer(config)
    bound = loop.run(server.start())
    port = int(bound[1].rpartition(":")[2])
    try:
        for i in range(n):
            server.hub.publish(make_alert(i))
        tls = [
            "--addr",
            f"127.0.0.1:{port}",
            "--ca",
            str(certs / "ca.crt"),
            "--cert",
            str(certs / "client.crt"),
        ]
        tls += ["--key", str(certs / "client.key"), "--server-name", "localhost"]
        # One untimed read first: the hub caches each alert's wire form on first use, which no client should pay.
        measure(
            [str(binaries["go"]), *tls, "--from", "oldest", "--count", str(n), "--output", "none", "--stats"],
            n,
        )
        print(f"{n} alerts (about 600 bytes each on the wire), one mTLS stream, first-to-last alert rate")
        print(f"{'stream':<10}{'client':<8}{'alerts/s':>12}{'x python':>10}")
        for stream in ("sub", "batched"):
            flag = ["--batched"] if stream == "batched" else []
            py_cmd = [sys.executable, "-c", _PY_CLIENT, "127.0.0.1", str(port), str(certs), str(n)]
            py = measure([*py_cmd, "1" if flag else "0"], n)
            rates = {"python": py}
            for lang, binary in binaries.items():
                cmd = [
                    str(binary),
                    *tls,
                    "--from",
                    "oldest",
                    "--count",
                    str(n),
                    "--output",
                    "none",
                    "--stats",
                ]
                rates[lang] = measure(cmd + flag, n)
            for lang, rate in rates.items():
                print(f"{stream:<10}{lang:<8}{rate:>12,.0f}{rate / py:>9.2f}x", flush=True)
    finally:
        loop.run(server.stop(0.5))
        loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
