"""Scanning the three layouts, the traps of real copies, and subject-disjoint splits."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from cnmc_core.dataset import ALL, HEM, DatasetError, parse_name, scan
from cnmc_core.splits import Assignment, SplitError, assign, check_disjoint

from .conftest import FOLDS, make_folds, make_prelim, write_cell


def test_subject_ids_from_names_keep_the_h():
    assert parse_name("UID_H11_3_2_hem.bmp") == ("H11", HEM)
    assert parse_name("UID_11_3_2_all.bmp") == ("11", ALL)
    assert parse_name("UID_11_3_all.bmp") is None
    assert parse_name("Thumbs.db") is None


def test_kaggle_layout_official_split(kaggle_dir):
    s = scan(kaggle_dir)
    assert s.layout == "kaggle"
    assert s.root.name == "C-NMC_Leukemia"
    by_path = {r.path: r for r in s.records}
    assert by_path["training_data/fold_0/all/UID_11_1_1_all.bmp"].subject == "11"
    assert by_path["training_data/fold_1/hem/UID_H11_1_1_hem.bmp"].subject == "H11"
    prelim = [r for r in s.records if r.group == "prelim"]
    assert {r.subject for r in prelim} == {"57", "H60"}  # from the CSV's Patient_ID
    assert {r.label for r in prelim} == {ALL, HEM}
    assert len([r for r in s.records if r.group == "final"]) == 3

    mode, rows = assign(s)
    assert mode == "official"
    split_of = {}
    for a in rows:
        split_of.setdefault(a.subject, set()).add(a.split)
    assert split_of["11"] == {"train"} and split_of["H11"] == {"train"}
    assert split_of["57"] == {"val"} and split_of["H60"] == {"val"}
    assert {a.split for a in rows if a.group == "final"} == {"test"}


def test_subjects_11_and_h11_are_different_people(kaggle_dir):
    s = scan(kaggle_dir)
    subjects = {r.subject for r in s.usable if r.group.startswith("fold")}
    assert {"11", "H11", "1", "H1"} <= subjects
    assert len([r for r in s.usable if r.subject == "11"]) == 2
    assert len([r for r in s.usable if r.subject == "H11"]) == 2


def test_tcia_layout_with_csv_inside_prelim_folder(tmp_path):
    root = tmp_path / "tcia"
    make_folds(root / "C-NMC_training_data", FOLDS)
    prelim = root / "C-NMC_test_prelim_phase_data"
    make_prelim(prelim, prelim / "C-NMC_test_prelim_phase_data_labels.csv", ["57", "H60"])
    s = scan(root)
    assert s.layout == "tcia"
    assert {r.group for r in s.usable} == {"fold_0", "fold_1", "fold_2", "prelim"}
    # The labels CSV itself is not an image, and is listed as excluded with its reason.
    csv_rec = [r for r in s.records if r.path.endswith(".csv")]
    assert csv_rec and "not an image" in csv_rec[0].reason
    mode, rows = assign(s)
    assert mode == "official"


def test_fold_only_copy_uses_a_fold_as_validation(tmp_path):
    make_folds(tmp_path / "copy", FOLDS)
    s = scan(tmp_path / "copy")
    assert s.layout == "folds"
    mode, rows = assign(s)
    assert mode == "folds"
    assert {a.group for a in rows if a.split == "val"} == {"fold_2"}
    assert {a.group for a in rows if a.split == "train"} == {"fold_0", "fold_1"}


def test_random_split_is_by_subject_and_seeded(tmp_path):
    make_folds(tmp_path / "c", {"fold_0": ["1", "2", "3", "4", "5", "H1", "H2", "H3", "H4", "H5"]}, per_subject=3)
    s = scan(tmp_path / "c")
    mode, rows = assign(s, mode="random", val_fraction=0.4, seed=7)
    assert mode == "random"
    train_subjects = {a.subject for a in rows if a.split == "train"}
    val_subjects = {a.subject for a in rows if a.split == "val"}
    assert train_subjects and val_subjects and not train_subjects & val_subjects
    assert val_subjects == {
        a.subject for a in assign(s, mode="random", val_fraction=0.4, seed=7)[1] if a.split == "val"
    }
    # All cells of a subject land on one side.
    for subject in val_subjects:
        assert all(a.split == "val" for a in rows if a.subject == subject)


def test_traps_are_excluded_with_reasons_and_the_run_goes_on(kaggle_dir):
    fold = kaggle_dir / "C-NMC_Leukemia" / "training_data" / "fold_0"
    (fold / "all" / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0junk")
    (fold / "hem" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (fold / "all" / "UID_1_9_1_all.bmp").write_bytes(b"")  # zero bytes
    good = (fold / "all" / "UID_1_1_1_all.bmp").read_bytes()
    (fold / "all" / "UID_1_8_1_all.bmp").write_bytes(good[: len(good) // 3])  # truncated
    (fold / "all" / "UID_1_7_1_all.bmp").write_bytes(b"this is not a bitmap at all")  # corrupt
    (fold / "all" / "notes.txt").write_text("hello")
    s = scan(kaggle_dir)
    reasons = {Path(r.path).name: r.reason for r in s.excluded}
    assert "system file" in reasons["Thumbs.db"]
    assert "system file" in reasons[".DS_Store"]
    assert "empty" in reasons["UID_1_9_1_all.bmp"]
    assert "decoded" in reasons["UID_1_8_1_all.bmp"] or "truncated" in reasons["UID_1_8_1_all.bmp"]
    assert "not an image" in reasons["UID_1_7_1_all.bmp"]
    assert "not an image" in reasons["notes.txt"]
    mode, rows = assign(s)
    assert {a.split for a in rows if Path(a.path).name in reasons} == {"excluded"}
    assert sum(a.split == "train" for a in rows) == 16  # the 16 good training cells still train


def test_label_mismatch_between_name_and_folder_is_excluded(kaggle_dir):
    fold = kaggle_dir / "C-NMC_Leukemia" / "training_data" / "fold_0"
    write_cell(fold / "hem" / "UID_5_1_1_all.bmp")
    s = scan(kaggle_dir)
    rec = next(r for r in s.records if r.path.endswith("hem/UID_5_1_1_all.bmp"))
    assert "hem/ folder" in rec.reason


def test_a_class_with_no_usable_image_is_a_clear_error(tmp_path):
    make_folds(tmp_path / "c", {"fold_0": ["1", "2"]})  # ALL only
    (tmp_path / "c" / "fold_0" / "hem").mkdir()
    with pytest.raises(DatasetError, match="no usable HEM training image"):
        scan(tmp_path / "c")


def test_not_a_cnmc_folder_names_the_layouts(tmp_path):
    (tmp_path / "photos").mkdir()
    write_cell(tmp_path / "photos" / "cat.bmp")
    with pytest.raises(DatasetError) as e:
        scan(tmp_path)
    msg = str(e.value)
    assert "training_data/fold_" in msg and "C-NMC_training_data" in msg and "fold-only" in msg


def test_fingerprint_changes_when_a_file_changes(kaggle_dir):
    before = scan(kaggle_dir).fingerprint()
    assert scan(kaggle_dir).fingerprint() == before
    f = kaggle_dir / "C-NMC_Leukemia" / "training_data" / "fold_0" / "all" / "UID_1_1_1_all.bmp"
    write_cell(f, value=200)
    assert scan(kaggle_dir).fingerprint() != before


def test_a_rescan_reads_only_the_files_that_changed_and_reports_them_afresh(kaggle_dir, tmp_path, monkeypatch):
    cache = tmp_path / "scan-cache"
    fold = kaggle_dir / "C-NMC_Leukemia" / "training_data" / "fold_0"
    (fold / "all" / "UID_1_7_1_all.bmp").write_bytes(b"this is not a bitmap at all")  # corrupt from the start
    (fold / "all" / "Thumbs.db").write_bytes(b"junk")
    first = scan(kaggle_dir, cache_dir=cache)
    read = []
    real_read = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: read.append(self.name) or real_read(self))

    again = scan(kaggle_dir, cache_dir=cache)
    assert read == []  # nothing changed: nothing read or decoded
    assert again.fingerprint() == first.fingerprint()
    assert [(r.path, r.sha1, r.reason) for r in again.records] == [(r.path, r.sha1, r.reason) for r in first.records]

    victim = fold / "all" / "UID_1_1_1_all.bmp"
    data = real_read(victim)
    victim.write_bytes(data[: len(data) // 3])  # truncated: another size
    same_size = fold / "hem" / "UID_H1_1_1_hem.bmp"
    before = same_size.stat()
    write_cell(same_size, value=200)  # new pixels, same size, a later modification time:
    os.utime(same_size, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))  # (not within one clock tick)
    assert same_size.stat().st_size == before.st_size
    third = scan(kaggle_dir, cache_dir=cache)
    assert sorted(read) == sorted([victim.name, same_size.name])
    reasons = {Path(r.path).name: r.reason for r in third.records}
    assert "truncated" in reasons[victim.name] or "decoded" in reasons[victim.name]
    assert reasons[same_size.name] == "" and "not an image" in reasons["UID_1_7_1_all.bmp"]
    assert third.fingerprint() == scan(kaggle_dir).fingerprint() != first.fingerprint()  # as a scan without cache

    # A damaged cache file only means checking every file again.
    (cache_file,) = cache.glob("*.json")
    saved = json.loads(cache_file.read_text())
    for damaged in (
        "{not json",
        json.dumps({**saved, "files": {path: entry[:2] for path, entry in saved["files"].items()}}),
    ):
        cache_file.write_text(damaged)
        read.clear()
        assert scan(kaggle_dir, cache_dir=cache).fingerprint() == third.fingerprint() and len(read) > 10


def test_scanning_never_writes_to_the_data_folder(kaggle_dir):
    def snapshot():
        return sorted((p.as_posix(), p.stat().st_mtime_ns) for p in kaggle_dir.rglob("*"))

    before = snapshot()
    scan(kaggle_dir)
    assert snapshot() == before


def test_check_disjoint_catches_a_leak():
    rows = [
        Assignment("a.bmp", "7", 1, "train", "", "fold_0", ""),
        Assignment("b.bmp", "7", 1, "val", "", "fold_1", ""),
    ]
    with pytest.raises(SplitError, match="subject 7 is in both train and val"):
        check_disjoint(rows)


def test_every_split_mode_is_subject_disjoint(kaggle_dir):
    s = scan(kaggle_dir)
    for mode in ("official", "folds", "random"):
        _, rows = assign(s, mode=mode, val_fraction=0.34)
        sides: dict[str, set] = {}
        for a in rows:
            if a.split != "excluded" and a.subject:
                sides.setdefault(a.subject, set()).add(a.split)
        assert all(len(v) == 1 for v in sides.values()), mode


def test_official_split_without_labels_is_refused(kaggle_dir):
    shutil.rmtree(kaggle_dir / "C-NMC_Leukemia" / "validation_data")
    s = scan(kaggle_dir)
    with pytest.raises(SplitError, match="--split folds"):
        assign(s, mode="official")
    assert assign(s)[0] == "folds"


def test_an_image_identical_to_one_in_an_earlier_split_is_excluded_from_the_later(tmp_path):
    """Issue 14, point 12: the same file contents under two names, in train and in val, would leak."""
    make_folds(tmp_path / "copy", FOLDS)
    train_file = tmp_path / "copy" / "fold_0" / "all" / "UID_1_1_1_all.bmp"
    copy = tmp_path / "copy" / "fold_2" / "all" / "UID_3_9_1_all.bmp"  # subject 3, validation fold
    shutil.copyfile(train_file, copy)
    within = tmp_path / "copy" / "fold_0" / "all" / "UID_1_9_1_all.bmp"  # a copy inside train stays
    shutil.copyfile(train_file, within)
    mode, rows = assign(scan(tmp_path / "copy"))
    by_path = {a.path: a for a in rows}
    moved = by_path["fold_2/all/UID_3_9_1_all.bmp"]
    assert moved.split == "excluded"
    assert moved.reason.startswith("identical to fold_0/all/UID_1_1_1_all.bmp in train")
    assert by_path["fold_0/all/UID_1_1_1_all.bmp"].split == "train"
    assert by_path["fold_0/all/UID_1_9_1_all.bmp"].split == "train"
    assert sum(a.reason.startswith("identical to") for a in rows) == 1
    # Without the copy nothing is excluded for that reason (the check does not fire on distinct images).
    copy.unlink()
    assert not any(a.reason.startswith("identical to") for a in assign(scan(tmp_path / "copy"))[1])


def test_the_inner_slice_is_subject_disjoint_stratified_and_seeded():
    import numpy as np

    from cnmc_core.splits import inner_slice

    subjects = np.repeat([f"{i}" for i in range(10)] + [f"H{i}" for i in range(5)], 3)
    labels = np.array([ALL] * 30 + [HEM] * 15)
    mask = inner_slice(subjects, labels, fraction=0.2, seed=1)
    held = set(subjects[mask])
    assert len({s for s in held if s.startswith("H")}) == 1 and len({s for s in held if not s.startswith("H")}) == 2
    for s in set(subjects):  # every cell of a subject on one side
        assert len(set(mask[subjects == s])) == 1
    np.testing.assert_array_equal(mask, inner_slice(subjects, labels, fraction=0.2, seed=1))
    assert not np.array_equal(mask, inner_slice(subjects, labels, fraction=0.2, seed=2))
    # A class with a single subject keeps it in training.
    one_hem = inner_slice(np.array(["1", "2", "H1"]), np.array([ALL, ALL, HEM]), seed=0)
    assert not one_hem[2] and one_hem[:2].sum() == 1
    with pytest.raises(ValueError, match="fraction"):
        inner_slice(subjects, labels, fraction=1.0)
