"""Copy the best ``ours`` checkpoint of each (track, scale) of a study and its twin's into the repository.

    python scripts/ship_study_checkpoints.py [--results docs/results/study.json]
                                            [--out docs/results/checkpoints] [--seed 0]

For every (track, scale) of ``study.json`` with a binary ``ours`` variant paired with a scored twin, the
best variant (:func:`binsr.study.report.best_variant`, the one RESULTS.md names) at seed ``--seed`` and
its twin are copied to ``--out`` as ``<track>_x<scale>_ours_<variant>_<bin|fp>_s<seed>.safetensors``,
and ``index.json`` lists each file with its study record's key and scores (copied from ``study.json``).
``binsr eval --model <file> --scale S --data <set>`` reproduces those scores; tests/test_study_checkpoints.py
checks it.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from binsr.fileio import atomic_write_bytes
from binsr.study import load_results
from binsr.study.report import best_variant
from binsr.study.runner import RECORD_FIELDS, record_key


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path("docs/results/study.json"))
    parser.add_argument("--out", type=Path, default=Path("docs/results/checkpoints"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    records = load_results(args.results)["runs"]
    args.out.mkdir(parents=True, exist_ok=True)
    index = []
    for track, scale in sorted({(r["track"], r["scale"]) for r in records}):
        best = best_variant(records, track, scale)
        if best is None:
            continue
        (_, _, model, variant, _, iterations), _ = best
        for binary in (True, False):
            wanted = (track, scale, model, variant, binary, args.seed, iterations)
            record = next((r for r in records if record_key(r) == wanted), None)
            if record is None:
                print(f"no seed-{args.seed} record for {wanted}; skipped")
                continue
            name = f"{track}_x{scale}_{model}_{variant}_{'bin' if binary else 'fp'}_s{args.seed}.safetensors"
            shutil.copyfile(args.results.parent / record["checkpoint"], args.out / name)
            index.append({"file": name, **{k: record[k] for k in RECORD_FIELDS}, "scores": record["scores"]})
            scores = ", ".join(f"{k} {v['psnr']:.3f}" for k, v in record["scores"].items())
            print(f"{name}: {scores}")
    text = json.dumps(index, indent=1) + "\n"
    atomic_write_bytes(args.out / "index.json", text.encode("utf-8"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
