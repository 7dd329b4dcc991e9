"""The answer a hematologist can act on: when the ensemble's call stands, and when the honest answer is Inconclusive.

The rule (also in docs/preparation.md). A result's headline is "inconclusive", with one reason per condition met, when
1. the image is unlike the training cells: the out-of-distribution check warns (ood.py: the frame's statistics, or
   features far from the training cells' for at least half the models);
2. the models split: fewer than MIN_AGREEMENT of the models vote with the ensemble's call, each at its own threshold
   (2 of 2, 2 of 3, 3 of 4, 5 of 7 agree; 1 of 2, 4 of 7 do not);
3. the ensemble is near its threshold: |ensemble P(ALL) - threshold| < NEAR_THRESHOLD.
Otherwise the headline is the ensemble's call, ALL or HEM. The ensemble's call is kept either way (`call`), and every
model's P(ALL) is reported below the headline: an inconclusive answer hides nothing, it only refuses to round it off.
Research use only, like everything here.

`summarise` makes a result from the models' P(ALL): the ensemble, its label, agreement and uncertainty in words.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

INCONCLUSIVE = "inconclusive"
NEAR_THRESHOLD = 0.1  # ensemble P(ALL) closer than this to its threshold: inconclusive
MIN_AGREEMENT = 2 / 3  # share of the models that must vote with the ensemble's call
NEAR_SCORE = 0.05  # a model's track record beside a score p: its validation cells scored within +-0.05 of p


def votes_with(call: str, predictions: Mapping[str, float], thresholds: Mapping[str, float]) -> int:
    """How many models vote `call` ("ALL" or "HEM"), each at its own threshold (0.5 when none is given)."""
    return sum((p >= thresholds.get(k, 0.5)) == (call == "ALL") for k, p in predictions.items())


def inconclusive_reasons(ensemble: float, threshold: float, votes: int, n_models: int,
                         ood: Mapping | None = None) -> list[str]:
    """The reasons (in words, one per condition of the module's rule) why a result is inconclusive; [] when the
    ensemble's call stands. `votes`: models agreeing with the ensemble's call, of `n_models`; `ood`: the result's
    out-of-distribution check ({"warning": bool, "reasons": [...]}), or None when there is none."""
    if not 0 <= votes <= n_models or n_models < 1:
        raise ValueError(f"votes must be from 0 to n_models (>= 1); got {votes} of {n_models}")
    reasons = []
    if ood and ood.get("warning"):
        reasons.append("the image is unlike the cells the models were trained on (out-of-distribution check)")
    if votes < MIN_AGREEMENT * n_models - 1e-9:
        call = "ALL" if ensemble >= threshold else "HEM"
        reasons.append(f"the models split: {votes} of {n_models} say {call}, {n_models - votes} say "
                       f"{'HEM' if call == 'ALL' else 'ALL'} (a call needs at least two thirds to agree)")
    if abs(ensemble - threshold) < NEAR_THRESHOLD - 1e-9:  # exactly at the margin (in floats) is not near
        reasons.append(f"the ensemble's P(ALL) {ensemble:.3f} is within {NEAR_THRESHOLD} of its threshold "
                       f"{threshold:.2f}")
    return reasons


def apply_rule(result: dict, thresholds: Mapping[str, float], ensemble_threshold: float) -> dict:
    """`result` (summarise's, with its "ood") given the rule: "call" (the ensemble's ALL or HEM),
    "reasons" ([] when conclusive) and "label" ("inconclusive" when any reason holds, else the call). In place."""
    call = result.get("call", result["label"])
    preds = result["predictions"]
    votes = votes_with(call, preds, thresholds)
    reasons = inconclusive_reasons(result["ensemble"], ensemble_threshold, votes, len(preds), result.get("ood"))
    result.update({"call": call, "label": INCONCLUSIVE if reasons else call, "reasons": reasons})
    return result


def batch_summary(results: list[dict]) -> str:
    """One line about several results (cells of one field, or of many files), e.g. "9 of 13 cells called ALL,
    2 HEM, 2 inconclusive; 13 of 13 prepared; 3 of 13 unreliable (unlike the training cells); 1 upload gave no
    result". `results`: the result dicts as `predict` prints them."""
    cells = [r for r in results if "error" not in r]
    failed = len(results) - len(cells)
    n = len(cells)
    if not n:
        return f"no cell classified: {failed} upload(s) gave no result"
    called = {label: sum(r.get("label") == label for r in cells) for label in ("ALL", "HEM", INCONCLUSIVE)}
    prepared = sum(r.get("prepared") is True for r in cells)
    unreliable = sum(bool((r.get("ood") or {}).get("warning")) for r in cells)
    line = (f"{called['ALL']} of {n} cells called ALL, {called['HEM']} HEM, {called[INCONCLUSIVE]} inconclusive; "
            f"{prepared} of {n} prepared; {unreliable} of {n} unreliable (unlike the training cells)")
    return line + (f"; {failed} upload(s) gave no result" if failed else "")


def uncertainty_words(ensemble: float, votes: int, n: int, threshold: float = 0.5) -> str:
    """The uncertainty of a call, spelled out for a person."""
    margin = abs(ensemble - threshold)
    if margin < 0.1:
        words = "uncertain: the ensemble probability is close to the decision threshold"
    elif margin < 0.25:
        words = "moderately confident"
    else:
        words = "confident"
    if votes < n:
        words += f"; the models disagree ({n - votes} of {n} say otherwise)"
    return words


def summarise(
    file: str, preds: dict[str, float], broken: dict | None = None, thresholds: dict | None = None,
    ensemble_threshold: float = 0.5,
) -> dict:
    """Ensemble (mean P(ALL)), label, agreement and uncertainty in words, from per-model probabilities."""
    thresholds = thresholds or {}
    ensemble = float(np.mean(list(preds.values())))
    label = "ALL" if ensemble >= ensemble_threshold else "HEM"
    votes = sum((p >= thresholds.get(k, 0.5)) == (label == "ALL") for k, p in preds.items())
    out = {
        "file": file,
        "predictions": {k: round(v, 6) for k, v in preds.items()},
        "ensemble": round(ensemble, 6),
        "label": label,
        "agreement": f"{votes} of {len(preds)} models: {label}",
        "confidence": round(max(ensemble, 1 - ensemble), 6),
        "uncertainty": uncertainty_words(ensemble, votes, len(preds), ensemble_threshold),
    }
    if broken:
        out["unavailable"] = dict(broken)
    return out
