"""Train / val / test assignment, by subject only.

- official: training folds -> train, labelled prelim set -> val, final set -> test (C-NMC's own split;
  the prelim subjects are unseen in training). Used when the prelim labels exist.
- folds: one training fold -> val, the others -> train (C-NMC's folds are subject-disjoint).
- random: a seeded split of subjects, stratified by class, `val_fraction` of each class to val.

Whatever the mode, no subject is ever in two of train / val / test: `check_disjoint` asserts it
and every split goes through it. A file whose contents are those of a file in an earlier split
(train, val, test) is excluded from the later one, with the reason in split.csv (`exclude_duplicates`).

`inner_slice` carves the training subjects once more (subject-disjoint, class-stratified): the slice
that chooses the stopping epoch and fine-tuning's keep-or-revert, so that validation chooses nothing.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass

import numpy as np

from .dataset import ALL, HEM, Scan

log = logging.getLogger(__name__)
SPLIT_MODES = ("auto", "official", "folds", "random", "cv")
CV_FOLDS = 3  # subject-disjoint folds of the training subjects when C-NMC's three training folds are not there
SPLIT_ORDER = ("train", "val", "test")  # a file identical to one in an earlier split is excluded from the later
DUPLICATE = "identical to"  # how the reason of such a file begins (split.csv)
INNER_FRACTION = 0.2  # share of each class's training subjects held out to choose the stopping epoch


@dataclass
class Assignment:
    path: str
    subject: str
    label: int | None
    split: str  # train, val, test or excluded
    reason: str
    group: str
    sha1: str


class SplitError(ValueError):
    pass


def assign(
    scan: Scan, mode: str = "auto", val_fold: int = 2, val_fraction: float = 0.2, seed: int = 42
) -> tuple[str, list[Assignment]]:
    """Split every record of `scan`; returns the mode used and one Assignment per file found."""
    if mode not in SPLIT_MODES:
        raise SplitError(f"--split must be one of {', '.join(SPLIT_MODES)}; got {mode!r}")
    has_prelim = any(r.group == "prelim" and r.label is not None and not r.reason for r in scan.records)
    if mode in ("auto", "cv"):  # cv: validation as auto; the training subjects are cross-validated (cv_folds)
        mode = "official" if has_prelim else "folds"
    if mode == "official" and not has_prelim:
        raise SplitError(
            "--split official needs the labelled prelim set (validation_data with its labels CSV); use --split folds")
    folds = sorted({r.group for r in scan.usable if r.group.startswith("fold_")})
    if mode == "folds" and len(folds) < 2:
        mode = "random"

    random_val: set[str] = set()
    if mode == "random":
        random_val = _random_val_subjects(scan, val_fraction, seed)
    val_group = f"fold_{val_fold}" if f"fold_{val_fold}" in folds else (folds[-1] if folds else "")

    out = []
    for r in scan.records:
        split, reason = _split_of(r.group, r.subject, mode, val_group, random_val), r.reason
        if reason:
            split = "excluded"
        elif r.group == "prelim" and mode != "official":
            split, reason = "excluded", f"prelim image not used by the {mode} split"
        out.append(Assignment(r.path, r.subject, r.label, split, reason, r.group, r.sha1))
    duplicates = exclude_duplicates(out)
    if duplicates:
        log.warning("%d image(s) identical to one in an earlier split are excluded from the later split "
                    "(reason in split.csv)", duplicates)
    check_disjoint(out)
    for split in ("train", "val"):
        labels = {a.label for a in out if a.split == split}
        if not {ALL, HEM} <= labels:
            missing = "ALL" if ALL not in labels else "HEM"
            raise SplitError(
                f"the {split} split has no {missing} image; the data is too small or one-sided for a {mode} split")
    return mode, out


def exclude_duplicates(assignments: list[Assignment]) -> int:
    """Exclude every file whose contents (sha1) are those of a file in an earlier split (train, then val,
    then test), with the reason naming that file; returns how many. Copies within one split are kept."""
    first: dict[str, Assignment] = {}
    excluded = 0
    for a in sorted((a for a in assignments if a.split in SPLIT_ORDER and a.sha1),
                    key=lambda a: (SPLIT_ORDER.index(a.split), a.path)):
        seen = first.setdefault(a.sha1, a)
        if seen.split != a.split:
            a.reason = f"{DUPLICATE} {seen.path} in {seen.split} (the same file contents): kept out of {a.split}"
            a.split = "excluded"
            excluded += 1
    return excluded


def _split_of(group: str, subject: str, mode: str, val_group: str, random_val: set[str]) -> str:
    if group == "final":
        return "test"
    if group == "prelim":
        return "val"
    if mode == "official":
        return "train"
    if mode == "folds":
        return "val" if group == val_group else "train"
    return "val" if subject in random_val else "train"


def _random_val_subjects(scan: Scan, val_fraction: float, seed: int) -> set[str]:
    if not 0 < val_fraction < 1:
        raise SplitError(f"--val-fraction must be between 0 and 1; got {val_fraction}")
    rng = random.Random(seed)
    val = set()
    for label in (ALL, HEM):
        subjects = sorted({r.subject for r in scan.usable if r.label == label and r.group.startswith("fold")})
        rng.shuffle(subjects)
        n = max(1, round(len(subjects) * val_fraction)) if len(subjects) > 1 else 0
        val.update(subjects[:n])
    return val


def check_disjoint(assignments: list[Assignment]) -> None:
    """Raise if any subject appears in more than one of train, val and test."""
    seen: dict[str, str] = {}
    for a in assignments:
        if a.split == "excluded" or not a.subject:
            continue
        other = seen.setdefault(a.subject, a.split)
        if other != a.split:
            raise SplitError(
                f"subject {a.subject} is in both {other} and {a.split}: the split would leak; "
                "this is a bug in the split or a mislabelled copy of the data"
            )


def inner_slice(subjects, labels, fraction: float = INNER_FRACTION, seed: int = 42) -> np.ndarray:
    """Bool mask over training cells: the inner slice that chooses the stopping epoch, never trained on.

    Subject-disjoint from the rest and stratified by class: for each class, `fraction` of its subjects
    (at least one, when the class has two or more; none when it has one, which must stay in training),
    drawn with `seed`. A subject's cells are all in or all out. All False when no class has two subjects.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"the inner slice's fraction must be between 0 and 1; got {fraction}")
    subjects = np.asarray(subjects).astype(str)
    labels = np.asarray(labels).astype(int)
    if subjects.shape != labels.shape:
        raise ValueError(f"subjects and labels must give one value per cell; got {subjects.shape} and {labels.shape}")
    rng = random.Random(seed)
    held: set[str] = set()
    for label in (ALL, HEM):
        members = sorted(set(subjects[labels == label].tolist()))
        rng.shuffle(members)
        n = max(1, round(len(members) * fraction)) if len(members) > 1 else 0
        held.update(members[:n])
    return np.isin(subjects, sorted(held))


