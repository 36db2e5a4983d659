"""The kernel prefilter (the open filter and the event gates) loses no alert, for every predicate kind and for Falco's upstream stable rules: as root,
real sensor, two daemons at once on the same rules, one with `sensor.open_path_filter: false`, one with it on.

As in test_daemon_open_filter.py (the default rules), every action carries a token and a barrier alert seen by
both daemons proves everything before it was written out, so the alert sets are compared without sleeping.
- the kinds rules (written here) bound the filter with each kind of atom: a prefix, a base name, an end of
  the path, a glob's literal end, `..` in the path as passed, and kinds from evt.is_open_* and named flags;
- the gates rules bound syscalls without a state role by each kind of gate: the result class (= 0, failed,
  a negated comparison), uids that must or must not be, comms that must or must not be, argument values;
- the upstream stable rules (../shared/upstream-rules/current/falco_rules.yaml), which the filter could not
  bound before (a base name, an `endswith`, a `..` test), on a mixed workload: opens they look for,
  traversals, log truncation, symlinks, ptrace, key searches, and benign opens the filter keeps back.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import pytest
from resources import require_root, shared_path
from test_daemon_open_filter import FD_CODE, PTRACE_CODE, PY, WRITE_CODE, compare, daemon_pair, run

pytestmark = pytest.mark.bpf

KINDS_RULES = """
- macro: opened
  condition: evt.type in (open, openat, creat, openat2)
- rule: K prefix read
  desc: a prefix, read opens only
  condition: opened and evt.is_open_read = true and fd.name startswith {base}/pre/
  output: prefix %fd.name %proc.cmdline
  priority: WARNING
- rule: K base name
  desc: a base name anywhere
  condition: opened and fd.filename in (fnx-secret, fnx-key)
  output: basename %fd.name %proc.cmdline
  priority: WARNING
- rule: K suffix truncated
  desc: an end of the path, opened with O_TRUNC
  condition: opened and fd.name endswith .fnxlog and evt.arg.flags contains O_TRUNC
  output: suffix %fd.name %proc.cmdline
  priority: WARNING
- rule: K glob end written
  desc: a glob's literal end, write opens
  condition: opened and evt.is_open_write = true and fd.name glob '*/fnx-conf.d/*.conf'
  output: glob %fd.name %proc.cmdline
  priority: WARNING
- rule: K traversal
  desc: .. in the path as passed
  condition: opened and fd.nameraw contains '../' and fd.name contains fnx-trav
  output: traversal %fd.name %fd.nameraw %proc.cmdline
  priority: WARNING
- rule: K read and write
  desc: both kinds at once (O_RDWR)
  condition: opened and evt.is_open_read = true and evt.is_open_write = true and fd.filename = fnx-rw
  output: rw %fd.name %proc.cmdline
  priority: WARNING
- rule: K later fd event
  desc: a later event on a file fd, through the fd table
  condition: evt.type = fchmod and fd.filename = fnx-chmod
  output: chmod %fd.name %proc.cmdline
  priority: WARNING
- rule: G result zero
  desc: an event gate on the result class
  condition: evt.type = mkdir and evt.rawres = 0 and evt.arg.path contains fnx-g
  output: mkdir ok %evt.arg.path %proc.cmdline
  priority: WARNING
- rule: G failed
  desc: an event gate on failures
  condition: evt.type = unlinkat and evt.failed = true and evt.arg.name contains fnx-g
  output: unlink failed %evt.arg.name %evt.res %proc.cmdline
  priority: WARNING
- rule: G uid in
  desc: an event gate on a uid set
  condition: evt.type = chmod and user.uid in (4321, 4322) and evt.arg.filename contains fnx-g
  output: chmod by uid %user.uid %evt.arg.filename %proc.cmdline
  priority: WARNING
- rule: G uid out and result
  desc: an event gate on a uid that must not be, negated result
  condition: evt.type = rmdir and not user.uid = 0 and not evt.rawres != 0 and evt.arg.path contains fnx-g
  output: rmdir by uid %user.uid %evt.arg.path %proc.cmdline
  priority: WARNING
- rule: G comm in
  desc: an event gate on comm names
  condition: evt.type = mkdirat and proc.name in (fnx-comm-a, fnx-comm-b)
  output: mkdirat by %proc.name %evt.arg.path %proc.cmdline
  priority: WARNING
