"""Literal conversion: a condition's right-hand side, converted once at load time to what checks compare
with (numbers, addresses and networks, byte strings, compiled globs and regexes, path-prefix tables), with
an error that points at the literal when it does not fit the field's kind."""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from .errors import CompileError, Msg
from .parser import Check, ListLiteral, Literal


def _to_num(text: str, field: str, offset: int) -> int | float:
    t = text.strip()
    try:
        if t.lower().startswith(("0x", "-0x", "+0x")):
            return int(t, 16)
        return int(t)
    except ValueError:
        pass
    try:
        return float(t)
    except ValueError:
        raise CompileError(Msg.BAD_NUMBER.format(value=text, field=field), offset) from None


def _to_bool(text: str, field: str, offset: int) -> bool:
    t = text.strip().lower()
    if t in ("true", "1"):
        return True
    if t in ("false", "0"):
        return False
    raise CompileError(Msg.BAD_BOOL.format(value=text, field=field), offset)


def _to_net(text: str, field: str, offset: int) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise CompileError(Msg.BAD_NET.format(value=text, field=field), offset) from None


def _to_hex(text: str, op: str, offset: int) -> bytes:
    try:
        return bytes.fromhex(text.strip())
    except ValueError:
        raise CompileError(Msg.BAD_HEX.format(value=text, op=op), offset) from None


@lru_cache(maxsize=4096)
def ip_value(value: Any) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An extracted address as an ipaddress object (extractors may hand over text); None if unparsable."""
    if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return value
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        return None


def convert(kind: str, lit: Literal, field: str, op: str) -> Any:
    """A literal in the field's kind (for equality, ordering and sets)."""
    if kind == "num":
        return _to_num(lit.text, field, lit.offset)
    if kind == "bool":
        return _to_bool(lit.text, field, lit.offset)
    if kind in ("ip", "net"):
        return _to_net(lit.text, field, lit.offset)
    if kind == "buf":
        return _to_hex(lit.text, op, lit.offset) if op.startswith("b") else lit.text.encode()
    return lit.text


def glob_re(pattern: str, ignore_case: bool) -> re.Pattern[str]:
    # fnmatch(3) without FNM_PATHNAME: '*' also matches '/', as in libsinsp's glob.
    return re.compile(fnmatch.translate(pattern), re.IGNORECASE | re.DOTALL if ignore_case else re.DOTALL)


class PathPrefixes:
    """pmatch: does a path equal, or lie below, one of the prefixes? Component-wise, globs per component."""

    _MEMO_MAX = 4096

    def __init__(self, prefixes: Iterable[str]) -> None:
        # path -> answer: the answer depends on the path alone, and a host opens the same paths over and over,
        # so each distinct path is split and compared once (bounded: cleared when full)
        self._memo: dict[str, bool] = {}
        self.exact: set[tuple[str, ...]] = set()
        self.globs: list[tuple[str, ...]] = []
        for p in prefixes:
            parts = tuple(c for c in p.split("/") if c)
            if any(ch in p for ch in "*?["):
                self.globs.append(parts)
            else:
                self.exact.add(parts)

    def __call__(self, value: Any) -> bool:
        if not isinstance(value, str):
            return False
        memo = self._memo
        got = memo.get(value)
        if got is None:
            if len(memo) >= self._MEMO_MAX:
                memo.clear()
            got = memo[value] = self._matches(value)
        return got

    def _matches(self, value: str) -> bool:
        parts = tuple(c for c in value.split("/") if c)
        exact = self.exact
        if exact:
            for n in range(len(parts) + 1):
                if parts[:n] in exact:
                    return True
        for g in self.globs:
            if len(g) <= len(parts) and all(fnmatch.fnmatchcase(parts[i], g[i]) for i in range(len(g))):
                return True
        return False


def convert_rhs(kind: str, op: str, value: Literal | ListLiteral, field: str) -> Any:
    """Converts the right-hand side once, at load time, to what value_test expects."""
    if isinstance(value, ListLiteral):
        items = value.items
        if op == "pmatch":
            return PathPrefixes(i.text for i in items)
        converted = [convert(kind, i, field, op) for i in items]
        if kind in ("ip", "net"):
            return converted
        return frozenset(converted)
    if op in ("glob", "iglob"):
        return glob_re(value.text, op == "iglob")
    if op == "regex":
        try:
            # Falco uses RE2 with a full match; \Z anchors the end as fullmatch would.
            return re.compile(f"(?:{value.text})\\Z", re.DOTALL)
        except re.error as exc:
            raise CompileError(Msg.BAD_REGEX.format(value=value.text, reason=exc), value.offset) from None
    if op == "icontains" and kind == "str":
        return value.text
    return convert(kind, value, field, op)


def evt_dir_value(check: Check) -> bool:
    """The constant an evt.dir check has now that every event is an exit event."""
    if check.op == "exists":
        return True
    val = check.value
    texts = (
        [i.text for i in val.items]
        if isinstance(val, ListLiteral)
        else [val.text]
        if isinstance(val, Literal)
        else None
    )
    if texts is None or any(t not in ("<", ">") for t in texts) or check.op not in ("=", "==", "!=", "in"):
        raise CompileError(Msg.BAD_EVT_DIR, check.op_offset)
    exit_matches = "<" in texts
    return (not exit_matches) if check.op == "!=" else exit_matches
