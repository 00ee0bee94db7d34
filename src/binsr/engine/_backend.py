"""Loading the compiled kernels and choosing an instruction-set path and a thread count.

The ISA path is, in order of precedence: the ``isa=`` argument of a call, the ``BINSR_ENGINE_ISA``
environment variable (``avx512``, ``avx2``, ``generic`` or ``auto``), else the best path this CPU runs.
Asking for a path the CPU lacks is an error, never a silent fallback, so tests really exercise each path.
"""

from __future__ import annotations

import os
from types import ModuleType

import torch

from binsr.errors import BinsrError

ISA_ENV_VAR = "BINSR_ENGINE_ISA"
ISA_NAMES: tuple[str, ...] = ("generic", "avx2", "avx512")  # codes 0, 1, 2 in the C extension

_kernels: ModuleType | None = None


def kernels() -> ModuleType:
    """The compiled extension ``binsr.engine._kernels``, with a clear error when it was not built."""
    global _kernels
    if _kernels is None:
        try:
            from binsr.engine import _kernels as module
        except ImportError as error:
            raise BinsrError(
                "the binsr C kernels are not built; reinstall the package (pip install -e .) "
                f"or run `python setup.py build_ext --inplace` ({error})"
            ) from error
        _kernels = module
    return _kernels


def available_isas() -> list[str]:
    """ISA paths this CPU can run, best first, e.g. ``["avx512", "avx2", "generic"]``."""
    module = kernels()
    return [name for code, name in reversed(list(enumerate(ISA_NAMES))) if module.isa_supported(code)]


def resolve_isa(isa: str | None = None) -> int:
    """The extension's code for ``isa`` (or ``$BINSR_ENGINE_ISA``, or the best available path)."""
    requested = isa if isa is not None else os.environ.get(ISA_ENV_VAR, "auto")
    name = requested.strip().lower()
    if name in ("", "auto"):
        return ISA_NAMES.index(available_isas()[0])
    if name not in ISA_NAMES:
        raise BinsrError(f"unknown engine ISA {requested!r}; choose one of auto, {', '.join(ISA_NAMES)}")
    if name not in available_isas():
        raise BinsrError(f"engine ISA {name!r} is not supported by this CPU (available: {available_isas()})")
    return ISA_NAMES.index(name)


def resolve_threads(threads: int | None = None) -> int:
    """``threads`` if given (at least 1), else torch's intra-op thread count."""
    if threads is None:
        return max(1, torch.get_num_threads())
    if threads < 1:
        raise BinsrError(f"threads must be >= 1, got {threads}")
    return int(threads)
