"""The headline round trip (issue 13): a study's validation cells laid on synthetic smears, prepared, classified.

SYNTHETIC: every crop made here is generated (`smears.paste_cell`) and labelled so; it tests the preparation and
says nothing about patients' smears.

For each validation frame (one cell centred on black):
1. the cell is cut out with its true mask: its coverage, recovered from the black surround (`smears.frame_alpha`:
   the demo draws each cell with a soft edge over the outer sixth of its radius, premultiplied on black);
2. it is laid on a generated smear background with red cells around it, drawn at the demo's scale, the whole crop
   stained (a stain of the demo's family, `smears.STAINS`, or a far one) and drawn at `factor` times C-NMC's pixel
   scale, log-uniform in [0.5, 2], as another microscope would (`smears.paste_cell`);
3. the crop is prepared with no stated scale (`prepare.prepare`: the scale comes from its red cells) and the frame
   of the cell found nearest the truth is classified by every model of the study (`predict.Predictor`), and so is
   the original frame.
`figures` gives the four figures the issue asks for, each with its unit (crop or cell) and N; `GOALS` are its bars.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from sklearn.metrics import roc_auc_score

from .images import open_image
from .ood import frame_statistics, unusual_frame_reasons
from .predict import Predictor
from .prepare import NORMALISE_TOLERANCE, PrepareOptions, looks_like_cnmc_frame, prepare, stain_distance
from .segment import DARK_LEVEL
from .smears import BACKGROUNDS, FAR_STAIN, STAINS, paste_cell
from .stats import N_BOOT, bootstrap_weights, weighted_auc
from .store import StudyStore

log = logging.getLogger(__name__)

FACTORS = (0.5, 2.0)  # another microscope: the crop is drawn at this many times C-NMC's pixels per micrometre
SCALE_TOLERANCE = 0.1  # the scale found from the red cells is "right" within 10% of the truth
P_ALL_TOLERANCE = 0.1  # a prepared cell's P(ALL) is "the same" within 0.1 of its original frame's
# The bars: shares of crops / cells (>=), and the largest ensemble AUC difference (<=).
GOALS = {"scale_within": 0.9, "p_all_within": 0.9, "auc_difference": 0.03, "ood_image_pass": 0.9}
ENSEMBLE_KEY = "ensemble"


@dataclass
class RoundTripCell:
    """One validation cell's round trip."""

    path: str  # the frame, relative to the study's data folder
    label: int  # 1 = ALL, 0 = HEM (the frame's true class)
    factor: float  # the crop's scale: factor x C-NMC's pixels per micrometre
    stain: str  # a name of smears.STAINS, or "far"
    background: str
    true_um_per_px: float
    found_um_per_px: float | None = None  # measured from the red cells (None: no scale found)
    scale_source: str = "none"
    cells_found: int = 0  # white cells the preparation found in the crop (1 is right)
    red_cells: int = 0  # red cells the preparation measured in the crop (for its scale)
    crop_black: float = 0.0  # share of the crop's pixels that are black (a C-NMC frame: most; a smear: none)
    crop_is_frame: bool = False  # prepare.looks_like_cnmc_frame(crop): it would have passed through unchanged
    original: dict = field(default_factory=dict)  # model key -> P(ALL) on the original frame, plus "ensemble"
    prepared: dict = field(default_factory=dict)  # the same on the prepared frame ({} when none was made)
    mirrored: dict = field(default_factory=dict)  # the same on the original frame mirrored left-right (a control)
    image_reasons: list = field(default_factory=list)  # the OOD check's image half on the prepared frame
    stain_before: float | None = None  # prepare.stain_distance of the frame before / after normalisation
    stain_after: float | None = None
    error: str | None = None  # why no frame was prepared
    subject: str = ""  # the frame's patient (split.csv), for the patient-level interval of the AUC difference

    @property
    def scale_error(self) -> float:
        """|found / true - 1|; infinite when no scale was found from the red cells."""
        if self.scale_source != "red cells" or not self.found_um_per_px:
            return float("inf")
        return abs(self.found_um_per_px / self.true_um_per_px - 1.0)