def stopping_record(rule: str, subjects, inner: np.ndarray | None) -> dict:
    """metrics.json's `stopping`: the rule (config.stopping), what chose the epoch kept, and whether the
    validation split did. `subjects`: per training cell; `inner`: the mask given to training, or None."""
    held = inner is not None and 0 < int(np.sum(inner)) < len(inner)
    if held:
        n = len(set(np.asarray(subjects).astype(str)[np.asarray(inner, bool)]))
        chosen_on = f"an inner slice of {n} training subjects ({int(np.sum(inner))} cells), not trained on"
    else:
        chosen_on = "the validation split" + (", last epoch kept" if rule == "val" else ", best epoch restored")
    return {"rule": rule, "chosen_on": chosen_on, "validation_chose": not held,
            "note": "" if held else "the stopping epoch was chosen on this split: its figures are optimistic"}


def cv_folds(subjects, labels, groups, k: int = CV_FOLDS, seed: int = 42) -> tuple[np.ndarray, str]:
    """(fold number per training cell, 0..K-1; where the folds came from) for `--split cv`.

    C-NMC's own training folds when the training cells span three or more fold_* groups (they are
    subject-disjoint); else `k` subject-disjoint folds stratified by class: each class's subjects, shuffled
    with `seed`, dealt out in turn. Every subject's cells share one fold.
    """
    subjects = np.asarray(subjects).astype(str)
    labels, groups = np.asarray(labels).astype(int), np.asarray(groups).astype(str)
    named = sorted({g for g in groups.tolist() if g.startswith("fold_")})
    if len(named) >= 3 and all(g.startswith("fold_") for g in groups.tolist()):
        return np.array([named.index(g) for g in groups]), f"C-NMC's {len(named)} training folds"
    if k < 2:
        raise SplitError(f"cross-validation needs at least 2 folds; got {k}")
    rng = random.Random(seed)
    fold_of: dict[str, int] = {}
    dealt = 0
    for label in (ALL, HEM):
        members = sorted(set(subjects[labels == label].tolist()))
        rng.shuffle(members)
        for member in members:
            fold_of[member] = dealt % k
            dealt += 1
    if len(set(fold_of.values())) < k:
        raise SplitError(f"cross-validation needs at least {k} training subjects for {k} folds; got {len(fold_of)}")
    return np.array([fold_of[s] for s in subjects]), f"{k} subject-disjoint folds stratified by class (seed {seed})"
