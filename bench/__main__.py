"""Runs every benchmark module in bench/ (`python -m bench`), each in its own process so that one's threads,
event loops or kernel state cannot skew another's figures. Extra arguments are passed to every module."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path


def modules() -> list[str]:
    here = Path(__file__).parent
    return sorted(m.name for m in pkgutil.iter_modules([str(here)]) if not m.name.startswith("_"))


def main(argv: list[str]) -> int:
    failed = []
    for name in modules():
        print(f"== bench.{name}", flush=True)
        code = subprocess.call([sys.executable, "-m", f"bench.{name}", *argv])
        if code != 0:
            failed.append(f"bench.{name} (exit {code})")
    if failed:
        print("failed: " + ", ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