def validation_cells(store: StudyStore, n: int | None = None, seed: int = 0) -> tuple[Path, pd.DataFrame]:
    """The study's data folder and its validation cells (path, label, subject), `n` of them drawn evenly over the two
    classes with `seed` (all of them when n is None or larger)."""
    info = store.require().read_study()
    split = store.read_split()
    val = split[split["split"] == "val"][["path", "label", "subject"]].reset_index(drop=True)
    if val.empty:
        raise ValueError(f"study {store.name!r} has no validation cells to take round trip")
    if n is not None and n < len(val):
        rng = np.random.default_rng([seed, 41])
        groups = [g.index[rng.permutation(len(g))] for _, g in val.groupby("label")]
        picked = [i for pair in zip(*[list(g) + [None] * (len(val) - len(g)) for g in groups]) for i in pair
                  if i is not None][:n]  # alternating classes, so a few cells hold both
        val = val.loc[sorted(picked)].reset_index(drop=True)
    return Path(info["data"]["path"]), val


def plan(index: int, seed: int, stains: tuple = tuple(sorted(STAINS))) -> tuple[float, str, str]:
    """(factor, stain, background) of the `index`-th crop: factor log-uniform in FACTORS, stains and backgrounds in
    turn."""
    rng = np.random.default_rng([seed, 43, index])
    factor = float(np.exp(rng.uniform(np.log(FACTORS[0]), np.log(FACTORS[1]))))
    grounds = sorted(BACKGROUNDS)
    return factor, stains[index % len(stains)], grounds[(index // len(stains)) % len(grounds)]


def _probs(predictor: Predictor, img: Image.Image) -> dict:
    probs, _ = predictor.forward_image(img)
    out = {k: float(v) for k, v in probs.items()}
    out[ENSEMBLE_KEY] = float(np.mean(list(probs.values())))  # the ensemble, as predict gives it: the models' mean
    return out


def round_trip_cell(predictor: Predictor, frame: Image.Image, path: str, label: int, index: int, seed: int,
                    stains: tuple = tuple(sorted(STAINS)), subject: str = "") -> RoundTripCell:
    """One frame's round trip (module docstring), with the crop's plan from `plan(index, seed, stains)`; `subject`
    is the frame's patient, kept for the patient-level interval."""
    factor, stain, background = plan(index, seed, stains)
    crop = paste_cell(frame, seed=seed * 100_000 + index, factor=factor, background=background,
                      stain=FAR_STAIN if stain == "far" else stain)
    cell = RoundTripCell(path, int(label), factor, stain, background, crop.um_per_px, subject=str(subject))
    cell.crop_black = float((np.asarray(crop.image).max(axis=-1) < DARK_LEVEL).mean())
    cell.crop_is_frame = looks_like_cnmc_frame(crop.image)
    cell.original = _probs(predictor, frame)
    cell.mirrored = _probs(predictor, frame.transpose(Image.Transpose.FLIP_LEFT_RIGHT))
    preparation = prepare(crop.image, PrepareOptions(colour_reference=predictor.colour_reference))
    cell.scale_source, cell.found_um_per_px = preparation.scale.source, preparation.scale.um_per_px
    cell.cells_found, cell.red_cells = len(preparation.cells), preparation.scale.red_cells
    if not preparation.cells:
        cell.error = preparation.error or "no cell prepared"
        return cell
    tx, ty = crop.white_cells[0].centre  # the prepared cell nearest the truth (the only one, when all is well)
    nearest = min(preparation.cells, key=lambda c: np.hypot(c.centre[0] - tx, c.centre[1] - ty))
    cell.prepared = _probs(predictor, nearest.frame)
    cell.image_reasons = unusual_frame_reasons(frame_statistics(nearest.frame), predictor.image_reference)
    if predictor.colour_reference is not None:
        cell.stain_before = stain_distance(nearest.frame_before_norm, predictor.colour_reference)
        cell.stain_after = stain_distance(nearest.frame, predictor.colour_reference)
    return cell


def run(predictor: Predictor, data_root: Path, cells: pd.DataFrame, seed: int = 0,
        stains: tuple = tuple(sorted(STAINS)), progress=None) -> list[RoundTripCell]:
    """The round trip of every cell of `cells` (path, label under `data_root`). A path that leads outside the data
    folder, or that cannot be read, is skipped with a log line. `progress(i, n)` is called after each cell."""
    root = Path(data_root).resolve()
    out = []
    for i, row in enumerate(cells.itertuples(index=False)):
        source = (root / row.path).resolve()
        try:
            if not source.is_relative_to(root):
                raise ValueError("leads outside the study's data folder")
            frame = open_image(source)
        except (OSError, ValueError) as e:
            log.warning("round trip: skipped %s (%s)", row.path, e)
            continue
        out.append(round_trip_cell(predictor, frame, row.path, row.label, i, seed, stains,
                                   getattr(row, "subject", "")))
        if progress:
            progress(i + 1, len(cells))
    return out


def _share(values) -> float:
    values = list(values)
    return float(np.mean(values)) if values else float("nan")


def figures(cells: list[RoundTripCell], far: list[RoundTripCell] | None = None) -> dict:
    """The round trip's figures (JSON-able), each with its unit and N:
    - scale_within: share of crops whose scale found from red cells is within SCALE_TOLERANCE of the truth;
    - p_all_within: per model key and "ensemble", share of cells whose prepared P(ALL) is within P_ALL_TOLERANCE
      of the original frame's (a cell with no prepared frame counts as outside); "worst" is the smallest;
    - auc: ensemble ROC AUC on the original frames and on the prepared crops (cells with a prepared frame);
    - ood_image_pass: share of prepared frames (crops in the demo's stain family) with no image-half reason;
    - far: crops in a far stain: share normalised (stain distance moved down to NORMALISE_TOLERANCE, +0.5 for the
      frame's own rounding) and share passing the image half after it.
    """
    n = len(cells)
    keys = list(cells[0].original) if cells else []
    prepared = [c for c in cells if c.prepared]
    within = {k: _share(bool(c.prepared) and abs(c.prepared[k] - c.original[k]) <= P_ALL_TOLERANCE for c in cells)
              for k in keys}
    # the control: how often the models keep P(ALL) within the tolerance when the same frame is only mirrored (they
    # were trained with random flips): a preparation cannot be held to more than the models give
    mirrored = {k: _share(abs(c.mirrored[k] - c.original[k]) <= P_ALL_TOLERANCE for c in cells if c.mirrored)
                for k in keys}
    differences = {k: float(np.median([abs(c.prepared[k] - c.original[k]) for c in prepared])) if prepared
                   else float("nan") for k in keys}
    labels = [c.label for c in prepared]
    two_classes = len(set(labels)) == 2 and len({c.label for c in cells}) == 2
    auc = {
        "original": float(roc_auc_score([c.label for c in cells], [c.original[ENSEMBLE_KEY] for c in cells]))
        if two_classes else None,
        "prepared": float(roc_auc_score(labels, [c.prepared[ENSEMBLE_KEY] for c in prepared])) if two_classes
        else None,
        "original_same_cells": float(roc_auc_score(labels, [c.original[ENSEMBLE_KEY] for c in prepared]))
        if two_classes else None,
        "unit": "cell", "n": len(prepared), "n_all": sum(labels), "n_hem": len(labels) - sum(labels),
    }
    auc["difference"] = (abs(auc["prepared"] - auc["original_same_cells"]) if two_classes else None)
    if two_classes:
        auc["difference_intervals"] = auc_difference_intervals(prepared)
    errors = np.array([c.scale_error for c in cells])
    family = [c for c in prepared if c.stain != "far"]
    out = {
        "crops": n, "unit": "crop (one validation cell each)",
        "scale_within": _share(errors <= SCALE_TOLERANCE),
        "scale_found": _share(np.isfinite(errors)),
        "scale_error_median": float(np.median(errors[np.isfinite(errors)])) if np.isfinite(errors).any() else None,
        # (over the crops with a scale found: the others are counted by scale_found; JSON has no infinity)
        "scale_error_max": float(np.max(errors[np.isfinite(errors)])) if np.isfinite(errors).any() else None,
        "one_cell_found": _share(c.cells_found == 1 for c in cells),
        "no_frame": sum(not c.prepared for c in cells),
        "p_all_within": within, "p_all_within_worst": min(within.values()) if within else float("nan"),
        "p_all_within_mirrored": mirrored,
        "p_all_median_difference": differences,
        "auc": auc,
        "ood_image_pass": _share(not c.image_reasons for c in family), "ood_n": len(family),
        "ood_reasons": sorted({r.split(" (")[0] for c in family for r in c.image_reasons}),
    }
    if far:
        moved = [c for c in far if c.prepared and c.stain_before is not None]
        out["far"] = {
            "crops": len(far), "prepared": len(moved),
            "normalised": _share(c.stain_before > NORMALISE_TOLERANCE and c.stain_after <= NORMALISE_TOLERANCE + 0.5
                                 for c in moved),
            "stain_before_median": float(np.median([c.stain_before for c in moved])) if moved else None,
            "stain_after_median": float(np.median([c.stain_after for c in moved])) if moved else None,
            "ood_image_pass": _share(not c.image_reasons for c in moved),
        }
    return out


def auc_difference_intervals(cells: list[RoundTripCell], n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """95% percentile intervals of the ensemble AUC on prepared crops minus that on the original frames (signed), by
    a paired, class-stratified bootstrap: each replicate weighs both AUCs with the same draw, of cells, and (when
    every cell has its patient) of patients, whose cells are not independent. The goal's bar (0.03) is a point
    figure; these say how far the sample's cells and patients let it move. JSON-able: unit -> [low, high]."""
    labels = np.array([c.label for c in cells])
    prepared = np.array([c.prepared[ENSEMBLE_KEY] for c in cells])
    original = np.array([c.original[ENSEMBLE_KEY] for c in cells])
    subjects = np.array([c.subject for c in cells])
    out = {"replicates": n_boot, "n_cells": len(cells)}
    units = ["cell"] + (["subject"] if all(subjects) else [])
    for unit in units:
        weights = bootstrap_weights(subjects if unit == "subject" else np.arange(len(cells)), n_boot, seed, unit,
                                    strata=labels)
        differences = weighted_auc(labels, prepared, weights) - weighted_auc(labels, original, weights)
        out[unit] = [float(v) for v in np.nanpercentile(differences, [2.5, 97.5])]
    if "subject" in units:
        out["n_subjects"] = len(set(subjects))
    return out


def goals_missed(result: dict) -> list[str]:
    """One line per goal of `GOALS` the figures miss (empty: all met)."""
    missed = []
    if not result["scale_within"] >= GOALS["scale_within"]:
        missed.append(f"scale within {SCALE_TOLERANCE:.0%} for {result['scale_within']:.1%} of crops "
                      f"(goal >= {GOALS['scale_within']:.0%})")
    for key, share in result["p_all_within"].items():
        if not share >= GOALS["p_all_within"]:
            missed.append(f"{key}: P(ALL) within {P_ALL_TOLERANCE} for {share:.1%} of cells "
                          f"(goal >= {GOALS['p_all_within']:.0%})")
    difference = result["auc"]["difference"]
    if difference is None or not difference <= GOALS["auc_difference"]:
        missed.append(f"ensemble AUC differs by {difference} (goal <= {GOALS['auc_difference']})")
    if not result["ood_image_pass"] >= GOALS["ood_image_pass"]:
        missed.append(f"{result['ood_image_pass']:.1%} of prepared frames pass the image half of the OOD check "
                      f"(goal >= {GOALS['ood_image_pass']:.0%})")
    far = result.get("far")
    if far and not far["normalised"] >= GOALS["ood_image_pass"]:
        missed.append(f"a far stain was normalised in {far['normalised']:.1%} of crops (goal >= 90%)")
    return missed
