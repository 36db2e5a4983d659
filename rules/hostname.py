"""The host name alerts carry, decided in one place for every stage that stamps or reports it.

Falco's rule: FALCO_HOSTNAME when set (containers and test harnesses set it), else the machine's host name. The
engine's `Resolvers.local()`, the hub (alerts published without one) and the daemon all ask here, so a change
to the rule reaches all three. It reads the environment and the kernel's host name only: no network, so the
engine stays free of I/O.
"""

from __future__ import annotations

import os
import socket

ENV_VAR = "FALCO_HOSTNAME"


def default_hostname() -> str:
    """FALCO_HOSTNAME when set and non-empty, else `socket.gethostname()`."""
    return os.environ.get(ENV_VAR) or socket.gethostname()
