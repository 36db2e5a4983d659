"""A store that cannot be written or is corrupt: `falconet serve --store` keeps serving from memory, says so with
an internal alert, sets a corrupt file aside and starts a new one, and never crashes.

The full disk and the read-only directory are real: a small tmpfs and a read-only tmpfs mounted by the test (as
root; under CI a missing privilege fails the test rather than skipping it).
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from resources import missing, require_root
from server_support import start_oldest
from store_support import ServeProcess, number_of, wait_for

STORE_FAILURE = "Falconet internal: alert store failure"
STORE_RECOVERED = "Falconet internal: alert store recovered"


def _mount(target: Path, options: str) -> None:
    target.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        missing(f"cannot mount a tmpfs at {target} (needs root): {proc.stderr.strip()}")


@pytest.fixture
def mounts() -> Iterator[list[Path]]:
    """Mount points the test made; unmounted at teardown."""
    require_root("mounting a tmpfs")
    made: list[Path] = []
    yield made
    for target in reversed(made):
        subprocess.run(["umount", "-l", str(target)], capture_output=True)


class Collector:
    """A batched subscriber from the oldest alert, in a thread: test numbers and internal alerts' rules/outputs."""

    def __init__(self, server: ServeProcess) -> None:
        self.numbers: list[int] = []
        self.internal: list[tuple[str, str]] = []
        self._thread = threading.Thread(target=self._run, args=(server,), daemon=True)
        self._thread.start()

    def _run(self, server: ServeProcess) -> None:
        try:
            for resp in server.subscribe(start_oldest()):
                n = number_of(resp)
                if n is None:
                    self.internal.append((resp.rule, resp.output))
                else:
                    self.numbers.append(n)
        except grpc.RpcError:
            pass

    def rules(self) -> list[str]:
        return [rule for rule, _ in self.internal]

    def join(self) -> None:
        self._thread.join(20)


@pytest.mark.root
def test_a_full_disk_keeps_alerts_flowing_from_memory_and_the_store_recovers(
    tmp_path: Path, mounts: list[Path]
) -> None:
    small = tmp_path / "small"
    _mount(small, "size=256k,mode=0700")
    mounts.append(small)
    server = ServeProcess(tmp_path, small / "alerts.db", "--retention", "100000")
    try:
        sub = Collector(server)
        published = 0
        # 2 KiB alerts until the store reports the full disk; every publish is still acknowledged.
        while STORE_FAILURE not in sub.rules():
            assert published < 2000, "the 256 KiB store never filled up"
            server.publish(list(range(published, published + 20)), size=2000)
            published += 20
            wait_for(lambda: len(sub.numbers) >= published, 30, "the subscriber to receive every alert")
        (failure,) = [out for rule, out in sub.internal if rule == STORE_FAILURE]
        # The data file or the index, whichever the disk fills on first (the data file, nearly always).
        assert ("ENOSPC" in failure or "SQLITE_FULL" in failure) and "delivered from memory only" in failure, failure
        for _ in range(5):  # while the disk is full: delivered from memory, and the server lives on
            server.publish(list(range(published, published + 20)), size=2000)
            published += 20
        wait_for(lambda: len(sub.numbers) >= published, 30, "alerts published on a full disk to be delivered")
        assert sub.numbers == list(range(published)), "an alert was lost or reordered"
        assert server.proc.poll() is None

        # Room again: the store is retried and recovers; what is published from then on is stored.
        subprocess.run(["mount", "-o", "remount,size=64m", str(small)], check=True)
        wait_for(lambda: STORE_RECOVERED in sub.rules(), 30, "the store to be written again")
        after = list(range(published, published + 50))
        server.publish(after)
        published += 50
        wait_for(lambda: len(sub.numbers) >= published, 30, "alerts after the recovery")
    finally:
        assert server.stop() == 0, "".join(server.stderr)
    sub.join()
    again = ServeProcess(tmp_path, small / "alerts.db")
    try:
        stored = [number_of(r) for r in again.get_all()]
    finally:
        assert again.stop() == 0
    assert set(after) <= set(stored), "alerts published after the recovery were not stored"
    assert 0 in stored, "alerts stored before the disk filled up were lost"
    # Every record read back passed its checksum: a write cut short by the full disk was cut off, not indexed.
    numbers = [n for n in stored if n is not None]  # not the internal alerts (stored too)
    assert numbers == sorted(numbers) and len(numbers) == len(set(numbers))


def test_a_corrupt_store_is_set_aside_and_a_new_one_started(tmp_path: Path) -> None:
    store = tmp_path / "alerts.db"
    store.write_bytes(b"this is not an SQLite database, whatever it was\n" * 200)
    server = ServeProcess(tmp_path, store)
    try:
        sub = Collector(server)
        wait_for(lambda: STORE_FAILURE in sub.rules(), 30, "the internal alert about the corrupt store")
        (report,) = [out for rule, out in sub.internal if rule == STORE_FAILURE]
        assert "was corrupt: moved to" in report, report
        aside = [p for p in tmp_path.iterdir() if p.name.startswith("alerts.db.corrupt-")]
        assert len(aside) == 1 and aside[0].read_bytes().startswith(b"this is not an SQLite database")
        server.publish([1, 2, 3])
        wait_for(lambda: sub.numbers == [1, 2, 3], 30, "alerts through the new store")
    finally:
        server.kill()
    sub.join()
    again = ServeProcess(tmp_path, store)  # the new store kept them through a kill -9
    try:
        assert [number_of(r) for r in again.get_all()][-3:] == [1, 2, 3]
    finally:
        assert again.stop() == 0


@pytest.mark.root
def test_a_store_in_a_read_only_directory_leaves_the_server_serving_from_memory(
    tmp_path: Path, mounts: list[Path]
) -> None:
    readonly = tmp_path / "ro"
    _mount(readonly, "ro,size=64k")
    mounts.append(readonly)
    server = ServeProcess(tmp_path, readonly / "falconet" / "alerts.db")
    try:
        sub = Collector(server)
        wait_for(lambda: STORE_FAILURE in sub.rules(), 30, "the internal alert about the unwritable store")
        (report,) = [out for rule, out in sub.internal if rule == STORE_FAILURE]
        assert "Read-only file system" in report, report
        server.publish(list(range(100)))
        wait_for(lambda: len(sub.numbers) >= 100, 30, "alerts served from memory")
        assert sub.numbers == list(range(100))
        assert server.falco_get(start_oldest())[-1].output == "store-test n=99"
    finally:
        assert server.stop() == 0, "".join(server.stderr)
    sub.join()
