"""Builds the optional fused CPU kernel (src/l2rebound/_kernel.cc) against the XLA FFI headers that jaxlib
ships. Everything else is declared in pyproject.toml. If the build fails (no C++17 compiler), the package
installs without it and trains through XLA alone (``l2rebound.kernel.built()`` is then False). The kernel is
compiled for the installing machine's CPU (-march=native): install from source on the machine that runs it."""

import os

import jaxlib
from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "l2rebound._kernel",
            ["src/l2rebound/_kernel.cc"],
            include_dirs=[os.path.join(os.path.dirname(jaxlib.__file__), "include")],
            extra_compile_args=["-std=c++17", "-O3", "-march=native", "-ffp-contract=fast", "-fno-math-errno"],
            language="c++",
            optional=True,
        )
    ]
)
