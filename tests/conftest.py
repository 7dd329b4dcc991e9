"""Shared fixtures: tiny C-NMC-like folders written by the tests themselves, and a small trained study."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

ROOT = Path(__file__).resolve().parents[1]

# Fixtures that train a study. Any test that uses one, directly or through another fixture, is `slow`:
# `pytest -m "not slow"` (the lane for editing) trains nothing.
TRAINING_FIXTURES = {"tiny_study"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if TRAINING_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def write_cell(path: Path, value: int = 120, side: int = 64, radius: int | None = None) -> Path:
    """A small RGB 'cell' (a bright disc on black) as BMP, enough for scanning tests."""
    path.parent.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:side, :side]
    r = radius or side // 3
    disc = ((yy - side / 2) ** 2 + (xx - side / 2) ** 2) < r * r
    img = np.zeros((side, side, 3), np.uint8)
    img[disc] = (value, value // 2, min(255, value + 60))
    Image.fromarray(img).save(path, format="BMP")
    return path


def make_folds(train_dir: Path, subjects: dict[str, list[str]], per_subject: int = 2) -> None:
    """subjects: fold name -> subject ids (those with H are normal)."""
    for fold, ids in subjects.items():
        for s in ids:
            cls = "hem" if s.startswith("H") else "all"
            for c in range(per_subject):
                write_cell(train_dir / fold / cls / f"UID_{s}_{c + 1}_1_{cls}.bmp", value=60 + 40 * c)


def make_prelim(folder: Path, csv_path: Path, subjects: list[str], per_subject: int = 2) -> None:
    rows, n = [], 0
    for s in subjects:
        cls = "hem" if s.startswith("H") else "all"
        for c in range(per_subject):
            n += 1
            write_cell(folder / f"{n}.bmp", value=70 + 30 * c)
            rows.append((f"UID_{s}_{c + 1}_1_{cls}.bmp", f"{n}.bmp", int(cls == "all")))
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Patient_ID", "new_names", "labels"])
        w.writerows(rows)


FOLDS = {"fold_0": ["1", "H1", "11"], "fold_1": ["2", "H2", "H11"], "fold_2": ["3", "H3"]}


@pytest.fixture
def kaggle_dir(tmp_path: Path) -> Path:
    root = tmp_path / "C-NMC_Leukemia"
    make_folds(root / "training_data", FOLDS)
    make_prelim(
        root / "validation_data" / "C-NMC_test_prelim_phase_data",
        root / "validation_data" / "C-NMC_test_prelim_phase_data_labels.csv",
        ["57", "H60"],
    )
    final = root / "testing_data" / "C-NMC_test_final_phase_data"
    for i in range(3):
        write_cell(final / f"{i + 1}.bmp")
    return tmp_path  # the folder above the C-NMC root, as a download unpacks


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory) -> Path:
    """A small synthetic dataset (the demo generator with fewer subjects and cells)."""
    from cnmc_core import synthetic

    spec = synthetic.DemoSpec(
        seed=3, train_all_subjects=6, train_hem_subjects=6, train_cells_all=10, train_cells_hem=10,
        prelim_all_subjects=3, prelim_hem_subjects=3, prelim_cells=8, final_subjects=2, final_cells=3,
    )
    return synthetic.generate(tmp_path_factory.mktemp("demo") / "C-NMC_Leukemia", spec)


TINY_MODELS = ("vgg16", "efficientnet_b0")
TINY_SIZE = 75


@pytest.fixture(scope="session")
def tiny_study(demo_data, tmp_path_factory):
    """A trained two-model study at 75 px with random weights: (artifacts root, study name)."""
    from cnmc_core.config import from_preset
    from cnmc_core.study import run_study

    root = tmp_path_factory.mktemp("artifacts")
    config = from_preset("paper_std", models=TINY_MODELS, weights="none", input_size=TINY_SIZE, epochs=4, seed=1)
    run_study(demo_data, config, root=root, name="tiny")
    return root, "tiny"


SHARED_SIZE = 75  # the smallest side every registry model accepts (InceptionV3's minimum)


@pytest.fixture(scope="session")
def registry_classifier():
    """`registry_classifier(key)`: that registry model's flat classifier at 75 px with random weights, built once
    for the whole run (building the seven costs about a minute here). Tests read it; none may change it
    (a test that unfreezes layers builds its own)."""
    from cnmc_core.models import build_classifier
    from cnmc_core.registry import MODELS

    built = {}

    def get(key: str):
        if key not in built:
            built[key] = build_classifier(MODELS[key], SHARED_SIZE, weights="none")
        return built[key]

    return get
