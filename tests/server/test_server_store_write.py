"""The alert store's record write in C (server/storewrite.c, falconet.server._storewrite): the same bytes as
the Python path (server/store_data.py's `encode_record` and `_writev_all`), its CRC-32C, and its errors."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import google_crc32c
import pytest

from falconet.server import _storewrite, store_data
from falconet.server.store_data import HEAD, RECORD_ALERTS, DataFiles, Limits, read_record


def _wires(n: int, start: int = 0) -> list[bytes]:
    # Lengths 0 to a few hundred bytes, some not a multiple of 8 (the CRC's tail), one empty.
    return [b"" if i == 5 else f"alert {i} ".encode() * (1 + i % 37) for i in range(start, start + n)]


def test_the_extension_is_built_and_used() -> None:
    """Built by `make venv` (setup.py) wherever CI runs: without it the store quietly takes its slower Python
    path, so a machine where that happens fails here rather than only in the bench."""
    assert _storewrite.hardware()
    assert store_data.C_WRITE


@pytest.mark.parametrize("software", [False, True])
def test_crc32c_is_googles_for_every_length_and_alignment(software: bool) -> None:
    assert _storewrite.crc32c(b"123456789", software=software) == 0xE3069283
    data = os.urandom(300)
    for start in range(9):
        for n in (0, 1, 7, 8, 9, 63, 64, 65, 200):
            part = data[start : start + n]
            assert _storewrite.crc32c(part, software=software) == int(google_crc32c.value(part))
            half = _storewrite.crc32c(part[: n // 2], software=software)
            assert _storewrite.crc32c(part[n // 2 :], half, software=software) == int(google_crc32c.value(part))


def _append(directory: Path, c_write: bool, chunks: list[tuple[int, int, int, list[bytes]]],
            monkeypatch: pytest.MonkeyPatch) -> tuple[bytes, list[store_data.IndexRow]]:
    monkeypatch.setattr(store_data, "C_WRITE", c_write)
    files = DataFiles(directory, Limits.of(1 << 30, 0, 0), sync=False)
    files.resume(1, 0, 0, 0)
    rows = files.append(chunks)
    rows += files.append(chunks[:1])  # a second commit after the first
    files.close()
    return (directory / "0000000001.seg").read_bytes(), rows


@pytest.mark.parametrize("payload_crc", [True, False])
def test_the_c_write_writes_the_python_paths_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, payload_crc: bool
) -> None:
    """Byte for byte, so readers, recovery and old files need nothing new: more parts than one pwritev takes,
    several records per commit, an empty wire form."""
    monkeypatch.setattr(store_data, "PAYLOAD_CRC", payload_crc)
    big, small = _wires(RECORD_ALERTS), _wires(3, RECORD_ALERTS)
    chunks = [(1, RECORD_ALERTS, 7, big), (RECORD_ALERTS + 1, RECORD_ALERTS + 3, 7, small)]
    c_bytes, c_rows = _append(tmp_path / "c", True, chunks, monkeypatch)
    py_bytes, py_rows = _append(tmp_path / "py", False, chunks, monkeypatch)
    assert c_bytes == py_bytes
    assert c_rows == py_rows
    assert c_bytes[:4] == (b"FNc3" if payload_crc else b"FNd3")
    first, last, _, segment, offset, size = c_rows[1]
    assert read_record(tmp_path / "c", segment, offset, first, last, size) == small
    assert len(c_bytes) == c_rows[-1][4] + HEAD.size + c_rows[-1][5]


def test_bad_arguments_and_a_failed_write_raise(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        _storewrite.write_records(0, 0, [(1, ["not bytes"])], True)  # type: ignore[list-item]
    with pytest.raises(TypeError):
        _storewrite.write_records(0, 0, [(1,)], True)  # type: ignore[list-item]
    with pytest.raises(ValueError):
        _storewrite.write_records(0, -1, [(1, [b"x"])], True)
    fd = os.open(tmp_path / "ro", os.O_RDONLY | os.O_CREAT, 0o600)
    try:
        with pytest.raises(OSError) as err:
            _storewrite.write_records(fd, 0, [(1, [b"x"])], True)
        assert err.value.errno == errno.EBADF  # not open for writing
    finally:
        os.close(fd)


_PAST_THE_LIMIT = """
import os, resource, signal, sys
from falconet.server import _storewrite
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (10_000, 10_000))
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT, 0o600)
try:
    _storewrite.write_records(fd, 0, [(1, [b"y" * 3000] * 8)], True)
except OSError as exc:
    print(exc.errno)
else:
    print("written")
"""


def test_a_short_write_goes_on_and_then_reports_the_error(tmp_path: Path) -> None:
    """With a file size limit the kernel writes what fits (a short pwritev), then refuses the rest (EFBIG): the
    call writes on from where the short write stopped and raises the refusal (the store then cuts the file
    back), never a quiet partial record."""
    path = tmp_path / "limited"
    out = subprocess.run([sys.executable, "-c", _PAST_THE_LIMIT, str(path)], capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stdout.strip() == str(errno.EFBIG)
    assert path.stat().st_size == 10_000  # the short write's bytes, then the refusal
