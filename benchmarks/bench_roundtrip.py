"""The headline round trip (issue 13): a study's validation cells on SYNTHETIC smears, prepared, classified.

    python benchmarks/bench_roundtrip.py [--artifacts artifacts] [--study demo] [--cells N] [--far N] [--seed 0]

Each validation cell is cut out of its black frame with its true mask, laid on a generated smear with red cells at
the demo's scale, in a stain of the demo's family, the whole crop drawn at a known factor in [0.5, 2] of C-NMC's
scale; then prepared with no stated scale (the scale is found from the red cells) and classified by every model of
the study, as is the original frame (cnmc_core/roundtrip.py). `--far` more crops in a stain far from the demo's
check that the stain is normalised. Prints the four figures, each with its unit and N, then the same as JSON on the
last line; exits 1 when a goal (roundtrip.GOALS) is missed, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifacts", default="artifacts", help="artifacts root (default: artifacts)")
    parser.add_argument("--study", default="demo", help="study name (default: demo)")
    parser.add_argument("--cells", type=int, default=None, help="validation cells to take (default: all)")
    parser.add_argument("--far", type=int, default=20, help="extra crops in a far stain (default 20; 0: none)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--csv", default=None, help="also write one row per cell to this CSV")
    args = parser.parse_args(argv)
    if (args.cells is not None and args.cells < 2) or args.far < 0:
        parser.error("--cells must be at least 2 (both classes) and --far at least 0")

    from cnmc_core import roundtrip
    from cnmc_core.predict import Predictor
    from cnmc_core.store import StudyStore

    store = StudyStore(args.artifacts, args.study)
    try:
        data_root, cells = roundtrip.validation_cells(store, args.cells, args.seed)
        predictor = Predictor.load(store)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    done = roundtrip.run(predictor, data_root, cells, args.seed,
                         progress=lambda i, n: print(f"\r{i}/{n} cells", end="", file=sys.stderr, flush=True))
    far = []
    if args.far:
        far_cells = cells.sample(min(args.far, len(cells)), random_state=args.seed).reset_index(drop=True)
        far = roundtrip.run(predictor, data_root, far_cells, args.seed + 1, stains=("far",))
    print(file=sys.stderr)
    result = roundtrip.figures(done, far)
    result.update({"study": args.study, "models": list(predictor.models), "seed": args.seed,
                   "unavailable": sorted(predictor.broken), "seconds": round(time.perf_counter() - started, 1)})
    if args.csv:
        _write_csv(args.csv, done + far)
    _print(result)
    missed = roundtrip.goals_missed(result)
    for line in missed:
        print(f"goal missed: {line}")
    print(json.dumps(result))
    return 1 if missed else 0


def _print(r: dict) -> None:
    auc = r["auc"]
    print(f"round trip of study {r['study']!r} ({len(r['models'])} models; SYNTHETIC crops), {r['crops']} crops of "
          f"one validation cell each, factors 0.5-2, stains of the demo's family, {r['seconds']} s")
    print(f"(a) scale from red cells within 10% of the truth: {r['scale_within']:.1%} of {r['crops']} crops "
          f"(found for {r['scale_found']:.1%}; where found, median error {r['scale_error_median']:.1%}, max "
          f"{r['scale_error_max']:.1%}); one cell found in {r['one_cell_found']:.1%}, no frame for {r['no_frame']}")
    print(f"(b) P(ALL) within 0.1 of the original frame's, share of {r['crops']} cells (median |difference|); "
          "control: the original frame only mirrored")
    for key, share in r["p_all_within"].items():
        print(f"      {key:16s} {share:6.1%}   ({r['p_all_median_difference'][key]:.3f})   "
              f"mirrored: {r['p_all_within_mirrored'][key]:6.1%}")
    if auc["difference"] is not None:
        print(f"(c) ensemble ROC AUC, {auc['n']} cells ({auc['n_all']} ALL, {auc['n_hem']} HEM): original frames "
              f"{auc['original_same_cells']:.3f}, prepared crops {auc['prepared']:.3f}, difference "
              f"{auc['difference']:.3f}")
        ci = auc.get("difference_intervals") or {}
        names = {"cell": f"by cell ({ci.get('n_cells')} cells)",
                 "subject": f"by patient ({ci.get('n_subjects')} patients)"}
        parts = [f"{names[u]} [{ci[u][0]:+.3f}, {ci[u][1]:+.3f}]" for u in names if u in ci]
        if parts:
            print(f"    prepared - original, 95% paired class-stratified bootstrap interval ({ci['replicates']} "
                  f"replicates): " + "; ".join(parts))
    else:
        print("(c) ensemble ROC AUC: needs cells of both classes")
    print(f"(d) image half of the OOD check passed by {r['ood_image_pass']:.1%} of {r['ood_n']} prepared frames "
          f"(demo's stain family)" + (f"; reasons: {', '.join(r['ood_reasons'])}" if r["ood_reasons"] else ""))
    far = r.get("far")
    if far:
        print(f"    far stain: {far['crops']} crops, normalised {far['normalised']:.1%} (stain distance median "
              f"{far['stain_before_median']:.2f} before, {far['stain_after_median']:.2f} after; family <= 3.5), "
              f"image half passed by {far['ood_image_pass']:.1%}")


def _write_csv(path: str, cells: list) -> None:
    import pandas as pd

    rows = []
    for c in cells:
        row = {"path": c.path, "label": c.label, "factor": round(c.factor, 4), "stain": c.stain,
               "background": c.background, "true_um_per_px": c.true_um_per_px, "found_um_per_px": c.found_um_per_px,
               "scale_source": c.scale_source, "cells_found": c.cells_found, "error": c.error,
               "stain_before": c.stain_before, "stain_after": c.stain_after, "ood_image": "; ".join(c.image_reasons)}
        row.update({f"original {k}": v for k, v in c.original.items()})
        row.update({f"prepared {k}": v for k, v in c.prepared.items()})
        row.update({f"mirrored {k}": v for k, v in c.mirrored.items()})
        rows.append(row)
    pd.DataFrame(rows).to_csv(path, index=False)


if __name__ == "__main__":
    raise SystemExit(main())
