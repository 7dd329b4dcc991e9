"""Train / val / test assignment, by subject only.

- official: training folds -> train, labelled prelim set -> val, final set -> test (C-NMC's own split;
  the prelim subjects are unseen in training). Used when the prelim labels exist.
- folds: one training fold -> val, the others -> train (C-NMC's folds are subject-disjoint).
- random: a seeded split of subjects, stratified by class, `val_fraction` of each class to val.

Whatever the mode, no subject is ever in two of train / val / test: `check_disjoint` asserts it
and every split goes through it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from .dataset import ALL, HEM, Scan

SPLIT_MODES = ("auto", "official", "folds", "random")


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
    if mode == "auto":
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
    check_disjoint(out)
    for split in ("train", "val"):
        labels = {a.label for a in out if a.split == split}
        if not {ALL, HEM} <= labels:
            missing = "ALL" if ALL not in labels else "HEM"
            raise SplitError(
                f"the {split} split has no {missing} image; the data is too small or one-sided for a {mode} split")
    return mode, out


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
