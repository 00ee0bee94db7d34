"""Copy the best ``ours`` checkpoint of each (track, scale) of a study and its twin's into the repository.

    python scripts/ship_study_checkpoints.py [--results docs/results/study.json]
                                            [--out docs/results/checkpoints] [--seed N] [--scale S ...]

For every (track, scale) of ``study.json`` with a binary ``ours`` variant paired with a scored twin, the
best variant (:func:`binsr.study.report.best_variant`, the one RESULTS.md names) at seed ``--seed`` (by
default the lowest seed whose binary run and twin are both in ``study.json``) and its twin are copied to
``--out`` as ``<track>_x<scale>_ours_<variant>_<bin|fp>_s<seed>.safetensors``,
and ``index.json`` lists each file with its study record's key and scores (copied from ``study.json``);
files an earlier index listed and this one does not are removed. ``--scale`` ships those scales only and
keeps the earlier index's entries (and files) of the others as they are. A run trained on another machine (its
checkpoint is not in the runs folder) is copied from the file an earlier index shipped of it, if any
(a twin shared by several variants); otherwise nothing is changed and the script exits with 1.
``binsr eval --model <file> --scale S --data <set>`` reproduces those scores; tests/test_study_checkpoints.py
checks it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from binsr.fileio import atomic_write_bytes
from binsr.study import load_results
from binsr.study.report import best_variant
from binsr.study.runner import RECORD_FIELDS, SHIPPED_INDEX, record_key, shipped_runs


def paired_seed(by_key: dict[tuple, dict], group: tuple, iterations: int) -> int:
    """The lowest seed of ``group`` (track, scale, model, variant) at ``iterations`` whose binary run and
    twin are both recorded (the lowest seed with either when none has both)."""
    seeds = sorted({key[5] for key in by_key if key[:4] == group and key[6] == iterations})
    paired = [s for s in seeds if all((*group, b, s, iterations) in by_key for b in (True, False))]
    return (paired or seeds)[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path("docs/results/study.json"))
    parser.add_argument("--out", type=Path, default=Path("docs/results/checkpoints"))
    parser.add_argument("--seed", type=int, help="default: the lowest seed with both runs recorded")
    parser.add_argument(
        "--scale", type=int, nargs="+", help="ship these scales only; keep the earlier index's other scales"
    )
    args = parser.parse_args()
    records = load_results(args.results)["runs"]
    by_key = {record_key(r): r for r in records}
    args.out.mkdir(parents=True, exist_ok=True)
    index_file = args.out / SHIPPED_INDEX
    previous = json.loads(index_file.read_text(encoding="utf-8")) if index_file.is_file() else []
    shipped = shipped_runs(previous, by_key, args.out)
    copies: list[tuple[Path, str, dict]] = []
    kept = [entry for entry in previous if args.scale and entry["scale"] not in args.scale]
    for track, scale in sorted({(r["track"], r["scale"]) for r in records}):
        if args.scale and scale not in args.scale:
            continue
        best = best_variant(records, track, scale)
        if best is None:
            continue
        (_, _, model, variant, _, iterations), _ = best
        group = (track, scale, model, variant)
        seed = args.seed if args.seed is not None else paired_seed(by_key, group, iterations)
        for binary in (True, False):
            wanted = (*group, binary, seed, iterations)
            record = by_key.get(wanted)
            if record is None:
                print(f"no seed-{seed} record for {wanted}; skipped")
                continue
            name = f"{track}_x{scale}_{model}_{variant}_{'bin' if binary else 'fp'}_s{seed}.safetensors"
            source = args.results.parent / record["checkpoint"]
            if not source.is_file():  # trained elsewhere: an earlier index may have shipped the same run
                source = shipped.get(str(record.get("run")), source)
            if not source.is_file():
                print(f"error: {name}: {source} is not here (trained on another machine); nothing changed")
                return 1
            copies.append((source, name, record))
    index = list(kept)
    for source, name, record in copies:
        if source.resolve() != (args.out / name).resolve():
            atomic_write_bytes(args.out / name, source.read_bytes())
        index.append({"file": name, **{k: record[k] for k in RECORD_FIELDS}, "scores": record["scores"]})
        scores = ", ".join(f"{k} {v['psnr']:.3f}" for k, v in record["scores"].items())
        print(f"{name}: {scores}")
    text = json.dumps(index, indent=1) + "\n"
    atomic_write_bytes(index_file, text.encode("utf-8"))
    for stale in {entry["file"] for entry in previous} - {entry["file"] for entry in index}:
        (args.out / stale).unlink(missing_ok=True)
        print(f"{stale}: no longer the best, removed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
