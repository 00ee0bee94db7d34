"""Score the shipped models and print the README table: binary, full-precision twin, gap, FSRCNN.

    python scripts/shipped_scores.py [--data ../shared/data] [--json docs/shipped/scores.json]

Runs the same evaluation as ``binsr eval --model default|default-fp --scale S --data Set5 Set14
BSD100`` for every shipped scale, writes the raw results as JSON and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from binsr.evaluate import evaluate, resolve_upscaler
from binsr.fileio import atomic_write_bytes
from binsr.inference import shipped_models

SETS = ("Set5", "Set14", "BSD100")
# FSRCNN (Dong et al. 2016) as restated in ../shared/docs/anchors.md: the bar issue 4 sets.
FSRCNN = {4: (30.71, 27.59, 26.98), 2: (37.00, 32.63, 31.53)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--json", type=Path, default=Path("docs/shipped/scores.json"))
    args = parser.parse_args()
    folders = [str(args.data / name) for name in SETS]
    scales = sorted(set(shipped_models().get("default", {})) & set(shipped_models().get("default-fp", {})))
    results: dict[str, dict[str, dict[str, list[float]]]] = {}
    for spec in ("default", "default-fp"):
        for scale in scales:
            rows = evaluate(resolve_upscaler(spec, scale), folders, [scale], progress=False)
            for row in rows:
                results.setdefault(spec, {}).setdefault(f"x{scale}", {})[row["dataset"]] = [
                    round(row["psnr"], 4),
                    round(row["ssim"], 6),
                ]
    atomic_write_bytes(args.json, (json.dumps(results, indent=2) + "\n").encode())

    print("| scale | set | binary `default` | twin `default-fp` | gap (dB) | FSRCNN |")
    print("|---|---|---|---|---|---|")
    for scale in scales:
        for i, name in enumerate(SETS):
            b_psnr, b_ssim = results["default"][f"x{scale}"][name]
            f_psnr, f_ssim = results["default-fp"][f"x{scale}"][name]
            bar = FSRCNN[scale][i] if scale in FSRCNN else float("nan")
            print(
                f"| x{scale} | {name} | {b_psnr:.2f} / {b_ssim:.4f} | {f_psnr:.2f} / {f_ssim:.4f} "
                f"| {b_psnr - f_psnr:+.2f} | {bar:.2f} |"
            )


if __name__ == "__main__":
    main()
