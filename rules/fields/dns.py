"""The engine's DNS cache: domain names in rules (`fd.sip.name = example.com`) against the addresses of events.

There is exactly one cache per `Resolvers` object (the engine's `Resolvers` builds it), so every rule of an
engine shares the lookups and a reload, which builds new resolvers, drops the old cache with the old engine:
nothing here is a module global. The daemon injects a plain resolver (one `getaddrinfo` per call); this cache
decides how often it is called.
"""

from __future__ import annotations

import ipaddress
import time as _time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .registry import Extractor, ResolversLike, ip_of

if TYPE_CHECKING:
    from falconet.model.event import Event

DEFAULT_TTL = 10.0
"""Seconds a successful answer is reused (Falco refreshes from 10 s)."""
MAX_TTL = 320.0
"""The longest back-off after failed or empty answers (Falco's 320 s)."""
MAX_DOMAINS = 4096
"""Domains kept at most; the oldest answer goes first. Rules name a handful, so this only bounds a mistake."""


class DnsCache:
    """Domain -> addresses through the injected resolver, kept for `ttl` seconds; a failed or empty answer is
    retried after a backoff that doubles up to `max_ttl`, so a host without DNS does not pay a lookup per
    event. The resolver is called on the evaluating thread, at most once per domain per `ttl`. Also answers
    the reverse question for outputs, among the domains that rules name, which is what Falco's fd.sip.name
    prints."""

    def __init__(
        self,
        dns: Callable[[str], list[str]],
        ttl: float = DEFAULT_TTL,
        max_ttl: float = MAX_TTL,
        max_domains: int = MAX_DOMAINS,
    ) -> None:
        self._dns = dns
        self._ttl = ttl
        self._max_ttl = max(max_ttl, ttl)
        self._max_domains = max_domains
        # domain -> (time of the answer, seconds it stays valid, addresses)
        self._entries: dict[str, tuple[float, float, frozenset[str]]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def addresses(self, domain: str) -> frozenset[str]:
        now = _time.monotonic()
        hit = self._entries.get(domain)
        if hit is not None and now - hit[0] < hit[1]:
            return hit[2]
        try:
            found = frozenset(str(ipaddress.ip_address(a)) for a in self._dns(domain))
            ok = bool(found)
        except Exception:  # a resolver failure keeps the last answer: a DNS outage must not stop the engine
            found, ok = (hit[2] if hit is not None else frozenset()), False
        if ok:
            valid = self._ttl
        else:
            valid = min(self._max_ttl, (hit[1] * 2) if hit is not None else self._ttl)
        if hit is None and len(self._entries) >= self._max_domains:
            del self._entries[next(iter(self._entries))]
        self._entries[domain] = (now, valid, found)
        return found

    def name_of(self, address: str) -> str | None:
        for domain in list(self._entries):
            if address in self.addresses(domain):
                return domain
        return None


def dns_literal_matcher(resolvers: ResolversLike | None) -> Callable[[str], Callable[[Any], bool]]:
    def make(text: str) -> Callable[[Any], bool]:
        domain = text.strip()
        if ip_of(domain) is not None:  # an address written as the "name" matches itself
            want = str(ip_of(domain))
            return lambda value: value is not None and str(value) == want
        if resolvers is None:
            return lambda _value: False
        cache = resolvers.dns_cache
        cache.addresses(domain)  # resolve at load time, as Falco does

        def match(value: Any) -> bool:
            return value is not None and str(value) in cache.addresses(domain)

        return match

    return make


def dns_output(resolvers: ResolversLike | None, address_of: Extractor) -> Extractor:
    def out(event: Event) -> str | None:
        addr = address_of(event)
        if addr is None or resolvers is None:
            return None
        return resolvers.dns_cache.name_of(str(addr))

    return out
