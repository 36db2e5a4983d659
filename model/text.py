"""Control characters made visible: the one escaping every text output of alerts uses (server and clients).

An alert's output and fields carry text a monitored process chose (its name, arguments, the files it opens),
so a newline there would forge a whole extra alert line in a log, and ESC or OSC sequences would drive the
operator's terminal (clear the screen, retitle it, hide what follows). Every text rendering of an alert goes
through `escape_controls`, which replaces each such character with a visible escape, so one alert is always
one line and the terminal only ever receives printable text. JSON renderings need no help for C0 controls (JSON
escapes them itself); `json_safe` covers what JSON leaves raw.

It lives in the shared model so that the daemon's outputs and the SDK's `falco-client` import the same
function without importing each other. Backslashes are left as they are, so paths and regular expressions in
alerts stay readable; an escape is therefore recognisable but not unambiguous (a process may print `\\x1b`).
"""

from __future__ import annotations

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}

# C0 controls, DEL and C1 controls (Unicode category Cc), the Unicode line and paragraph separators (some log
# readers split lines on them) and the bidirectional overrides and isolates (they reorder what follows on
# screen, so text can display as something other than what it is).
_ESCAPED: tuple[int, ...] = (
    *range(0x00, 0x20),
    *range(0x7F, 0xA0),
    0x2028,
    0x2029,
    *range(0x202A, 0x202F),
    *range(0x2066, 0x206A),
)


def _visible(code: int) -> str:
    ch = chr(code)
    if ch in _NAMED:
        return _NAMED[ch]
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


_TABLE: dict[int, str] = {code: _visible(code) for code in _ESCAPED}
_JSON_TABLE: dict[int, str] = {code: f"\\u{code:04x}" for code in _ESCAPED if code >= 0x7F}


def escape_controls(text: str) -> str:
    """`text` with every control character replaced by a visible escape (`\\n`, `\\x1b`, `\\u202e`)."""
    return text.translate(_TABLE)


def json_safe(json_text: str) -> str:
    """JSON text (from `json.dumps(..., ensure_ascii=False)`) with the controls JSON leaves raw escaped too.

    JSON itself escapes only U+0000..U+001F; DEL, the C1 controls (U+009B is a one-character CSI to many
    terminals), the line separators and the bidi controls pass raw. Inside a JSON string `\\uXXXX` is the
    same character, so the text still parses to the same value; outside strings these never occur.
    """
    return json_text.translate(_JSON_TABLE)


def has_controls(text: str) -> bool:
    """True if `text` holds a character `escape_controls` would replace."""
    return text != text.translate(_TABLE)