- rule: G comm out
  desc: an event gate on comm names that must not be
  condition: >
    evt.type = rename and not proc.name in (fnx-comm-a, python3) and evt.rawres >= 0
    and evt.arg.oldpath contains fnx-g
  output: rename by %proc.name %evt.arg.oldpath %proc.cmdline
  priority: WARNING
- rule: G argument
  desc: an event gate on an argument's values (a 32-bit register)
  condition: evt.type = setresuid and evt.rawarg.ruid in (4321, 4322) and evt.rawres = 0
  output: setresuid ruid %evt.rawarg.ruid %proc.cmdline
  priority: WARNING
- rule: G path suffix
  desc: an event gate on the end of a path (a deleted file's name)
  condition: evt.type = unlink and evt.rawres = 0 and (evt.arg.path endswith .fnxhist or evt.arg.name endswith .fnxhist)
  output: unlink %evt.arg.path %proc.cmdline
  priority: WARNING
- rule: G path prefix
  desc: an event gate on the start of a path (the first string of renameat and renameat2)
  condition: evt.type in (renameat, renameat2) and evt.arg.oldpath startswith {base}/pg/pre/
  output: rename from %evt.arg.oldpath to %evt.arg.newpath %proc.cmdline
  priority: WARNING
- rule: G path second string
  desc: an event gate on the second string of a syscall (linkat's newpath, argument 3)
  condition: evt.type = linkat and evt.arg.newpath pmatch ({base}/pg/lnk)
  output: link to %evt.arg.newpath %proc.cmdline
  priority: WARNING
- rule: G path string
  desc: an event gate on a plain string as passed (a symlink's target)
  condition: evt.type in (symlink, symlinkat) and evt.arg.target in ({base}/pg/secret, /etc/fnx-secret)
  output: symlink %evt.arg.target at %evt.arg.linkpath %proc.cmdline
  priority: WARNING
- rule: G bits
  desc: an event gate on an argument's bits (fchmodat's mode, tested by bit name)
  condition: >
    evt.type = fchmodat and evt.rawres = 0 and (evt.arg.mode contains S_ISUID or evt.arg.mode contains S_ISVTX)
  output: fchmodat %evt.arg.mode %evt.arg.filename %proc.cmdline
  priority: WARNING
- rule: K barrier
  desc: the barrier
  condition: opened and fd.name startswith /etc/shadow
  output: barrier %fd.name %proc.cmdline
  priority: WARNING
"""


OPEN_CODE = "import os, sys; os.close(os.open(sys.argv[1], int(sys.argv[2]), 0o600))"
# argv: base, comm, uid, token: the gated syscalls, each succeeding and failing, under that comm and real uid
GATE_CODE = """
import os, sys
base, comm, uid = sys.argv[1], sys.argv[2], int(sys.argv[3])
with open('/proc/self/comm', 'w') as f:
    f.write(comm)
os.setresuid(uid, 0, 0)
d = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
name = f'fnx-g-{comm}-{uid}'
path = os.path.join(base, name)
def attempt(call, *args, **kw):
    try:
        call(*args, **kw)
    except OSError:
        pass
attempt(os.mkdir, path)
attempt(os.mkdir, path)
attempt(os.chmod, path, 0o700)
attempt(os.chmod, path + '-missing', 0o700)
attempt(os.rename, path, path + '-r')
attempt(os.rename, path, path + '-r')
attempt(os.rmdir, path + '-r')
attempt(os.rmdir, path + '-r')
attempt(os.mkdir, name + '-at', dir_fd=d)
attempt(os.rmdir, name + '-at', dir_fd=d)
attempt(os.rmdir, name + '-at', dir_fd=d)
"""
# argv: base, token: each path gate hit, missed, and passed unjudged (relative, `//`, `..`, a dirfd); modes with
# and without the bits a rule names
PATH_GATE_CODE = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
base = sys.argv[1] + '/pg'
os.makedirs(base + '/pre', exist_ok=True)
os.makedirs(base + '/lnk', exist_ok=True)
os.chdir(base)
d = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
def attempt(call, *args, **kw):
    try:
        call(*args, **kw)
    except OSError:
        pass
def touch(*names):
    for name in names:
        open(name, 'w').close()
touch('a.fnxhist', 'b.log', 'c.fnxhist', 'd.log', 'e.fnxhist')
attempt(os.unlink, base + '/a.fnxhist')
attempt(os.unlink, base + '/b.log')
attempt(os.unlink, 'c.fnxhist')
attempt(os.unlink, base + '//d.log')
attempt(os.unlink, base + '/lnk/../e.fnxhist')
attempt(os.unlink, base + '/missing.fnxhist')
for src in (base + '/pre/x', base + '/y', 'pre/z', base + '/lnk/../pre/w', base + '/pre//v'):
    touch(src)
    attempt(os.rename, src, src + '-r', src_dir_fd=d, dst_dir_fd=d)
    libc.syscall(316, -100, (src + '-r').encode(), -100, (src + '-s').encode(), 0)
touch('src')
for dst in (base + '/lnk/a', base + '/lnk', base + '/other', 'lnk/b', base + '/pre/../lnk/c'):
    attempt(os.link, 'src', dst, src_dir_fd=d)
for target in (base + '/secret', '/etc/fnx-secret', '/etc/hostname', base + '/./secret', 'secret'):
    attempt(os.symlink, target, 'l-' + str(abs(hash(target))))
    attempt(os.symlink, target, 'm-' + str(abs(hash(target))), dir_fd=d)
touch('mode')
for mode in (0o4755, 0o1777, 0o755, 0o2755, 0o644, 0o6711):
    attempt(os.chmod, 'mode', mode, dir_fd=d)
    attempt(os.chmod, 'missing', mode, dir_fd=d)
"""
CHMOD_CODE = "import os, sys; fd = os.open(sys.argv[1], os.O_RDONLY); os.fchmod(fd, 0o600); os.close(fd)"


def open_as(path: Path | str, flags: int, tok: str, cwd: Path | None = None) -> None:
    run(PY, "-c", OPEN_CODE, str(path), str(flags), tok, cwd=cwd)


def kinds_workload(base: Path, tok: str) -> None:
    """Every kind of atom, hit and missed, with each kind of open, plus opens the filter keeps back."""
    for d in ("pre", "other", "fnx-conf.d", "deep/fnx-trav"):
        (base / d).mkdir(parents=True, exist_ok=True)
    flag_sets = (os.O_RDONLY, os.O_WRONLY, os.O_RDWR, os.O_WRONLY | os.O_TRUNC, os.O_RDONLY | os.O_TRUNC,
                 os.O_WRONLY | os.O_CREAT | os.O_APPEND)  # fmt: skip
    names = ("pre/a", "other/a", "other/fnx-secret", "pre/fnx-key", "other/x.fnxlog", "other/x.fnxlogs",
             "fnx-conf.d/a.conf", "fnx-conf.d/a.confx", "other/fnx-rw", "deep/fnx-trav/t")  # fmt: skip
    for name in names:
        (base / name).write_text("x")
    for name in names:
        for flags in flag_sets:
            open_as(base / name, flags, tok)
    # the same files through unclean and relative paths, which the kernel always emits
    open_as(f"{base}/other/../pre/a", os.O_RDONLY, tok)
    open_as(f"{base}/deep/../deep/fnx-trav/t", os.O_RDONLY, tok)
    open_as(f"{base}//other/fnx-secret", os.O_RDONLY, tok)
    open_as("fnx-secret", os.O_RDONLY, tok, cwd=base / "other")
    open_as("../pre/a", os.O_RDONLY, tok, cwd=base / "other")
    # a later event on fds: one kept back (no rule can match it), one delivered
    (base / "other" / "fnx-chmod").write_text("x")
    run(PY, "-c", CHMOD_CODE, str(base / "other" / "fnx-chmod"), tok)
    run(PY, "-c", CHMOD_CODE, str(base / "other" / "a"), tok)
    run(PY, "-c", FD_CODE, tok)
    # the event gates: every kind, kept and kept back
    gates = base / "gates"
    gates.mkdir(mode=0o777)
    gates.chmod(0o777)  # (the umask)
    for comm in ("fnx-comm-a", "fnx-comm-b", "fnx-comm-c"):
        for uid in (0, 4321, 4323):
            run(PY, "-c", GATE_CODE, str(gates), comm, str(uid), tok)
    run(PY, "-c", PATH_GATE_CODE, str(base), tok)


def test_every_predicate_kind_gives_the_same_alerts_filter_on_and_off(tmp_path: Path) -> None:
    require_root("the prefilter end-to-end test")
    tok = "fnx" + uuid.uuid4().hex[:10]
    base = Path(f"/tmp/fnx-kinds-{tok}")  # /tmp, not tmp_path: a short path the rules name
    base.mkdir()
    rules = tmp_path / "kinds.yaml"
    rules.write_text(KINDS_RULES.replace("{base}", str(base)))
    try:
        with daemon_pair(tmp_path / "d", rules) as (off_dir, on_dir):
            kinds_workload(base, tok)
            off = compare(off_dir, on_dir, tok)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    fired = {rule for rule, _, _ in off}
    assert fired >= {"K prefix read", "K base name", "K suffix truncated", "K glob end written", "K traversal",
                     "K read and write", "K later fd event", "G result zero", "G failed", "G uid in",
                     "G uid out and result", "G comm in", "G comm out", "G argument", "G path suffix",
                     "G path prefix", "G path second string", "G path string", "G bits"}, fired  # fmt: skip


def upstream_workload(base: Path, tok: str) -> None:
    """Actions the upstream stable rules look for, and benign ones the filter keeps back."""
    run("cat", "/etc/shadow", f"/nonexistent-{tok}")
    run("cat", "/etc/sudoers", f"/nonexistent-{tok}")
    # Directory traversal monitored file read: two ../ in the path as passed, below /etc, parent not a shell
    run(PY, "-c", "import sys; open(sys.argv[1]).close()", "/etc/../etc/../etc/passwd", tok)
    run(PY, "-c", "import sys; open(sys.argv[1]).close()", "/etc/ssh/../../etc/../etc/hostname", tok)
    # Clear Log Activities: a log file by base name, truncated; and the same without O_TRUNC
    logs = base / "logs"
    logs.mkdir()
    for name in ("syslog", "auth.log", "mysqld.log", "app.log"):
        (logs / name).write_text("x\n")
        open_as(logs / name, os.O_WRONLY | os.O_TRUNC, tok)
        open_as(logs / name, os.O_WRONLY | os.O_APPEND, tok)
        open_as(logs / name, os.O_RDONLY, tok)
    # release_agent written on the host (the rule wants a container: no alert either way)
    open_as(base / "release_agent", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, tok)
    run("ln", "-s", "/etc/shadow", str(base / f"link-{tok}"))
    # symlinks and hardlinks the path gates keep back (a target no rule names) and pass unjudged (relative)
    run("ln", "-s", "/etc/hostname", str(base / f"hlink-{tok}"))
    run("ln", "-s", "../../etc/shadow", str(base / f"rlink-{tok}"))
    run("ln", "/etc/shadow", str(base / f"hard-{tok}"))
    run("ln", "/etc/hostname", str(base / f"hhard-{tok}"))
    run(PY, "-c", PTRACE_CODE, tok)
    run("find", str(base), "-name", "id_rsa", "-o", "-name", tok)
    shm = Path(f"/dev/shm/fnx-true-{tok}")
    try:
        shutil.copy("/bin/true", shm)
        run(str(shm), tok)
    finally:
        shm.unlink(missing_ok=True)
    # Benign opens kept back, and later syscalls on such an fd.
    run("cat", "/etc/hostname", "/etc/os-release", f"/nonexistent-{tok}")
    run(PY, "-c", FD_CODE, tok)
    run(PY, "-c", WRITE_CODE, str(base / "benign"), str(os.O_WRONLY | os.O_CREAT | os.O_TRUNC), tok)


@pytest.mark.upstream
def test_upstream_stable_rules_give_the_same_alerts_filter_on_and_off(tmp_path: Path) -> None:
    require_root("the prefilter end-to-end test")
    rules = shared_path("upstream-rules", "current", "falco_rules.yaml")
    tok = "fnx" + uuid.uuid4().hex[:10]
    base = Path(f"/tmp/fnx-upstream-{tok}")
    base.mkdir()
    try:
        with daemon_pair(tmp_path / "d", rules) as (off_dir, on_dir):
            upstream_workload(base, tok)
            off = compare(off_dir, on_dir, tok)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    fired = {rule for rule, _, _ in off}
    assert fired >= {"Read sensitive file untrusted", "Directory traversal monitored file read",
                     "Clear Log Activities", "Create Symlink Over Sensitive Files", "PTRACE attached to process",
                     "Search Private Keys or Passwords", "Create Hardlink Over Sensitive Files"}, fired  # fmt: skip
