"""Builds tapes_shm and its C extension with the system's setuptools.

    python3 setup.py build_ext --inplace        # for use from this directory
    python3 setup.py build --build-base DIR     # what tests/python_test.go does

Needs a C compiler, the CPython headers and setuptools (Debian: apt-get
install gcc python3-dev python3-setuptools); nothing is downloaded.
"""
import os
import sys
import sysconfig

try:
    from setuptools import Extension, setup
except ImportError:
    sys.exit(
        "tapes_shm: setuptools is missing; it is needed to build the C extension "
        "(Debian: apt-get install python3-setuptools)"
    )

include = sysconfig.get_paths()["include"]
if not os.path.exists(os.path.join(include, "Python.h")):
    sys.exit(
        "tapes_shm: cannot build the C extension: Python.h is not in %s; install the CPython headers "
        "for %s (Debian: apt-get install python3-dev)" % (include, sys.executable)
    )
if not sys.platform.startswith("linux") or sys.byteorder != "little":
    sys.exit("tapes_shm: the shm file needs Linux on a little-endian machine (futex, /proc, native stores)")

setup(
    name="tapes_shm",
    version="0.1.0",
    description="Record metrics from Python worker processes into a tapes shm file (drained by tapes-host)",
    license="Apache-2.0",
    packages=["tapes_shm"],
    ext_modules=[
        Extension(
            "tapes_shm._native",
            sources=["tapes_shm/_native.c"],
            extra_compile_args=["-O2", "-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter",
                                "-Wno-missing-field-initializers", "-Wno-cast-function-type", "-Werror"],
        )
    ],
    python_requires=">=3.8",
    zip_safe=False,
)
