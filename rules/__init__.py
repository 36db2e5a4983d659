"""Falconet's rule engine: Falco's rules language over enriched events, producing alerts.

The engine is pure: events in, alerts out. It imports nothing from grpc, bcc or asyncio, so it can be tested
with plain data, replayed deterministically and benchmarked alone.
"""
