"""One pushed rules version as bytes: what `falconet rules push` writes under RULES_KEY and every node reads back.

A version is the ordered list of its files (name and text), so the whole version is one key-value value and is
published and read atomically: a node never sees half of a push. The value is zlib-compressed JSON:

    {"format": 1, "digest": "<sha256 hex>", "name": "release-42", "pushed_by": "alice@admin-1",
     "pushed_at_ns": 1765000000000000000, "files": [{"name": "custom.yaml", "text": "- rule: ..."}]}

The digest is content-addressed: SHA-256 over each file's name and bytes in order (`digest_of`), so the same
files pushed twice have the same digest (the key-value revision tells the pushes apart) and a node can skip a
rebuild when only the revision moved.

Whatever is in the bucket was written by someone else, so `decode` trusts nothing: the compressed and the
decompressed sizes are bounded (a zlib bomb stops at the bound), the JSON's shape and every field's type are
checked, the digest is recomputed, a file name is one plain `*.yaml`/`*.yml` name (no directory part, no
leading dot: a node writes the files into its cache by these names) and a file's text holds no control
character but tab and line ends (so neither the loader's messages nor any log line can carry one). Every
problem is a `BundleError` whose text is safe to log.
"""

from __future__ import annotations

import hashlib
import json
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from falconet.model.text import escape_controls

FORMAT = 1
MAX_FILES = 64
MAX_FILE_BYTES = 4 << 20
"""One file's UTF-8 size (Falco's largest upstream rules file is about 120 kB)."""
MAX_TEXT_BYTES = 8 << 20
"""All files of a version together."""
MAX_VALUE_BYTES = 1_000_000
"""The compressed value: under NATS's default max_payload (1 MB), which bounds a key-value value anyway."""
MAX_JSON_BYTES = 6 * MAX_TEXT_BYTES
"""The decompressed JSON (escapes can make it larger than the texts it holds); decompression stops here."""
MAX_LABEL_CHARS = 128
"""`name` and `pushed_by`."""

_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}\.ya?ml")
_ALLOWED_CONTROLS = frozenset("\t\n\r")


class BundleError(ValueError):
    """A value that is not a usable rules version; the message is one line, safe to log (controls escaped)."""


@dataclass(frozen=True, slots=True)
class RulesFile:
    name: str
    text: str

    @property
    def data(self) -> bytes:
        return self.text.encode("utf-8")


