"""Two definitions of P(ALL) from the head's two sigmoid scores, compared on a study's validation cells.

    python benchmarks/p_all_definitions.py [--artifacts artifacts] [--study demo]

The paper's head outputs two independent sigmoids, s_HEM and s_ALL. `models.p_all` uses the ratio
s_ALL / (s_HEM + s_ALL); the alternative (s_ALL + 1 - s_HEM) / 2 makes the same decisions at 0.5. For each model
the saved classifier is run on the validation images (as the study saw them) and both are scored: ECE (10
equal-width bins), Brier score and AUC, and the share of cells both call alike. Then whether the ECE difference
is more than noise: a class-stratified subject bootstrap (`stats.bootstrap_weights`, the resampling of the study's
own intervals) of ECE(ratio) - ECE(mean), per model and averaged over the models, with its 95% percentile interval.
Reads the study and its data folder; writes nothing. Figures: docs/statistics.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cnmc_core.evaluation import classification_metrics  # noqa: E402
from cnmc_core.images import iter_batches, preprocess  # noqa: E402
from cnmc_core.models import load_classifier  # noqa: E402
from cnmc_core.registry import get_spec  # noqa: E402
from cnmc_core.stats import N_BOOT, bootstrap_weights  # noqa: E402
from cnmc_core.store import StudyStore  # noqa: E402

BINS = 10  # as evaluation's ECE


def weighted_ece(labels: np.ndarray, prob: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ECE (BINS equal-width bins, as `stats.reliability`) under each row of `weights` (n_boot, n_cells) at once.

    Hand-written because sklearn's calibration_curve takes no sample weights; with one row of ones it equals
    `stats.reliability` (checked below before it is used)."""
    which = np.clip(np.digitize(prob, np.linspace(0, 1, BINS + 1)[1:-1]), 0, BINS - 1)
    onehot = np.eye(BINS)[which]  # (n_cells, BINS)
    n = weights @ onehot
    gap = np.abs(weights @ (onehot * prob[:, None]) - weights @ (onehot * labels[:, None].astype(float)))
    return gap.sum(axis=1) / n.sum(axis=1)  # sum over bins of n_b/N * |mean p - share ALL| = sum |sum p - sum y| / N


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifacts", default="artifacts")
    parser.add_argument("--study", default="demo")
    args = parser.parse_args()
    store = StudyStore(args.artifacts, args.study).require()
    info = store.read_study()
    data_root = Path(info["data"]["path"])
    print(f"{'model':<16}{'ECE ratio':>10}{'ECE mean':>10}{'Brier ratio':>12}{'Brier mean':>11}"
          f"{'AUC ratio':>10}{'AUC mean':>10}{'same calls':>11}{'cells':>7}")
    diffs, subjects, labels = {}, None, None
    for key in info["models"]:
        if not store.model_complete(key):
            continue
        preds = store.read_predictions(key)
        classifier = load_classifier(store.model_file(key, "model.keras"))
        paths = [data_root / p for p in preds["path"]]
        mode = get_spec(key).preprocess
        scores = np.concatenate([classifier.predict_on_batch(preprocess(batch, mode))
                                 for batch in iter_batches(paths, info["input_sizes"][key], 32)])
        s_hem, s_all = scores[:, 0].astype(np.float64), scores[:, 1].astype(np.float64)
        ratio = s_all / np.clip(s_hem + s_all, 1e-12, None)
        mean = (s_all + 1 - s_hem) / 2
        if not np.allclose(ratio, preds["prob_all"], atol=1e-3):  # (a study made with test-time augmentation)
            print(f"{key}: the saved P(ALL) is not the ratio of one view's scores; skipped")
            continue
        y = preds["label"].to_numpy()
        a, b = classification_metrics(y, ratio), classification_metrics(y, mean)
        same = np.mean((ratio >= 0.5) == (mean >= 0.5))
        print(f"{key:<16}{a['ece']:>10.4f}{b['ece']:>10.4f}{a['brier']:>12.4f}{b['brier']:>11.4f}"
              f"{a['roc_auc']:>10.4f}{b['roc_auc']:>10.4f}{same:>11.3f}{len(y):>7}")
        if subjects is None:
            subjects, labels = preds["subject"].to_numpy(), y
            weights = bootstrap_weights(subjects, N_BOOT, seed=0, strata=labels)
            assert np.isclose(weighted_ece(y, ratio, np.ones((1, len(y))))[0], a["ece"])
        elif not (np.array_equal(subjects, preds["subject"].to_numpy()) and np.array_equal(labels, y)):
            print(f"{key}: its validation cells are not the first model's; left out of the bootstrap")
            continue
        diffs[key] = weighted_ece(y, ratio, weights) - weighted_ece(y, mean, weights)
    if not diffs:
        return
    print(f"\nECE(ratio) - ECE(mean), class-stratified subject bootstrap, {N_BOOT} replicates, "
          f"{len(np.unique(subjects))} patients, {len(labels)} cells (positive: the mean is better calibrated)")
    for key, d in {**diffs, "mean of the models": np.mean(list(diffs.values()), axis=0)}.items():
        low, high = np.percentile(d, [2.5, 97.5])
        print(f"{key:<20}{np.median(d):>+9.4f}  95% [{low:+.4f}, {high:+.4f}]  share > 0: {np.mean(d > 0):.2f}")


if __name__ == "__main__":
    main()
