"""The engine's DNS cache: one per Resolvers object, bounded, and nothing kept in a module global, so a daemon
that reloads its rules a thousand times does not keep a thousand caches."""

from __future__ import annotations

import gc
import weakref

from falconet.model.event import Event, Fd, Process
from falconet.rules.engine import Engine, Resolvers
from falconet.rules.fields import DnsCache, dns

RULE = """
- rule: Miner pool
  desc: d
  condition: evt.type = connect and fd.sip.name = pool.example.com
  output: "to %fd.sip.name"
  priority: WARNING
"""


def _connect(sip: str) -> Event:
    fd = Fd(num=3, type="ipv4", cip="10.0.0.5", cport=40000, sip=sip, sport=443)
    return Event(num=1, ts=1, type="connect", tid=7, res=0, proc=Process(pid=7, name="curl"), fd=fd)


def test_each_resolvers_owns_its_cache_and_rules_share_it() -> None:
    calls: list[str] = []

    def lookup(name: str) -> list[str]:
        calls.append(name)
        return ["192.0.2.7"] if name == "pool.example.com" else []

    res = Resolvers(hostname=lambda: "h", dns=lookup)
    engine = Engine.from_texts([("r.yaml", RULE + RULE.replace("Miner pool", "Miner pool 2"))], resolvers=res)
    assert calls == ["pool.example.com"]  # two rules naming the domain: one lookup at load time
    alerts = engine.process(_connect("192.0.2.7"))
    assert [a.output for a in alerts] == ["to pool.example.com"]
    assert calls == ["pool.example.com"]  # within the TTL the cache answers
    assert len(res.dns_cache) == 1
    other = Resolvers(hostname=lambda: "h", dns=lookup)
    assert other.dns_cache is not res.dns_cache


def test_a_dropped_engine_drops_its_cache() -> None:
    """A reload builds new resolvers; the old cache must be collectable with the old engine."""
    res = Resolvers(hostname=lambda: "h", dns=lambda _n: ["192.0.2.7"])
    engine = Engine.from_texts([("r.yaml", RULE)], resolvers=res)
    ref = weakref.ref(res.dns_cache)
    del engine, res
    gc.collect()
    assert ref() is None
    module_state = [
        n for n, v in vars(dns).items() if not n.startswith("__") and isinstance(v, dict | list | set)
    ]
    assert not module_state


def test_the_cache_is_bounded() -> None:
    cache = DnsCache(lambda _n: ["192.0.2.1"], max_domains=3)
    for i in range(10):
        cache.addresses(f"host{i}.example.com")
    assert len(cache) == 3
    assert cache.name_of("192.0.2.1") == "host7.example.com"  # the oldest answers went first


def test_a_failing_resolver_keeps_the_last_answer() -> None:
    answers: list[list[str] | None] = [["192.0.2.9"], None]

    def flaky(_name: str) -> list[str]:
        answer = answers.pop(0)
        if answer is None:
            raise OSError("no network")
        return answer

    cache = DnsCache(flaky, ttl=0.0)
    assert cache.addresses("a.example.com") == frozenset({"192.0.2.9"})
    assert cache.addresses("a.example.com") == frozenset({"192.0.2.9"})