@dataclass(frozen=True, slots=True)
class RulesBundle:
    """One version's files in load order, and who pushed it."""

    files: tuple[RulesFile, ...]
    name: str = ""
    pushed_by: str = ""
    pushed_at_ns: int = 0

    @property
    def digest(self) -> str:
        return digest_of(self.files)

    def check(self) -> None:
        """BundleError for the first thing a node would refuse (the CLI checks before it publishes)."""
        if not self.files:
            raise BundleError("a rules version needs at least one file")
        if len(self.files) > MAX_FILES:
            raise BundleError(f"a rules version holds at most {MAX_FILES} files, this one {len(self.files)}")
        seen: set[str] = set()
        total = 0
        for f in self.files:
            check_file_name(f.name)
            if f.name in seen:
                raise BundleError(f"two files are named {f.name} (names must be unique within a version)")
            seen.add(f.name)
            try:
                size = len(f.data)
            except UnicodeEncodeError:  # a lone surrogate, which JSON's \ud800 escapes can spell
                raise BundleError(f"{f.name} is not valid Unicode text") from None
            if size > MAX_FILE_BYTES:
                raise BundleError(f"{f.name} is {size} bytes; a file may have at most {MAX_FILE_BYTES}")
            total += size
            check_text(f.name, f.text)
        if total > MAX_TEXT_BYTES:
            raise BundleError(f"the files hold {total} bytes together; a version may have at most {MAX_TEXT_BYTES}")
        for label, value in (("name", self.name), ("pushed_by", self.pushed_by)):
            if len(value) > MAX_LABEL_CHARS or not value.isprintable():
                raise BundleError(f"{label} must be printable text of at most {MAX_LABEL_CHARS} characters, "
                                  f"got {shown(value)}")
        if not 0 <= self.pushed_at_ns < 2**63:
            raise BundleError("pushed_at_ns is out of range")

    def encode(self) -> bytes:
        """The key-value value; BundleError if a node would refuse it, or if it is too large to publish."""
        self.check()
        doc = {
            "format": FORMAT,
            "digest": self.digest,
            "name": self.name,
            "pushed_by": self.pushed_by,
            "pushed_at_ns": self.pushed_at_ns,
            "files": [{"name": f.name, "text": f.text} for f in self.files],
        }
        value = zlib.compress(json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8"), 9)
        if len(value) > MAX_VALUE_BYTES:
            raise BundleError(f"the version compresses to {len(value)} bytes; at most {MAX_VALUE_BYTES} fit in "
                              "one key-value value")
        return value

    @classmethod
    def decode(cls, value: bytes) -> RulesBundle:
        """The version a value holds, checked whole; BundleError naming the first problem."""
        doc = _load_json(value)
        fmt = doc.get("format")
        if fmt != FORMAT or isinstance(fmt, bool):
            raise BundleError(f"unknown bundle format {shown(str(fmt))} (this node reads format {FORMAT})")
        files_raw = doc.get("files")
        if not isinstance(files_raw, list):
            raise BundleError("files is missing or not a list")
        if len(files_raw) > MAX_FILES:
            raise BundleError(f"a rules version holds at most {MAX_FILES} files, this one {len(files_raw)}")
        files: list[RulesFile] = []
        for i, item in enumerate(files_raw):
            if not isinstance(item, dict) or not isinstance(item.get("name"), str) \
                    or not isinstance(item.get("text"), str):
                raise BundleError(f"files[{i}] is not an object with a string name and a string text")
            files.append(RulesFile(item["name"], item["text"]))
        stamp = doc.get("pushed_at_ns", 0)
        bundle = cls(
            files=tuple(files),
            name=_string(doc, "name"),
            pushed_by=_string(doc, "pushed_by"),
            pushed_at_ns=stamp if isinstance(stamp, int) and not isinstance(stamp, bool) else -1,
        )
        bundle.check()
        stated = doc.get("digest")
        if not isinstance(stated, str) or stated != bundle.digest:
            raise BundleError(f"the stated digest {shown(str(stated))} does not match the files "
                              f"({bundle.digest[:12]}...): the value was altered or is not from `rules push`")
        return bundle


def digest_of(files: Sequence[RulesFile]) -> str:
    """SHA-256 hex over each file's name, size and bytes, in order (sizes make the framing unambiguous)."""
    h = hashlib.sha256()
    for f in files:
        data = f.data
        h.update(f.name.encode("utf-8") + b"\0" + str(len(data)).encode() + b"\0")
        h.update(data)
    return h.hexdigest()


def check_file_name(name: str) -> None:
    """A plain rules file name: no directory part, no leading dot, a .yaml or .yml suffix, at most 104 chars."""
    if not _FILE_NAME.fullmatch(name):
        raise BundleError(f"file name {shown(name)} is not a plain rules file name "
                          "([A-Za-z0-9][A-Za-z0-9._-]*.yaml or .yml, no directory)")


def check_text(name: str, text: str) -> None:
    """No control character but tab and line ends (YAML forbids most anyway; the rest would reach log lines)."""
    for index, ch in enumerate(text):
        if ch not in _ALLOWED_CONTROLS and escape_controls(ch) != ch:
            line = text.count("\n", 0, index) + 1
            column = index - (text.rfind("\n", 0, index) + 1) + 1
            raise BundleError(f"{name}:{line}:{column}: control character {escape_controls(ch)} "
                              "(rules files may hold tabs and line ends only)")


def shown(text: str) -> str:
    """Text from a stranger, for one log line: cut short, quoted, every control character escaped."""
    cut = text if len(text) <= 80 else text[:77] + "..."
    return '"' + escape_controls(cut) + '"'


def _string(doc: dict[str, object], key: str) -> str:
    value = doc.get(key, "")
    if not isinstance(value, str):
        raise BundleError(f"{key} is not a string")
    return value


def _load_json(value: bytes) -> dict[str, object]:
    if len(value) > MAX_VALUE_BYTES:
        raise BundleError(f"the value is {len(value)} bytes; at most {MAX_VALUE_BYTES} are read")
    d = zlib.decompressobj()
    try:
        raw = d.decompress(value, MAX_JSON_BYTES + 1)
    except zlib.error as exc:
        raise BundleError(f"the value is not zlib-compressed ({exc})") from None
    if len(raw) > MAX_JSON_BYTES or d.unconsumed_tail:
        raise BundleError(f"the value decompresses to more than {MAX_JSON_BYTES} bytes")
    if not d.eof or d.unused_data:
        raise BundleError("the value is truncated or has bytes after its compressed data")
    try:
        doc = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise BundleError("the value's JSON is not UTF-8") from None
    except (ValueError, RecursionError) as exc:
        raise BundleError(f"the value is not JSON ({escape_controls(str(exc))[:120]})") from None
    if not isinstance(doc, dict):
        raise BundleError("the value is not a JSON object")
    return doc
