"""Falconet's rule engine: Falco's rules language over enriched events, producing alerts.

The engine is pure: events in, alerts out. It imports nothing from grpc, bcc or asyncio, so it can be tested
with plain data, replayed deterministically and benchmarked alone.
"""

from pathlib import Path as _Path

DEFAULT_RULES: _Path = _Path(__file__).with_name("falconet_rules.yaml")
"""Falconet's default rules file (package data): `falconet run` loads it unless told otherwise."""
