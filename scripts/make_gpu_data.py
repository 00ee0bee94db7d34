"""The images a lent GPU session needs, as lossless WebP, small enough for the device's ``carry``.

    python scripts/make_gpu_data.py                 # ../shared/data/{T91,BSD200,Set5,Set14} -> .gpu_data/

The device copies the working tree (64 MiB in all) and cannot reach ``../shared``; the PNGs of the
training sets and the first two evaluation sets are 65 MB, their lossless WebP copies about 44 MB.
Every image is decoded again, as binsr reads it (:func:`binsr.data.io.read_image`), and compared
pixel for pixel and in shape with its source before it is kept; the output is written atomically, so
an interrupted run leaves no half-written image. A gray image is copied as it is: WebP has no gray
mode, and its RGB copy would be scored on its luma instead of its gray values (the protocol's rule
for gray images, docs/PROTOCOL.md), 1.3 dB apart on Set14's ``bridge`` (docs/STUDY.md, session 12).
BSD100 is left out by default: ``gpu_session.py --eval-sets Set5 Set14`` scores it here afterwards
(``binsr study studies/cpu.yaml --score-only``). WebP's ``method=4`` (about 1 s per BSD200 image on
this CPU) gives files within 0.1 % of ``method=6``'s, which takes ten times as long; images already
converted are kept, so an interrupted run goes on where it stopped.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
from binsr.data.io import IMAGE_SUFFIXES, read_image  # noqa: E402
from binsr.fileio import atomic_write_bytes  # noqa: E402

DEFAULT_SETS = ("T91", "BSD200", "Set5", "Set14")


def lossless_webp(source: Path, pixels: np.ndarray) -> bytes:
    """``source`` (an RGB image whose pixels binsr reads as ``pixels``) encoded as lossless WebP,
    checked to read back as the same array."""
    with Image.open(source) as image:
        image.load()
        buffer = io.BytesIO()
        image.save(buffer, format="WEBP", lossless=True, quality=100, method=4, exact=True)
    data = buffer.getvalue()
    with tempfile.TemporaryDirectory() as folder:
        check = Path(folder) / "check.webp"
        check.write_bytes(data)
        again = read_image(check)
    if again.shape != pixels.shape or not np.array_equal(again, pixels):
        raise SystemExit(f"make_gpu_data: {source} does not survive lossless WebP")
    return data


def convert(data: Path, out: Path, sets: list[str], progress: bool = True) -> int:
    """Write ``out/<set>/<stem>.webp`` for every image of ``data/<set>`` that lacks one (a gray image:
    a copy of its file), removing a copy with another suffix (an older WebP of a gray image); returns
    the bytes under ``out``."""
    sources = []
    for name in sets:
        folder = data / name
        if not folder.is_dir():
            raise SystemExit(f"make_gpu_data: no folder {folder}")
        sources += [p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
    total = 0
    for source in tqdm(sources, desc="lossless WebP", unit="image", disable=not progress):
        pixels = read_image(source)
        gray = pixels.ndim == 2  # WebP has no gray mode: it would come back RGB
        folder = out / source.parent.name
        target = folder / f"{source.stem}{source.suffix.lower() if gray else '.webp'}"
        for stale in folder.glob(f"{source.stem}.*") if folder.is_dir() else ():
            if stale != target:
                stale.unlink()
        if not target.is_file():  # written atomically: one that exists is whole
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(target, source.read_bytes() if gray else lossless_webp(source, pixels))
        total += target.stat().st_size
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=REPO / ".gpu_data")
    parser.add_argument("--sets", nargs="+", default=list(DEFAULT_SETS))
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    total = convert(args.data, args.out, args.sets, progress=not args.no_progress)
    print(f"wrote {total / 2**20:.1f} MiB of lossless WebP under {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
