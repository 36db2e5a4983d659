"""Deadlines for what a test must see happen "within N seconds" on a live path, scaled to how busy the machine is.

Such a figure (the issue's own, e.g. the web console's one second) holds on a machine with a core to spare; on
a shared 2-core machine at load 20 every process gets a tenth of a core, and the same work takes ten times as
long without anything being wrong. `scaled` keeps the figure where the machine is quiet and stretches it by
the run queue per core where it is not, so a failure still means the path is slow, not that the host was busy.
Speed itself is measured in bench/, never here.
"""

from __future__ import annotations

import os


def load_factor() -> float:
    """Runnable tasks per core over the last minute, at least 1."""
    return max(1.0, os.getloadavg()[0] / (os.cpu_count() or 1))


def scaled(seconds: float) -> float:
    """`seconds` on a quiet machine; proportionally more while the run queue is longer than the cores."""
    return seconds * load_factor()
