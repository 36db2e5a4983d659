"""The parts of fleet rules that need no NATS: the bundle a stranger may have written, the node's disk cache, the
`fleet_rules` block, the start-up fallback, and `rules push` refusing before it connects."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from falconet.server.config_values import Problems, Section
from falconet.server.daemon import build_engine
from falconet.server.daemon_config import DaemonConfig, parse_config
from falconet.server.fleet.rules_bundle import (
    MAX_FILE_BYTES,
    MAX_FILES,
    BundleError,
    RulesBundle,
    RulesFile,
    digest_of,
)
from falconet.server.fleet.names import rules_version
from falconet.server.fleet.rules_cache import KEEP_VERSIONS, RulesCache
from falconet.server.fleet.rules_config import DEFAULT_CACHE_DIR, read_fleet_rules
from falconet.server.fleet.rules_node import FleetRulesNode

RULE = """\
- rule: Fleet passwd read
  desc: pushed
  condition: evt.type = openat and fd.name = /etc/passwd
  output: "passwd (proc.name=%proc.name)"
  priority: NOTICE
"""


def raw(doc: object) -> bytes:
    return zlib.compress(json.dumps(doc).encode())


def doc_for(pairs: list[tuple[str, str]], **changes: object) -> dict[str, object]:
    doc: dict[str, object] = {"format": 1, "name": "", "pushed_by": "", "pushed_at_ns": 0,
                              "digest": digest_of([RulesFile(n, t) for n, t in pairs]),
                              "files": [{"name": n, "text": t} for n, t in pairs]}
    doc.update(changes)
    return doc


def test_round_trip_and_content_address() -> None:
    b = RulesBundle(files=(RulesFile("a.yaml", RULE), RulesFile("b.yml", "# é\n")), name="r1", pushed_by="me@h",
                    pushed_at_ns=5)
    assert RulesBundle.decode(b.encode()) == b
    assert b.digest == RulesBundle(files=b.files).digest  # who and when are not content
    swapped = RulesBundle(files=(b.files[1], b.files[0]))
    renamed = RulesBundle(files=(RulesFile("c.yaml", RULE), b.files[1]))
    framing = RulesBundle(files=(RulesFile("a.yaml", RULE + "x"), RulesFile("b.yml", "# é\n"[0:])))
    assert len({b.digest, swapped.digest, renamed.digest, framing.digest}) == 4


def test_version_label() -> None:
    assert rules_version(12, "ab" * 32) == "12-abababababab"


@pytest.mark.parametrize("name", ["../x.yaml", "/etc/x.yaml", "a/b.yaml", ".hidden.yaml", "x.txt", "x.yaml\n",
                                  "a" * 120 + ".yaml", "", "x.yaml/..", "\u202ex.yaml"])
def test_file_names_that_could_leave_the_cache_are_refused(name: str) -> None:
    with pytest.raises(BundleError, match="not a plain rules file name") as info:
        RulesBundle.decode(raw(doc_for([(name, RULE)])))
    assert info.value.args[0].isprintable()


@pytest.mark.parametrize(("value", "reason"), [
    (b"", "truncated"),
    (b"not zlib", "not zlib-compressed"),
    (zlib.compress(b"{}") + b"junk", "bytes after"),
    (zlib.compress(b"{}")[:-3], "truncated"),
    (zlib.compress(b" " * (60 << 20), 9), "decompresses to more than"),
    (zlib.compress(b"\xff\xfe"), "not UTF-8"),
    (zlib.compress(b"[" * 100_000), "not JSON"),
    (raw([]), "not a JSON object"),
    (raw(doc_for([("a.yaml", RULE)], format=2)), "unknown bundle format"),
    (raw(doc_for([("a.yaml", RULE)], format=True)), "unknown bundle format"),
    (raw(doc_for([("a.yaml", RULE)], files="a.yaml")), "files is missing or not a list"),
    (raw(doc_for([("a.yaml", RULE)], files=[{"name": "a.yaml", "text": 3}])), "string text"),
    (raw(doc_for([("a.yaml", RULE)], digest="0" * 64)), "does not match the files"),
    (raw(doc_for([("a.yaml", RULE)], name="x\x1b[2J")), "printable"),
    (raw(doc_for([])), "at least one file"),
    (raw(doc_for([(f"f{i}.yaml", "") for i in range(MAX_FILES + 1)])), "at most 64 files"),
    (raw(doc_for([("a.yaml", RULE), ("a.yaml", RULE)])), "two files are named a.yaml"),
    (raw(doc_for([("a.yaml", "#" * (MAX_FILE_BYTES + 1))])), "a file may have at most"),
    (raw(doc_for([("a.yaml", "- rule: \x1b]0;x\x07")])), r"a\.yaml:1:9: control character \\x1b"),
    (raw(doc_for([("a.yaml", "#\n# \u202e")])), r"a\.yaml:2:3: control character \\u202e"),
    (raw(doc_for([("a.yaml", "x\x85")])), r"control character \\x85"),
    (b'x\x9c\xab\x06\x00' + b"\x00" * 4, "zlib|truncated|after"),
])
def test_hostile_values_are_refused_with_a_safe_reason(value: bytes, reason: str) -> None:
    with pytest.raises(BundleError, match=reason) as info:
        RulesBundle.decode(value)
    assert info.value.args[0].isprintable()


def test_a_lone_surrogate_is_refused() -> None:
    text = json.dumps(doc_for([("a.yaml", "x")])).replace('"text": "x"', '"text": "\\ud800"')
    with pytest.raises(BundleError, match="not valid Unicode"):
        RulesBundle.decode(zlib.compress(text.encode()))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | st.builds(zlib.compress, st.binary(max_size=300)))
def test_any_bytes_give_a_bundle_or_a_bundle_error(value: bytes) -> None:
    try:
        RulesBundle.decode(value)
    except BundleError as exc:
        assert exc.args[0].isprintable()


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4)))
def test_any_json_gives_a_bundle_or_a_bundle_error(doc: object) -> None:
    for shape in (doc, {"format": 1, "files": doc}, {"format": 1, "files": [doc]}):
        try:
            RulesBundle.decode(raw(shape))
        except BundleError as exc:
            assert exc.args[0].isprintable()


def test_encode_refuses_what_a_node_would() -> None:
    with pytest.raises(BundleError, match="not a plain rules file name"):
        RulesBundle(files=(RulesFile("../a.yaml", RULE),)).encode()
    big = "# " + os.urandom(1_100_000).hex() + "\n"  # 2.2 MB of hex compresses to more than 1 MB
    with pytest.raises(BundleError, match="compresses to"):
        RulesBundle(files=(RulesFile("a.yaml", big),)).encode()


# -- the cache --------------------------------------------------------------------------------------------


def test_cache_round_trip_tamper_and_prune(tmp_path: Path) -> None:
    cache = RulesCache(tmp_path / "c")
    assert cache.load() is None
    bundle = RulesBundle(files=(RulesFile("a.yaml", RULE),), name="n")
    staged = cache.stage(7, bundle)
    assert cache.load() is None  # staged is not committed
    cache.commit(staged)
    loaded = cache.load()
    assert loaded is not None and loaded.revision == 7 and loaded.bundle == bundle and loaded.paths == staged.paths
    staged.paths[0].write_text(RULE + "# edited\n")
    with pytest.raises(BundleError, match="do not match the digest"):
        cache.load()
    (tmp_path / "c" / "current.json").write_text("{not json")
    with pytest.raises(BundleError, match="not JSON"):
        cache.load()
    (tmp_path / "c" / "current.json").write_text(json.dumps({"revision": 1, "digest": "x", "files": ["../../a.yaml"]}))
    with pytest.raises(BundleError, match="not a plain rules file name"):
        cache.load()
    for revision in range(10, 20):
        cache.commit(cache.stage(revision, RulesBundle(files=(RulesFile("a.yaml", RULE + f"# {revision}\n"),))))
    kept = sorted(p.name for p in (tmp_path / "c" / "versions").iterdir())
    assert len(kept) == KEEP_VERSIONS and kept[-1].startswith("19-")
    assert cache.load() is not None


# -- the configuration block --------------------------------------------------------------------------------


def _read(tmp_path: Path, data: dict[str, object], store: Path | None = None) -> tuple[object, list[str]]:
    problems = Problems(tmp_path)
    return read_fleet_rules(Section(data, "fleet_rules.", problems), store), problems.problems


def test_config_block(tmp_path: Path) -> None:
    assert _read(tmp_path, {}) == (None, [])
    assert _read(tmp_path, {"enabled": False, "servers": ["nats://127.0.0.1:4222"]}) == (None, [])
    config, problems = _read(tmp_path, {"servers": ["nats://n:4222"]}, Path("/srv/falconet/alerts.db"))
    assert problems == [] and config is not None
    assert config.cache_dir == Path("/srv/falconet/fleet_rules")  # type: ignore[attr-defined]
    config, _ = _read(tmp_path, {"servers": ["nats://n:4222"]})
    assert config.cache_dir == DEFAULT_CACHE_DIR  # type: ignore[attr-defined]
    _, problems = _read(tmp_path, {"servers": ["http://x"], "bucket": "a.b", "bukcet": "x", "check_interval": 0})
    assert any("not a NATS URL" in p for p in problems)
    assert any("bucket must be" in p for p in problems)
    assert any("bukcet is not a known setting" in p for p in problems)
    assert any("check_interval" in p for p in problems)


def test_daemon_config_reads_the_block_and_loads_pushed_files_last(tmp_path: Path) -> None:
    local = tmp_path / "local.yaml"
    local.write_text(RULE)
    config = parse_config(f"rules_files: [{local}]\nfleet_rules: {{servers: [nats://127.0.0.1:4222]}}\n")
    assert config.fleet_rules is not None and config.fleet_rules.bucket == "falconet_rules"
    pushed = tmp_path / "pushed.yaml"
    assert config.with_fleet_rules([pushed]).rules_paths() == [local, pushed]


# -- start-up ---------------------------------------------------------------------------------------------


def test_a_cached_version_that_no_longer_loads_falls_back_to_the_local_files(tmp_path: Path) -> None:
    local = tmp_path / "local.yaml"
    local.write_text(RULE)
    fleet_config, _ = _read(tmp_path, {"servers": ["nats://127.0.0.1:4222"], "cache_dir": str(tmp_path / "cache")})
    cache = RulesCache(tmp_path / "cache")
    override = "- rule: Fleet passwd read\n  priority: CRITICAL\n  override: {priority: replace}\n"
    cache.commit(cache.stage(3, RulesBundle(files=(RulesFile("o.yaml", override),))))
    lines: list[str] = []
    node = FleetRulesNode(fleet_config, lines.append, CollectorRegistry())  # type: ignore[arg-type]
    config, _engine = node.start_engine(DaemonConfig(rules_files=(local,)), build_engine, "h")
    assert node.rules_version.startswith("3-") and len(config.fleet_rules_files) == 1

    local.write_text(RULE.replace("Fleet passwd read", "Renamed"))  # the override's target is gone
    lines.clear()
    node = FleetRulesNode(fleet_config, lines.append, CollectorRegistry())  # type: ignore[arg-type]
    config, _engine = node.start_engine(DaemonConfig(rules_files=(local,)), build_engine, "h")
    assert node.rules_version == "" and config.fleet_rules_files == ()
    assert "does not load with the local rules files" in lines[0]


# -- the CLI refuses before it connects -------------------------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "falconet.server.cli", "rules", *args], capture_output=True,
                          text=True, timeout=120)


def test_push_refuses_a_file_that_would_not_load_with_validates_messages(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(RULE.replace("fd.name", "fd.nmae"))
    # Port 9 on loopback: nothing listens, and nothing is tried, since validation comes first.
    pushed = _cli("push", str(bad), "--nats", "nats://127.0.0.1:9")
    validated = _cli("validate", str(bad))
    assert pushed.returncode == 1 and validated.returncode == 1
    diag = [line for line in validated.stdout.splitlines() if "LOAD_ERR" in line or "|" in line or "^" in line]
    assert diag and all(line in pushed.stderr.splitlines() for line in diag), (diag, pushed.stderr)
    assert "nothing was published" in pushed.stderr and "NATS" not in pushed.stderr


def test_push_names_an_unreachable_server_in_one_line(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(RULE)
    result = _cli("push", str(good), "--nats", "nats://127.0.0.1:9", "--timeout", "2")
    assert result.returncode == 1
    assert "falconet rules: NATS:" in result.stderr and "Traceback" not in result.stderr
    assert _cli("push", str(good)).returncode == 2  # no -c and no --nats: says what to give
