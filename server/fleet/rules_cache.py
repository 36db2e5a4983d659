"""The node's copy of pushed rules on disk, so a restart runs the last version it validated, NATS or no NATS.

    <cache_dir>/versions/<revision>-<digest12>/<file name>...   one directory per version tried
    <cache_dir>/current.json                                    the version that runs: revision, digest, files

A new version is staged into its own directory (the engine loads files by path, so the candidate must be on disk
to be validated), and `current.json` points at it only once the reload succeeded; it is replaced atomically
(written beside, fsynced, renamed), so a crash leaves the old pointer or the new one. Loading verifies the
files against the recorded digest: a cache edited or half-written by someone else is refused, not run. File
names were checked by the bundle (one plain name each), so joining them to the directory cannot leave it.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from falconet.server.fleet.names import rules_version
from falconet.server.fleet.rules_bundle import BundleError, RulesBundle, RulesFile, check_file_name

CURRENT = "current.json"
KEEP_VERSIONS = 3
"""Version directories kept (the running one always among them), for a look at what ran before."""


@dataclass(frozen=True, slots=True)
class CachedVersion:
    """A version on disk: its revision, the bundle it came from and the paths of its files in load order."""

    revision: int
    bundle: RulesBundle
    paths: tuple[Path, ...]

    @property
    def label(self) -> str:
        return rules_version(self.revision, self.bundle.digest)


class RulesCache:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _dir(self, revision: int, digest: str) -> Path:
        return self.root / "versions" / rules_version(revision, digest)

    def stage(self, revision: int, bundle: RulesBundle) -> CachedVersion:
        """Writes the version's files into their own directory (replacing a previous attempt at it)."""
        bundle.check()
        where = self._dir(revision, bundle.digest)
        if where.exists():
            shutil.rmtree(where)
        where.mkdir(parents=True, mode=0o750)
        paths: list[Path] = []
        for f in bundle.files:
            path = where / f.name
            _write(path, f.data)
            paths.append(path)
        return CachedVersion(revision, bundle, tuple(paths))

    def commit(self, version: CachedVersion) -> None:
        """Makes `version` the one a restart runs, and drops the oldest other directories."""
        doc = {"format": 1, "revision": version.revision, "digest": version.bundle.digest,
               "name": version.bundle.name, "pushed_by": version.bundle.pushed_by,
               "pushed_at_ns": version.bundle.pushed_at_ns, "files": [f.name for f in version.bundle.files]}
        _write(self.root / CURRENT, json.dumps(doc, indent=1).encode())
        self._prune(keep=self._dir(version.revision, version.bundle.digest))

    def discard(self, version: CachedVersion, running: CachedVersion | None) -> None:
        """Removes a refused candidate's directory (never the running version's)."""
        where = self._dir(version.revision, version.bundle.digest)
        if running is None or where != self._dir(running.revision, running.bundle.digest):
            shutil.rmtree(where, ignore_errors=True)

    def load(self) -> CachedVersion | None:
        """The committed version, verified; None if there is none; BundleError/OSError if it is unusable."""
        pointer = self.root / CURRENT
        if not pointer.exists():
            return None
        try:
            doc = json.loads(pointer.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise BundleError(f"{pointer} is not JSON ({type(exc).__name__})") from None
        if not isinstance(doc, dict):
            raise BundleError(f"{pointer} is not a JSON object")
        revision, digest, names = doc.get("revision"), doc.get("digest"), doc.get("files")
        if not isinstance(revision, int) or isinstance(revision, bool) or revision < 1 or not isinstance(digest, str) \
                or not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise BundleError(f"{pointer} does not name a version (revision, digest, files)")
        strings = {k: doc.get(k, "") for k in ("name", "pushed_by")}
        stamp = doc.get("pushed_at_ns", 0)
        where = self._dir(revision, digest)
        files: list[RulesFile] = []
        for name in names:
            check_file_name(name)
            try:
                text = (where / name).read_text(encoding="utf-8")
            except UnicodeDecodeError:
                raise BundleError(f"{where / name} is not UTF-8 text") from None
            files.append(RulesFile(name, text))
        bundle = RulesBundle(
            files=tuple(files),
            name=strings["name"] if isinstance(strings["name"], str) else "",
            pushed_by=strings["pushed_by"] if isinstance(strings["pushed_by"], str) else "",
            pushed_at_ns=stamp if isinstance(stamp, int) and not isinstance(stamp, bool) else 0,
        )
        bundle.check()
        if bundle.digest != digest:
            raise BundleError(f"the files in {where} do not match the digest recorded in {pointer}")
        return CachedVersion(revision, bundle, tuple(where / n for n in names))

    def _prune(self, keep: Path) -> None:
        versions = self.root / "versions"
        others = sorted((p for p in versions.iterdir() if p.is_dir() and p != keep),
                        key=lambda p: p.stat().st_mtime)
        for old in others[: max(len(others) - (KEEP_VERSIONS - 1), 0)]:
            shutil.rmtree(old, ignore_errors=True)


def _write(path: Path, data: bytes) -> None:
    """Written beside, fsynced and renamed into place: a crash leaves the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o640)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
