"""How often each paired test calls a difference real when there is none, on a study's own validation predictions.

    python benchmarks/null_rates.py [--artifacts artifacts] [--study demo] [--draws 200] [--seed 14]

For every pair of the study's models, `--draws` null studies: in each, every validation subject's cells have the
two models' calls swapped (all of its cells together) or not, by a fair coin. The two models are then
exchangeable within each subject, as the null hypothesis says, while the cells of a subject keep the study's
real correlation. Prints the rejection rate at 0.05 of cell-level exact McNemar (the old headline) and of the
subject sign-flip test (the new one). Reads the study; writes nothing. Figures: docs/protocols.md.
"""

from __future__ import annotations

import argparse
import sys
from itertools import combinations
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cnmc_core.stats import mcnemar_exact, subject_sign_flip_test  # noqa: E402
from cnmc_core.store import StudyStore  # noqa: E402

ALPHA = 0.05


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifacts", default="artifacts")
    parser.add_argument("--study", default="demo")
    parser.add_argument("--draws", type=int, default=200, help="null studies per pair (default 200)")
    parser.add_argument("--seed", type=int, default=14)
    args = parser.parse_args()
    store = StudyStore(args.artifacts, args.study).require()
    keys = [k for k in store.read_study()["models"] if store.model_complete(k)]
    preds = {k: store.read_predictions(k).sort_values("path").reset_index(drop=True) for k in keys}
    thresholds = {k: float(store.read_metrics(k).get("threshold", 0.5)) for k in keys}
    base = preds[keys[0]]
    y, subjects = base["label"].to_numpy(), base["subject"].astype(str).to_numpy()
    uniq, index = np.unique(subjects, return_inverse=True)
    rng = np.random.default_rng(args.seed)
    mcnemar = sign_flip = studies = 0
    for a, b in combinations(keys, 2):
        right_a = (preds[a]["prob_all"].to_numpy() >= thresholds[a]) == y
        right_b = (preds[b]["prob_all"].to_numpy() >= thresholds[b]) == y
        for _ in range(args.draws):
            swap = rng.integers(0, 2, len(uniq)).astype(bool)[index]  # one coin per subject
            xa, xb = np.where(swap, right_b, right_a), np.where(swap, right_a, right_b)
            mcnemar += mcnemar_exact(xa, xb)[2] < ALPHA
            sign_flip += subject_sign_flip_test(xa, xb, subjects).p_value < ALPHA
            studies += 1
    pairs = len(keys) * (len(keys) - 1) // 2
    print(f"{studies} null studies ({pairs} pairs x {args.draws}) on {len(uniq)} subjects, {len(y)} cells, "
          f"seed {args.seed}")
    print(f"cell-level exact McNemar: rejection rate at {ALPHA} = {mcnemar / studies:.3f}")
    print(f"subject sign-flip test:   rejection rate at {ALPHA} = {sign_flip / studies:.3f}")


if __name__ == "__main__":
    main()
