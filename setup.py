"""The one compiled part: the ptrace driver's stop loop (sensor/ptrace/stoploop.c). Everything else is in
pyproject.toml. The extension is optional: where it cannot be built (no compiler or Python headers) the
pure-Python tracer runs instead, slower (tests/ptrace check it is built wherever CI runs)."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("falconet.sensor.ptrace._stoploop", ["sensor/ptrace/stoploop.c"],
                             depends=["sensor/ptrace/stoploop_place.h", "sensor/ptrace/stoploop_fds.h"],
                             extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
                             optional=True)])
