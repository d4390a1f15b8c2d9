"""Builds native/ (the C extension ``neoarray._vmem``, Linux only); the rest of the
project's metadata is in pyproject.toml.  Without a C compiler, or off Linux, the
extension is skipped and ``A.mapped()`` says why (:mod:`neoarray.vm`)."""
import sys

from setuptools import Extension, setup

ext_modules = []
if sys.platform.startswith("linux"):
    ext_modules.append(Extension(
        "neoarray._vmem", sources=["native/vmem.c"],
        extra_compile_args=["-O2", "-std=gnu11", "-Wall", "-Wno-unused-parameter",
                            "-Wno-missing-field-initializers"],
        optional=True))

setup(ext_modules=ext_modules)
