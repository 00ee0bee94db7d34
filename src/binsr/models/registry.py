"""The model registry: models are registered by small entry functions under a name.

``create_model(name, scale=4, **kwargs)`` calls the entry function registered as ``name``;
``list_models(pattern)`` lists names, optionally filtered by a shell-style pattern.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable

from torch import nn

from binsr.errors import BinsrError

ModelFactory = Callable[..., nn.Module]

_MODELS: dict[str, ModelFactory] = {}
SUPPORTED_SCALES: tuple[int, ...] = (2, 3, 4)


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator registering ``factory(scale=..., **kwargs)`` under ``name``."""

    def decorate(factory: ModelFactory) -> ModelFactory:
        if name in _MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        _MODELS[name] = factory
        return factory

    return decorate


def list_models(pattern: str = "*") -> list[str]:
    """Sorted names of the registered models matching the shell-style ``pattern``."""
    return sorted(name for name in _MODELS if fnmatch.fnmatch(name, pattern))


def create_model(name: str, scale: int = 4, **kwargs: object) -> nn.Module:
    """Build the model registered as ``name`` for upscaling factor ``scale``.

    Raises :class:`BinsrError` for an unknown name or an unsupported scale.
    """
    if name not in _MODELS:
        raise BinsrError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    if scale not in SUPPORTED_SCALES:
        raise BinsrError(f"unsupported scale {scale!r} for model {name!r}; use one of {SUPPORTED_SCALES}")
    return _MODELS[name](scale=scale, **kwargs)


def model_factory(name: str) -> ModelFactory:
    """The entry function registered as ``name`` (for introspection: docstrings, defaults)."""
    if name not in _MODELS:
        raise BinsrError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    return _MODELS[name]
