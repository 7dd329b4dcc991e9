"""The machine-local cache of compiled passes (cnmc_core/compiled.py): a model served before loads from it with the
same answers to the bit, its Keras model left on disk until Grad-CAM++ or Score-CAM needs it; an entry answers only
for the exact bytes it was made from; a bad entry costs only speed; nothing is written to the study."""

from __future__ import annotations

import logging
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest

from cnmc_core import compiled
from cnmc_core.store import StudyStore

from .helpers import a_cell_file


def _files(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "compiled"
    monkeypatch.setenv(compiled.ENV, str(folder))
    return folder


@pytest.fixture(scope="module")
def filled(tiny_study, tmp_path_factory):
    """The tiny study's Predictor loaded the ordinary way, one classification, and the cache it then filled (a save
    killed midway planted first): shared, since each load and save costs tens of seconds here."""
    from cnmc_core.predict import Predictor

    folder = tmp_path_factory.mktemp("filled") / "compiled"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(compiled.ENV, str(folder))
        store = StudyStore(*tiny_study)
        study_before = _files(store.dir)
        first = Predictor.load(store)
        one = first.classify(a_cell_file(*tiny_study))
        folder.mkdir(mode=0o700)
        killed = folder / f".{'0' * 16}.999999999.0badf00d.tmp"  # a save whose process was killed midway
        (killed / "saved").mkdir(parents=True)
        (killed / "saved" / "variables.data").write_bytes(b"x" * 1000)
        saves = [first.save_compiled(), first.save_compiled()]
        yield {"first": first, "one": one, "folder": folder, "killed": killed, "saves": saves,
               "study_before": study_before}


def test_a_cached_pass_answers_as_the_model_did_and_leaves_the_model_on_disk(tiny_study, filled, monkeypatch):
    from cnmc_core.explain import GradcamPass
    from cnmc_core.predict import Predictor

    root, name = tiny_study
    store = StudyStore(root, name)
    cache, first, one = filled["folder"], filled["first"], filled["one"]
    monkeypatch.setenv(compiled.ENV, str(cache))
    assert all(isinstance(p, GradcamPass) for p in first._passes.values())
    assert filled["saves"] == [len(first.models), 0] == [2, 0]  # each pass once
    assert not filled["killed"].exists()  # removed by the next save
    entries = sorted(p for p in cache.iterdir())
    assert len(entries) == 2 and all((e / "meta.json").is_file() for e in entries)
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700  # the owner's only: an entry is a graph that runs

    second = Predictor.load(store)
    assert all(isinstance(p, compiled.SavedPass) for p in second._passes.values())
    assert not any(second.models.loaded(k) for k in second.models)  # no Keras model read from disk
    assert second.sizes == first.sizes
    two = second.classify(a_cell_file(root, name))
    assert two.result == one.result  # every P(ALL), the ensemble, the label, the out-of-distribution check
    for key in first.models:
        assert np.array_equal(two.gradcam[key], one.gradcam[key])
        assert np.array_equal(two.features[key], one.features[key])
        # The reference cells: the study's feature cache found under the base's fingerprint the entry carries.
        assert second.reference_cells(key, two.features[key]) == first.reference_cells(key, one.features[key])
    assert not any(second.models.loaded(k) for k in second.models)

    # Grad-CAM++ needs the Keras model (tf-keras-vis): read from disk then, with the same heatmaps.
    plus_one = first.explain_cells([one], "gradcam++")[0]
    plus_two = second.explain_cells([two], "gradcam++")[0]
    assert all(second.models.loaded(k) for k in second.models)
    for key in first.models:
        np.testing.assert_allclose(plus_two[key].heatmap, plus_one[key].heatmap, atol=1e-6)
    assert second.save_compiled() == 0  # nothing new to save
    assert _files(store.dir) == filled["study_before"]  # nothing written to the study


def test_an_entry_answers_only_for_the_bytes_it_was_made_from(tiny_study, cache, tmp_path, monkeypatch):
    from cnmc_core.models import HEAD_POOL, load_classifier
    from cnmc_core.registry import get_spec

    root, name = tiny_study
    original = StudyStore(root, name).model_file("vgg16", "model.keras")
    layer = get_spec("vgg16").gradcam_layer
    model, gradcam_pass, key = compiled.load_pass(original, layer, [HEAD_POOL], load_classifier)
    assert model is not None and key and compiled.save(gradcam_pass, model, key, layer)
    assert compiled.load(original, layer, [HEAD_POOL])[0] is not None

    edited = tmp_path / "model.keras"
    content = original.read_bytes()
    edited.write_bytes(content[:-1] + bytes([content[-1] ^ 0xFF]))  # one byte changed
    saved, other_key = compiled.load(edited, layer, [HEAD_POOL])
    assert saved is None and other_key != key

    # A file replaced while it is read is loaded, but its pass is never cached (under either file's bytes).
    monkeypatch.setenv(compiled.ENV, str(tmp_path / "empty"))  # (no entry yet for these bytes)
    copy = tmp_path / "copy.keras"
    shutil.copyfile(original, copy)

    def load_while_replaced(path):
        replacement = tmp_path / "replacement.keras"
        shutil.copyfile(original, replacement)
        os.replace(replacement, path)  # same bytes, another file: as a study retrained meanwhile would do
        return load_classifier(path)

    model, gradcam_pass, key = compiled.load_pass(copy, layer, [HEAD_POOL], load_while_replaced)
    assert model is not None and key is None


def test_a_broken_entry_is_removed_and_the_model_loads_from_disk(tiny_study, filled, tmp_path, monkeypatch, caplog):
    from cnmc_core.explain import GradcamPass
    from cnmc_core.predict import Predictor

    root, name = tiny_study
    store = StudyStore(root, name)
    cache, first = tmp_path / "compiled", filled["first"]
    shutil.copytree(filled["folder"], cache)  # the filled cache, a copy of its own to break
    monkeypatch.setenv(compiled.ENV, str(cache))
    entry = next(e for e in cache.iterdir() if (e / "saved" / "saved_model.pb").is_file())
    (entry / "saved" / "saved_model.pb").write_bytes(b"not a graph")
    with caplog.at_level(logging.WARNING, logger="cnmc_core.compiled"):
        again = Predictor.load(store)
    assert sorted(again.models) == sorted(first.models) and not again.broken
    assert sum(isinstance(p, GradcamPass) for p in again._passes.values()) == 1  # that one the ordinary way
    assert not entry.exists()
    assert any("could not be read" in r.getMessage() and "removed" in r.getMessage() for r in caplog.records)
    assert again.classify(a_cell_file(root, name)).result == filled["one"].result


def test_a_folder_others_can_write_to_is_never_used(tiny_study, tmp_path, monkeypatch):
    from cnmc_core.models import HEAD_POOL, load_classifier
    from cnmc_core.registry import get_spec

    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # as /tmp is: anyone could plant an entry under the right name
    monkeypatch.setenv(compiled.ENV, str(shared))
    model_file = StudyStore(*tiny_study).model_file("vgg16", "model.keras")
    layer = get_spec("vgg16").gradcam_layer
    model, gradcam_pass, key = compiled.load_pass(model_file, layer, [HEAD_POOL], load_classifier)
    assert key is None  # nothing will be saved there
    planted = shared / compiled.entry_key(model_file, layer, [HEAD_POOL])
    planted.mkdir()
    (planted / "meta.json").write_text("{}")
    assert compiled.load(model_file, layer, [HEAD_POOL]) == (None, None)  # nor read from there
    assert not compiled.save(gradcam_pass, model, "0" * 64, layer)
    assert sorted(p.name for p in shared.iterdir()) == [planted.name]
    assert stat.S_IMODE(shared.stat().st_mode) == 0o777  # and its permissions are not touched


def test_off_caches_nothing(tiny_study, tmp_path, monkeypatch):
    from cnmc_core.predict import Predictor

    monkeypatch.setenv(compiled.ENV, "off")
    assert compiled.cache_root() is None
    predictor = Predictor.load(StudyStore(*tiny_study))
    assert predictor.save_compiled() == 0
    monkeypatch.setenv(compiled.ENV, "")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert compiled.cache_root() == tmp_path / "xdg" / "cnmc_core" / "compiled"


@pytest.mark.parametrize("limit, kept", [(10_000, {"new", "mid", "old"}), (2_500, {"new", "mid"}), (0, set())])
def test_the_least_recently_used_entries_go_first(tmp_path, limit, kept):
    for age, name in enumerate(("new", "mid", "old")):
        entry = tmp_path / name
        (entry / "saved").mkdir(parents=True)
        (entry / "saved" / "variables.data").write_bytes(b"x" * 1000)
        (entry / "meta.json").write_text("{}")
        os.utime(entry, (1_000_000 - age * 100, 1_000_000 - age * 100))
    in_progress = f".{'1' * 16}.{os.getpid()}.0123abcd.tmp"
    (tmp_path / in_progress).mkdir()  # a save in progress is never taken
    removed = compiled.evict(tmp_path, limit)
    assert {p.name for p in tmp_path.iterdir()} == kept | {in_progress}
    assert set(removed) == {"new", "mid", "old"} - kept
