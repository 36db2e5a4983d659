"""The sensor and the engine read one syscall parameter table: what the sensor sends is what the engine names.

The engine renders `evt.arg.*`/`evt.args` from Falco's parameter list per event type; the sensor fills
`Event.args` from the same list. A parameter the sensor sends under a name the engine does not know for that
event shows up as a stray trailing `name=value` in `evt.args` and as a missing `evt.arg.<falco name>`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from falconet.rules import syscalls as rsc
from falconet.sensor import record as r
from falconet.sensor import syscalls as sc

from .test_enricher import _enricher, _rec


@pytest.mark.parametrize("name", sorted(sc.BY_NAME))
def test_every_parameter_the_sensor_sends_is_one_the_engine_names(name: str) -> None:
    spec = sc.BY_NAME[name]
    engine = [pname for pname, _kind in rsc.PARAMS[name]]
    sent = [pname for pname, _src in spec.params]
    assert [p for p in sent if p not in engine] == [], f"{name}: the engine's parameters are {engine}"
    # ...in the engine's (Falco's) order, so evt.args and evt.arg[N] agree with what was sent.
    assert sent == [p for p in engine if p in sent]


def test_userfaultfd_result_is_res_as_falco_names_it(tmp_path: Path) -> None:
    e = _enricher(tmp_path)
    ev = e.feed(_rec(r.REC_SYSCALL, 50, nr=sc.BY_NAME["userfaultfd"].nr, res=3, args=(0,)))
    assert ev is not None and ev.type == "userfaultfd"
    assert ev.args == {"res": 3, "flags": 0}
    assert rsc.render_args(ev) == "res=3 flags=0(O_RDONLY)"
    assert ev.fd is not None and (ev.fd.num, ev.fd.type) == (3, "userfaultfd")


def test_x86_64_numbers_have_one_home() -> None:
    # Every traced syscall has its number from the one architecture table, and no number is used twice.
    assert {s.name: s.nr for s in sc.BY_NAME.values()} == {n: sc.X86_64_NR[n] for n in sc.BY_NAME}
    assert len(set(sc.X86_64_NR.values())) == len(sc.X86_64_NR)


UNISTD_64 = Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h")  # linux-libc-dev (build-essential)


def test_x86_64_numbers_match_the_kernel_uapi_header() -> None:
    if not UNISTD_64.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{UNISTD_64} is missing; `make setup` installs it (build-essential)")
        pytest.skip(f"{UNISTD_64} is missing here (linux-libc-dev)")
    header = dict(re.findall(r"#define __NR_(\w+) (\d+)", UNISTD_64.read_text()))
    assert {n: nr for n, nr in sc.X86_64_NR.items() if int(header[n]) != nr} == {}
