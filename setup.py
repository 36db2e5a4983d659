"""The compiled parts: the ptrace driver's stop loop (sensor/ptrace/stoploop.c) and the alert store's record
write (server/storewrite.c). Everything else is in pyproject.toml. Both extensions are optional: where one cannot
be built (no compiler or Python headers) its pure-Python path runs instead, slower (tests/ptrace and
tests/server check they are built wherever CI runs)."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("falconet.sensor.ptrace._stoploop", ["sensor/ptrace/stoploop.c"],
                             depends=["sensor/ptrace/stoploop_place.h", "sensor/ptrace/stoploop_fds.h"],
                             extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
                             optional=True),
                   Extension("falconet.server._storewrite", ["server/storewrite.c"],
                             extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
                             optional=True)])
