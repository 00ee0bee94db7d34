"""Data: MATLAB-exact bicubic resizing, image I/O and evaluation sets.

The main names are re-exported here; see :mod:`binsr.data.imresize`, :mod:`binsr.data.io` and
:mod:`binsr.data.datasets` for the conventions.
"""

from binsr.data.datasets import EvalSample, EvalSet, open_eval_set
from binsr.data.imresize import bicubic_downscale_uint8, bicubic_upscale_uint8, imresize
from binsr.data.io import IMAGE_SUFFIXES, list_images, modcrop, read_image, to_tensor, to_uint8, write_image

__all__ = [
    "IMAGE_SUFFIXES",
    "EvalSample",
    "EvalSet",
    "bicubic_downscale_uint8",
    "bicubic_upscale_uint8",
    "imresize",
    "list_images",
    "modcrop",
    "open_eval_set",
    "read_image",
    "to_tensor",
    "to_uint8",
    "write_image",
]
