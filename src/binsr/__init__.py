"""binsr: binary (1-bit) neural networks for image super-resolution.

The front door for models is :func:`create_model` / :func:`list_models`; the evaluation protocol lives in
:mod:`binsr.metrics` and :mod:`binsr.data`.
"""

from binsr.models import create_model, list_models

__version__ = "0.1.0"

__all__ = ["__version__", "create_model", "list_models"]
