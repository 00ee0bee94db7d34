"""``binsr compare``: a figure of side-by-side crops (HR, bicubic, full precision, binary) with PSNR/SSIM.

The LR input is made as in evaluation (``modcrop`` + MATLAB bicubic downscaling of the HR image), each
upscaler (``--models``, any value ``binsr eval --model`` accepts) super-resolves it, and the figure
shows the whole HR image with the crop marked, then the same crop of HR and of every result, titled
with the result's PSNR/SSIM over the whole image (Y channel, ``scale`` border pixels cropped).
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np

from binsr.data.imresize import bicubic_downscale_uint8
from binsr.data.io import modcrop, read_image
from binsr.errors import BinsrError
from binsr.fileio import atomic_write_bytes
from binsr.metrics import score_sr

DEFAULT_MODELS = "bicubic,default-fp,default"
LABELS = {"default": "binary (default)", "default-fp": "full precision (default-fp)"}
Crop = tuple[int, int, int, int]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``compare`` subcommand."""
    parser = subparsers.add_parser(
        "compare",
        help="figure of side-by-side crops of several upscalers with PSNR/SSIM",
        description=__doc__.splitlines()[0].split(": ", 1)[1],
    )
    parser.add_argument("image", metavar="IMAGE", type=Path, help="an HR image")
    parser.add_argument("--scale", type=int, choices=(2, 3, 4), required=True, help="upscaling factor")
    parser.add_argument(
        "--models",
        default=DEFAULT_MODELS,
        help=f"comma-separated upscalers: names or .safetensors checkpoints (default: {DEFAULT_MODELS})",
    )
    parser.add_argument(
        "--crop", default="auto", help="HR crop 'x,y,w,h' in pixels, or 'auto' (most detailed region)"
    )
    parser.add_argument(
        "-o", "--output", type=Path, help="output PNG (default: <stem>_compare_x<scale>.png beside IMAGE)"
    )
    parser.set_defaults(func=run)


def parse_crop(text: str, height: int, width: int) -> Crop | None:
    """``'x,y,w,h'`` → a crop checked to lie inside a ``height`` × ``width`` image; ``'auto'`` → ``None``."""
    if text.strip().lower() == "auto":
        return None
    try:
        x, y, w, h = (int(v) for v in text.split(","))
    except ValueError:
        raise BinsrError(f"--crop must be 'x,y,w,h' (integers) or 'auto', got {text!r}") from None
    if w <= 0 or h <= 0 or x < 0 or y < 0 or x + w > width or y + h > height:
        raise BinsrError(f"--crop {text} does not fit inside the {width}x{height} (modcropped) image")
    return x, y, w, h


def auto_crop(hr: np.ndarray, scale: int) -> Crop:
    """A square crop (about a third of the short side) where the HR image has the most gradient energy."""
    gray = hr.astype(np.float64) if hr.ndim == 2 else hr.astype(np.float64).mean(axis=2)
    energy = np.zeros_like(gray)
    energy[:, 1:] += np.abs(np.diff(gray, axis=1))
    energy[1:, :] += np.abs(np.diff(gray, axis=0))
    height, width = gray.shape
    size = min(height, width, max(16 * scale, min(height, width) // 3))
    integral = np.pad(energy.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    step = max(1, size // 8)
    best, crop = -1.0, (0, 0, size, size)
    for y in range(0, height - size + 1, step):
        for x in range(0, width - size + 1, step):
            total = (
                integral[y + size, x + size] - integral[y, x + size] - integral[y + size, x] + integral[y, x]
            )
            if total > best:
                best, crop = total, (x, y, size, size)
    return crop


def compare_figure(hr: np.ndarray, panels: list[tuple[str, np.ndarray]], crop: Crop, title: str) -> bytes:
    """PNG bytes: the whole HR image with ``crop`` marked, then ``crop`` of HR and of each panel image."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    x, y, w, h = crop
    images = [("whole image", hr), ("HR", hr[y : y + h, x : x + w])]
    images += [(label, img[y : y + h, x : x + w]) for label, img in panels]
    figure = Figure(figsize=(2.6 * len(images), 3.2), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(images), squeeze=False)[0]
    for ax, (label, img) in zip(axes, images, strict=True):
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(label, fontsize=9)
        ax.set_axis_off()
    axes[0].add_patch(Rectangle((x - 0.5, y - 0.5), w, h, fill=False, edgecolor="red", linewidth=1.5))
    figure.suptitle(title, fontsize=10)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=150)
    return buffer.getvalue()


def run(args: argparse.Namespace) -> int:
    """Upscale the bicubic-downscaled image with every model and write the comparison figure."""
    from binsr.evaluate import resolve_upscaler

    image: Path = args.image
    output: Path = args.output or image.with_name(f"{image.stem}_compare_x{args.scale}.png")
    if output.suffix.lower() != ".png":
        raise BinsrError(f"output {output} must be a .png file")
    if output.exists() and output.resolve() == image.resolve():
        raise BinsrError(f"refusing to overwrite input image {image}; choose another output with -o")
    specs = [spec.strip() for spec in args.models.split(",") if spec.strip()]
    if not specs:
        raise BinsrError("--models is empty")
    hr = np.ascontiguousarray(modcrop(read_image(image), args.scale))
    crop = parse_crop(args.crop, *hr.shape[:2]) or auto_crop(hr, args.scale)
    upscalers = [(spec, resolve_upscaler(spec, args.scale)) for spec in specs]  # all refusals come first
    lr = bicubic_downscale_uint8(hr, args.scale)
    panels = []
    for spec, upscaler in upscalers:
        sr = upscaler(lr, args.scale)
        psnr, ssim = score_sr(sr, hr, args.scale)
        label = Path(spec).stem if spec.endswith(".safetensors") else LABELS.get(spec, spec)
        panels.append((f"{label}\n{psnr:.2f} dB / {ssim:.4f}", sr))
        print(f"{label}: {psnr:.2f} dB / {ssim:.4f}")
    atomic_write_bytes(
        output,
        compare_figure(
            hr, panels, crop, f"{image.name}  x{args.scale}  (PSNR / SSIM of the whole image, Y channel)"
        ),
    )
    print(f"wrote {output}")
    return 0
