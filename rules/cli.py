"""Placeholder: registers nothing until this area's subcommands land."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    del sub


_ = argparse
