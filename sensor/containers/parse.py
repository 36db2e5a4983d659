"""Turning what runtimes say into the model's Container: image references, times, labels, mounts.

Everything here comes from whoever starts containers on the host (names, labels, image names), so it is
treated as hostile: control characters never reach an output (they become `?`), and long labels are dropped
as Falco's container plugin drops them (`label_max_len`, 100 by default).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

LABEL_MAX_LEN = 100
MAX_LABELS = 256
MAX_MOUNTS = 256
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def clean(value: object) -> str | None:
    """A runtime-supplied string made safe for outputs; None for absent or non-string values."""
    if not isinstance(value, str) or value == "":
        return None
    return _CONTROL.sub("?", value)


def split_image(ref: str | None) -> tuple[str | None, str | None, str | None]:
    """(repository, tag, digest) of an image reference, as Falco splits them.

    `registry:5000/team/app:1.2@sha256:ab..` -> (`registry:5000/team/app`, `1.2`, `sha256:ab..`); a reference
    with neither tag nor digest has tag `latest`; a bare image id (`sha256:...` or 64 hex) has no repository."""
    if not ref:
        return None, None, None
    digest = None
    if "@" in ref:
        ref, _, digest = ref.partition("@")
    if ref.startswith("sha256:") or re.fullmatch(r"[0-9a-f]{64}", ref):
        return None, None, digest
    slash = ref.rfind("/")
    colon = ref.rfind(":")
    if colon > slash:
        return ref[:colon], ref[colon + 1 :] or None, digest
    return ref, (None if digest else "latest"), digest


def image_id(value: object) -> str | None:
    """An image id without its `sha256:` algorithm prefix."""
    text = clean(value)
    if text is None:
        return None
    return text.split(":", 1)[1] if text.startswith("sha256:") else text


def rfc3339_ns(value: object) -> int | None:
    """Nanoseconds since the epoch from the RFC 3339 times runtimes write (nanosecond fractions, `Z` or an
    offset); None for Go's zero time or anything unparsable."""
    if not isinstance(value, str) or not value or value.startswith("0001-01-01"):
        return None
    m = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)", value.strip())
    if not m:
        return None
    base, frac, zone = m.groups()
    try:
        dt = datetime.fromisoformat(base + ("+00:00" if zone == "Z" else zone))
    except ValueError:
        return None
    return int(dt.timestamp()) * 1_000_000_000 + int((frac or "0").ljust(9, "0"))


def labels(value: object) -> dict[str, str]:
    """Labels that are strings, at most LABEL_MAX_LEN long, at most MAX_LABELS of them, cleaned."""
    if not isinstance(value, dict):
        return {}
    out: dict[str, str] = {}
    for k, v in value.items():
        if len(out) >= MAX_LABELS:
            break
        key, val = clean(k), clean(v) if v != "" else ""
        if key is None or val is None or len(val) > LABEL_MAX_LEN or len(key) > 4 * LABEL_MAX_LEN:
            continue
        out[key] = val
    return out


def mount(source: object, dest: object, mode: object, rw: object, propagation: object) -> dict[str, Any]:
    """One container.mounts entry in the model's shape."""
    return {
        "source": clean(source) or "",
        "dest": clean(dest) or "",
        "mode": clean(mode) or "",
        "rdwr": bool(rw) if isinstance(rw, bool) else True,
        "propagation": clean(propagation) or "",
    }
