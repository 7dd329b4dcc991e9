"""Shared fixtures: tiny C-NMC-like folders written by the tests themselves, and a small trained study."""

from __future__ import annotations

import csv
import hashlib
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from filelock import FileLock
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# The machine-local cache of compiled passes (cnmc_core/compiled.py) is off for the tests, which must not write to
# the user's ~/.cache; tests/test_compiled.py turns it on in a folder of its own.
os.environ["CNMC_COMPILED_CACHE"] = "off"

ROOT = Path(__file__).resolve().parents[1]

# Fixtures that train a study. Any test that uses one, directly or through another fixture, is `slow`:
# `pytest -m "not slow"` (the lane for editing) trains nothing.
TRAINING_FIXTURES = {"tiny_study"}
# Tests that use one of these are `slow` too: they build Keras models (TensorFlow costs seconds to import and each
# build more). `training` is test_finetune.py's fixture that imports cnmc_core.training, which imports Keras.
SLOW_FIXTURES = TRAINING_FIXTURES | {"registry_classifier", "training"}


def pytest_collection_modifyitems(config, items):
    trains = {}  # test file -> does any of its tests use a trained study
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        uses = bool(TRAINING_FIXTURES & fixtures)
        if SLOW_FIXTURES & fixtures:
            item.add_marker(pytest.mark.slow)
        trains[item.path] = trains.get(item.path, False) or uses
    # The order files start in, for `scripts/test.sh`, which runs them on parallel workers file by file
    # (pytest-xdist `--dist loadfile --no-loadscope-reorder`): first one file that uses the shared study (its
    # worker trains it), then the files with their own heavy runs (the demo, CLI trainings), then the rest
    # that need no trained study, and last the files that use it, by then trained. The order within a file is kept.
    first = next((path for path, uses in trains.items() if uses), None)

    slow_files = {item.path for item in items if item.get_closest_marker("slow") and not trains[item.path]}
    file_rank = {path: (0 if path == first else 3 if uses else 1 if path in slow_files else 2)
                 for path, uses in trains.items()}
    items.sort(key=lambda item: file_rank[item.path])  # a stable sort: files stay whole and in order


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """The `slow` marker's meaning, enforced: a test not marked slow may not be the one that brings TensorFlow into
    the process (that alone costs seconds), so `pytest -m "not slow"` imports no TensorFlow and trains nothing."""
    before = "tensorflow" in sys.modules
    result = yield
    if not before and "tensorflow" in sys.modules and not item.get_closest_marker("slow"):
        pytest.fail("this test imports TensorFlow: mark it `@pytest.mark.slow` (see tests/conftest.py)", pytrace=False)
    return result


def _built_once(tmp_path_factory, name: str, build: Callable[[Path], object]) -> Path:
    """`tmp/name`, built by `build(folder)` once per test run, even when pytest-xdist runs several worker
    processes: the first worker to ask builds it under a file lock, the others wait and reuse it (the recipe
    in pytest-xdist's docs, "Making session-scoped fixtures execute only once"). A build that failed halfway
    is redone from scratch."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # the run's folder, shared by its workers
    folder, done = base / name, base / f"{name}.done"
    with FileLock(str(base / f"{name}.lock")):
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            build(folder)
            done.touch()
    return folder


def write_cell(path: Path, value: int = 120, side: int = 64, radius: int | None = None) -> Path:
    """A small RGB 'cell' (a bright disc on black) as BMP, enough for scanning tests."""
    path.parent.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:side, :side]
    r = radius or side // 3
    disc = ((yy - side / 2) ** 2 + (xx - side / 2) ** 2) < r * r
    img = np.zeros((side, side, 3), np.uint8)
    img[disc] = (value, value // 2, min(255, value + 60))
    # One corner pixel from the path: no two files share contents (splits exclude copies across splits).
    img[0, 0] = tuple(hashlib.sha1(str(path).encode()).digest()[:3])
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
    return _built_once(tmp_path_factory, "demo", lambda folder: synthetic.generate(folder / "C-NMC_Leukemia", spec)) \
        / "C-NMC_Leukemia"


TINY_MODELS = ("vgg16", "efficientnet_b0")
TINY_SIZE = 75


@pytest.fixture(scope="session")
def tiny_study(demo_data, tmp_path_factory):
    """A trained two-model study at 75 px with random weights, its head also cross-validated over C-NMC's three
    training folds (`--split cv`): (artifacts root, study name)."""
    from cnmc_core.config import from_preset
    from cnmc_core.study import run_study

    def train(root: Path) -> None:
        config = from_preset("paper_std", models=TINY_MODELS, weights="none", input_size=TINY_SIZE, epochs=4, seed=1,
                             split="cv")  # cross-validated too (issue 14): out-of-fold predictions, a cv block
        run_study(demo_data, config, root=root, name="tiny")

    return _built_once(tmp_path_factory, "artifacts", train), "tiny"


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
            import keras  # (lazy: TensorFlow only for the tests that build)

            keras.utils.set_random_seed(0)  # the same random weights whichever test or worker builds it first
            built[key] = build_classifier(MODELS[key], SHARED_SIZE, weights="none")
        return built[key]

    return get
