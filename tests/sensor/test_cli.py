"""`falconet capture` arguments and `--ebpf` (the final program, with the BTF offsets as -D flags)."""

from __future__ import annotations

import pytest

from falconet.sensor.btf import BTF, kernel_offsets
from falconet.server.cli import main


def test_ebpf_prints_the_program_with_its_cflags(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["capture", "--ebpf", "--ringbuf-bytes", str(1 << 20)]) == 0
    out = capsys.readouterr().out
    first, _, program = out.partition("\n")
    assert first.startswith("// cflags: -D")
    offsets = kernel_offsets(BTF.load())
    assert f"-DOFF_TASK_TGID={offsets['OFF_TASK_TGID']}" in first.split()
    assert "-DRINGBUF_PAGES=256" in first.split()
    assert "RAW_TRACEPOINT_PROBE(sys_exit)" in program
    assert "OFF_TASK_TGID" in program and "#define OFF_" not in program  # offsets come only as flags


def test_capture_needs_an_output_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["capture"]) == 2
    assert "-w FILE is required" in capsys.readouterr().err


def test_bad_ring_buffer_size_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["capture", "-w", "/dev/null", "--ringbuf-bytes", "5000"]) == 1
    assert "power of two" in capsys.readouterr().err


def test_public_surface() -> None:
    import falconet.sensor as pkg

    assert sorted(pkg.__all__) == ["Enricher", "Sensor", "SensorConfig", "SensorError", "SensorStats", "program_text"]
    assert all(hasattr(pkg, name) for name in pkg.__all__)


def test_import_does_not_need_bcc() -> None:
    import subprocess
    import sys

    code = "import sys; sys.modules['bcc'] = None; import falconet.sensor, falconet.sensor.cli; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr
