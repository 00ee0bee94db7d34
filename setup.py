"""Build script for binsr's C extension only; project metadata lives in pyproject.toml.

``binsr.engine._kernels`` holds the packed XNOR-popcount kernels. It is plain C against the CPython API
(buffer protocol, no numpy headers) and is built without ``-march``: the AVX2 and AVX-512 paths use
per-function ``target`` attributes and are chosen at run time, so one build runs on any x86-64 CPU (and
the x86 code compiles away on other architectures).
"""

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

UNIX_COMPILE_ARGS = [
    "-O3",
    "-std=gnu11",
    "-pthread",
    # One float rounding per operation on every ISA path: the paths stay bit-identical.
    "-ffp-contract=off",
    "-fno-math-errno",
    "-Wall",
    "-Wextra",
    "-Wno-unused-parameter",
]


class BuildExt(build_ext):
    """``build_ext`` choosing flags by compiler family (GCC/Clang vs MSVC)."""

    def build_extensions(self) -> None:
        unix = self.compiler.compiler_type != "msvc"
        for ext in self.extensions:
            ext.extra_compile_args = UNIX_COMPILE_ARGS if unix else ["/O2", "/fp:precise"]
            ext.extra_link_args = ["-pthread"] if unix else []
        super().build_extensions()


setup(
    ext_modules=[
        Extension(
            "binsr.engine._kernels",
            sources=["src/binsr/engine/kernels.c"],
            depends=["src/binsr/engine/kernels.h"],
        )
    ],
    cmdclass={"build_ext": BuildExt},
)
