"""What strangers send the server, as hypothesis strategies and as the corpus in tests/server/corpus/.

Strategies draw every field a client sets from its whole wire range (any int32 for an enum, any uint64 for a
sequence, any text, control characters included), since a client is not bound by our SDK's choices. The
corpus holds the cases worth keeping: each one that ever broke something, and the edges named in issue 10.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format
from google.protobuf.message import Message
from hypothesis import strategies as st

from falconet.sdk.api.falco import outputs_pb2
from falconet.sdk.api.falconet.v1 import alerts_pb2, types_pb2

CORPUS = Path(__file__).with_name("corpus")

INT32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)
UINT32 = st.integers(min_value=0, max_value=2**32 - 1)
INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
UINT64 = st.integers(min_value=0, max_value=2**64 - 1)
TEXT = st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=40)
"""Any text protobuf can carry (UTF-8: no lone surrogates), controls and escapes included."""
NAMES = st.one_of(TEXT, st.sampled_from(["syscall", "internal", "k8s_audit", "Rule 1", "t0", "common"]))

METHODS = {
    "GetAll": "/falconet.v1.AlertService/GetAll",
    "Subscribe": "/falconet.v1.AlertService/Subscribe",
    "get": "/falco.outputs.service/get",
    "sub": "/falco.outputs.service/sub",
}
"""Corpus method names and their gRPC paths."""
_TYPES: dict[str, type[Message]] = {
    "GetAll": alerts_pb2.GetAllRequest,
    "Subscribe": alerts_pb2.SubscribeRequest,
    "get": outputs_pb2.request,
    "sub": outputs_pb2.request,
}


@st.composite
def filters(draw: st.DrawFn) -> types_pb2.Filter:
    msg = types_pb2.Filter(
        rules=draw(st.lists(NAMES, max_size=3)),
        tags=draw(st.lists(NAMES, max_size=3)),
        sources=draw(st.lists(NAMES, max_size=3)),
    )
    if draw(st.booleans()):
        msg.min_priority = draw(st.one_of(st.integers(min_value=-1, max_value=8), INT32))  # type: ignore[assignment]
    return msg


@st.composite
def starts(draw: st.DrawFn) -> types_pb2.Start:
    which = draw(st.sampled_from(["position", "after", "empty"]))
    if which == "position":
        return types_pb2.Start(position=draw(st.one_of(st.integers(min_value=0, max_value=3), INT32)))  # type: ignore[arg-type]
    if which == "after":
        epoch = draw(st.one_of(TEXT, st.just("")))
        return types_pb2.Start(after=types_pb2.Cursor(epoch=epoch, sequence=draw(st.one_of(UINT64, st.just(0)))))
    return types_pb2.Start()


@st.composite
def requests(draw: st.DrawFn, method: str) -> Message:
    """A request message for `method` (a key of METHODS), each optional field present or not."""
    msg = _TYPES[method]()
    if draw(st.booleans()):
        msg.filter.CopyFrom(draw(filters()))  # type: ignore[attr-defined]
    if "start" in msg.DESCRIPTOR.fields_by_name and draw(st.booleans()):
        msg.start.CopyFrom(draw(starts()))  # type: ignore[attr-defined]
    if method in ("GetAll", "Subscribe") and draw(st.booleans()):
        msg.max_batch = draw(UINT32)  # type: ignore[attr-defined]
    return msg


@st.composite
def wire_alerts(draw: st.DrawFn) -> outputs_pb2.response:
    """A `falco.outputs.response` as any publisher could send it: every field over its whole wire range."""
    fields = draw(st.dictionaries(TEXT, st.one_of(TEXT, st.sampled_from(["NaN", "-Infinity", "1e999", "{", "[]",
                                                                           "null", "true", "12345678901234567890123",
                                                                           '"s"', "-0", "1.5"])), max_size=4))
    msg = outputs_pb2.response(
        rule=draw(NAMES),
        output=draw(TEXT),
        output_fields=fields,
        hostname=draw(TEXT),
        tags=draw(st.lists(NAMES, max_size=3)),
        source=draw(NAMES),
        output_fields_json=draw(st.lists(st.one_of(st.sampled_from(sorted(fields) or [""]), TEXT), max_size=3)),
    )
    msg.priority = draw(st.one_of(st.integers(min_value=0, max_value=7), INT32))  # type: ignore[assignment]
    if draw(st.booleans()):
        msg.time.seconds = draw(st.one_of(st.integers(min_value=0, max_value=2**34), INT64))
        msg.time.nanos = draw(st.one_of(st.integers(min_value=0, max_value=999_999_999), INT32))
    if draw(st.booleans()):
        msg.cursor.epoch = draw(TEXT)
        msg.cursor.sequence = draw(UINT64)
    return msg


@dataclass(frozen=True, slots=True)
class CorpusRequest:
    method: str
    """A key of METHODS."""
    data: bytes
    """The serialized request (or raw bytes that need not parse)."""
    line: int


def corpus_requests() -> list[CorpusRequest]:
    """tests/server/corpus/requests.txt: `METHOD [text-format message]` or `METHOD raw: HEX` per line."""
    out: list[CorpusRequest] = []
    for number, line in _lines("requests.txt"):
        method, _, rest = line.partition(" ")
        if rest.startswith("raw:"):
            data = bytes.fromhex(rest.removeprefix("raw:").strip())
        else:
            data = text_format.Parse(rest, _TYPES[method]()).SerializeToString()
        out.append(CorpusRequest(method, data, number))
    return out


def corpus_alerts() -> list[outputs_pb2.response]:
    """tests/server/corpus/alerts.txt: one `falco.outputs.response` in protobuf text format per line."""
    return [text_format.Parse(line, outputs_pb2.response()) for _, line in _lines("alerts.txt")]


def _lines(name: str) -> list[tuple[int, str]]:
    text = (CORPUS / name).read_text(encoding="utf-8")
    return [
        (number, line)
        for number, line in enumerate(text.splitlines(), start=1)
        if line.strip() and not line.startswith("#")
    ]
