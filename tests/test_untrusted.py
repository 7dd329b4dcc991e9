"""A shared study is input from someone else, and two writers never mix (issue 12).

Crafted studies are copies of the session's `tiny_study`: nothing outside the study is read or
written, a damaged file is one `error:` line naming it, a second writer is refused, a dead one's
lock is taken over; bad values are refused by the parser before anything is written; the scan
reads no file that is too large or that lies outside the data folder.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from cnmc_core import cli as cli_module
from cnmc_core import synthetic
from cnmc_core.dataset import MAX_FILE_BYTES, scan
from cnmc_core.store import StoreError, StudyStore, record_data_root, trusted_data_roots

from .conftest import ROOT, write_cell
from .helpers import cli


@pytest.fixture
def study_copy(tiny_study, tmp_path) -> tuple[Path, str]:
    """A private copy of the tiny study, to damage: (artifacts root, study name)."""
    root, name = tiny_study
    shutil.copytree(root / name, tmp_path / "root" / name)
    return tmp_path / "root", name


def run_main(args, capsys) -> tuple[int, list[str]]:
    """`python -m cnmc_core ARGS` in this process: (exit code, the non-empty lines on stderr)."""
    code = cli_module.main([str(a) for a in args])
    return code, [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---- a study that names paths ------------------------------------------------------------------------

def test_a_model_key_that_is_a_path_reads_and_writes_nothing_outside(study_copy, tmp_path, capsys):
    root, name = study_copy
    study = root / name
    outside = tmp_path / "outside" / "m"  # models/../../../outside/m from the study's models/ folder
    outside.mkdir(parents=True)
    shutil.copy(study / "models" / "vgg16" / "metrics.json", outside / "metrics.json")
    shutil.copy(study / "models" / "vgg16" / "predictions.csv", outside / "predictions.csv")
    (outside / "model.keras").write_bytes(b"")
    assert (study / "models" / "../../../outside/m").resolve() == outside.resolve()
    info = json.loads((study / "study.json").read_text())
    info["models"].append("../../../outside/m")
    (study / "study.json").write_text(json.dumps(info))
    before = snapshot(tmp_path / "outside")

    code, err = run_main(["stats", "--artifacts", root, "--study", name], capsys)
    assert code == 2 and len(err) == 1
    assert err[0] == (f"error: {name}/study.json: models names '../../../outside/m', "
                      "which is not a model key of this tool")
    assert snapshot(tmp_path / "outside") == before  # nothing rewritten, no subjects.csv made
    with pytest.raises(StoreError, match="is not a model key"):
        StudyStore(root, name).model_dir("../../../outside/m")


def test_a_symlink_out_of_the_study_is_not_followed(study_copy, tmp_path, capsys):
    root, name = study_copy
    metrics = root / name / "models" / "vgg16" / "metrics.json"
    target = tmp_path / "elsewhere.json"
    shutil.move(metrics, target)
    metrics.symlink_to(target)
    before = target.read_bytes()
    code, err = run_main(["stats", "--artifacts", root, "--study", name], capsys)
    assert code == 2 and len(err) == 1
    assert err[0].startswith(f"error: {name}/models/vgg16/metrics.json leads outside study '{name}'")
    assert target.read_bytes() == before
    gallery_cell = StudyStore(root, name).gallery_cell("c00")
    gallery_cell.unlink(missing_ok=True)
    gallery_cell.parent.mkdir(parents=True, exist_ok=True)
    gallery_cell.symlink_to(write_cell(tmp_path / "any.png"))
    with pytest.raises(StoreError, match="leads outside study"):
        StudyStore(root, name).gallery_cell("c00")


# ---- damaged artifacts: one line naming the file ------------------------------------------------------

def _text_in_prob(path: Path) -> None:
    lines = path.read_text().splitlines()
    lines[1] = lines[1].rsplit(",", 1)[0] + ",high"
    path.write_text("\n".join(lines) + "\n")


def _drop_prob(path: Path) -> None:
    path.write_text("\n".join(line.rsplit(",", 1)[0] for line in path.read_text().splitlines()) + "\n")


def _truncate_mid_row(path: Path) -> None:
    text = path.read_text()
    path.write_text(text[: text.index("\n", len(text) // 2) + 5])  # the last row: its path's first characters


def _metrics(change):
    def damage(path: Path) -> None:
        path.write_text(json.dumps(change(json.loads(path.read_text()))))
    return damage


DAMAGE = {
    "prob_all holds text": ("predictions.csv", _text_in_prob, "prob_all in row 1 is not a finite number"),
    "no prob_all column": ("predictions.csv", _drop_prob, "missing column(s) prob_all"),
    "header only": ("predictions.csv", lambda p: p.write_text("path,subject,label,prob_all\n"), "holds no predictions"),
    "truncated predictions": ("predictions.csv", _truncate_mid_row, "is not a finite number"),
    "a probability of 1.5": ("predictions.csv", lambda p: p.write_text(
        p.read_text().replace(p.read_text().splitlines()[1], p.read_text().splitlines()[1].rsplit(",", 1)[0] + ",1.5")),
        "prob_all in row 1 is 1.5, outside [0, 1]"),
    "metrics is a list": ("metrics.json", lambda p: p.write_text("[1, 2]"), "expected a JSON object, found list"),
    "string confusion matrix": ("metrics.json", _metrics(lambda m: {**m, "confusion_matrix": "[[1, 2], [3, 4]]"}),
                                "confusion_matrix must be [[tn, fp], [fn, tp]] of counts"),
    "NaN accuracy": ("metrics.json",
                     lambda p: p.write_text(p.read_text().replace('"accuracy": ', '"accuracy": NaN, "x": ')),
                     "accuracy must be a finite number or null"),
    "truncated metrics": ("metrics.json", lambda p: p.write_text(p.read_text()[:40]), "cannot be read"),
    # a sparse file: 300 MB by its size, no disk used; refused by its size, before a byte of it is parsed
    "a 300 MB predictions.csv": ("predictions.csv", lambda p: os.truncate(p, 300 * 2**20),
                                 "cannot be read (300 MB is over the 256 MB a study file may be; not read)"),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_a_damaged_artifact_is_one_error_line_naming_the_file(case, study_copy, capsys):
    root, name = study_copy
    file, damage, problem = DAMAGE[case]
    damage(root / name / "models" / "vgg16" / file)
    ensemble_before = (root / name / "models" / "ensemble" / "metrics.json").read_bytes()
    code, err = run_main(["stats", "--artifacts", root, "--study", name], capsys)
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith(f"error: {name}/models/vgg16/{file}: "), err
    assert problem in err[0]
    # Never an ensemble silently made of the models that are left.
    assert (root / name / "models" / "ensemble" / "metrics.json").read_bytes() == ensemble_before


def _npz_member(header: dict, payload: bytes) -> bytes:
    """One .npy member, its header written by numpy's own writer (which trusts what it is given)."""
    import io

    import numpy as np

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue() + payload


def test_array_files_that_unpack_too_far_or_lie_about_their_arrays_are_refused_unread(tmp_path):
    import zipfile

    import numpy as np

    from cnmc_core import disk

    honest = tmp_path / "honest.npz"
    np.savez(honest, mean=np.arange(4.0), threshold=np.float32(2.5))
    arrays = disk.read_npz(honest)
    assert arrays["mean"].tolist() == [0.0, 1.0, 2.0, 3.0] and float(arrays["threshold"]) == 2.5

    bomb = tmp_path / "bomb.npz"  # 8 MB of zeros, compressed to a few kB: an .npz can unpack far beyond its size
    np.savez_compressed(bomb, coords=np.zeros(2**20))
    assert bomb.stat().st_size < 50_000
    with pytest.raises(ValueError, match=r"it unpacks to 8 MB, over the 1 MB a study file may be; not read"):
        disk.read_npz(bomb, limit=2**20)

    liar = tmp_path / "liar.npz"  # a header declaring 8 TB over 16 bytes: refused before numpy allocates the array
    with zipfile.ZipFile(liar, "w") as z:
        z.writestr("coords.npy", _npz_member({"descr": "<f8", "fortran_order": False, "shape": (10**12,)}, bytes(16)))
    with pytest.raises(ValueError, match=r"its array 'coords.npy' declares 8,000,000,000,000 bytes but holds 1\d\d"):
        disk.read_npz(liar)

    bare = tmp_path / "array.npz"  # an .npy under an .npz's name: np.load would hand back a bare array
    np.save(tmp_path / "a.npy", np.arange(3))
    bare.write_bytes((tmp_path / "a.npy").read_bytes())
    noise = tmp_path / "noise.npz"  # neither: np.load would call it a pickle
    noise.write_bytes(b"\x80\x04noise" * 8)
    for impostor in (bare, noise):
        with pytest.raises(ValueError, match=r"it is not an .npz \(a zip of arrays\); not read"):
            disk.read_npz(impostor)
    zipped = tmp_path / "heatmap.npy"  # and the other way round: a zip under an .npy's name (a gallery heatmap)
    zipped.write_bytes(honest.read_bytes())
    with pytest.raises(ValueError, match=r"it is not an .npy \(one array\); not read"):
        disk.read_npy(zipped)
    lying = tmp_path / "lying.npy"  # 800 GB declared over 16 bytes: numpy would try to allocate it (MemoryError)
    lying.write_bytes(_npz_member({"descr": "<f8", "fortran_order": False, "shape": (10**11,)}, bytes(16)))
    with pytest.raises(ValueError, match=r"it declares 800,000,000,000 bytes but holds 144; not read"):
        disk.read_npy(lying)

    # A shared study's feature cache (read by the Classify page for reference cells) takes such files, and any
    # larger than a cached image's features can be, for missing entries.
    from cnmc_core.features import MAX_ENTRY_BYTES, FeatureCache

    cache = FeatureCache(tmp_path / "cache", "vgg16", "0" * 40, 64)
    sha1s = {"honest": "a" * 40, "lying": "b" * 40, "zipped": "c" * 40, "large": "d" * 40}
    cache.put(sha1s["honest"], np.ones((2, 512), np.float32))
    for name, source in (("lying", lying), ("zipped", zipped)):
        cache.path(sha1s[name]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, cache.path(sha1s[name]))
    cache.put(sha1s["large"], np.zeros((2, MAX_ENTRY_BYTES // 8 + 1), np.float32))  # a valid .npy, over the limit
    assert cache.get(sha1s["honest"], 2).shape == (2, 512)
    assert [cache.get(sha1s[n], 1) for n in ("lying", "zipped", "large")] == [None, None, None]

    # The study's reader takes such a file for a missing one (the predictor's out-of-distribution check then
    # goes without that model's feature reference), as the feature-space maps' reader does (the page offers to
    # compute them again).
    store = StudyStore(tmp_path / "root", "s")
    target = store.feature_reference("vgg16")
    target.parent.mkdir(parents=True)
    shutil.copy(liar, target)
    assert store.read_feature_reference("vgg16") is None


def test_a_damaged_study_json_is_named(study_copy, capsys):
    root, name = study_copy
    (root / name / "study.json").write_text('["not", "an", "object"]')
    code, err = run_main(["stats", "--artifacts", root, "--study", name], capsys)
    assert (code, err) == (2, [f"error: {name}/study.json: expected a JSON object, found list"])


def test_the_ensemble_of_a_partial_study_is_built_only_when_asked(study_copy, capsys):
    root, name = study_copy
    (root / name / "models" / "efficientnet_b0" / "metrics.json").unlink()
    code, err = run_main(["stats", "--artifacts", root, "--study", name], capsys)
    assert code == 2 and len(err) == 1
    assert "efficientnet_b0 not complete" in err[0] and "--partial-ensemble" in err[0]
    code, err = run_main(["stats", "--artifacts", root, "--study", name, "--partial-ensemble"], capsys)
    assert code == 0, err
    # One model left: no ensemble, and the one of the earlier, complete run is not shown as current.
    assert not (root / name / "models" / "ensemble" / "metrics.json").exists()


def test_replicates_are_bounded_by_the_parser(study_copy, capsys):
    root, name = study_copy
    code, err = run_main(["stats", "--artifacts", root, "--study", name, "--replicates", "100000000000"], capsys)
    assert code == 2 and len(err) == 1 and "argument --replicates: must be from 100 to 100,000" in err[0]


@pytest.mark.slow  # TensorFlow
def test_a_random_bytes_model_file_is_called_broken(tmp_path):
    from cnmc_core.models import load_classifier

    path = tmp_path / "model.keras"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(ValueError, match="model.keras is broken"):
        load_classifier(path)
    with pytest.raises(FileNotFoundError):
        load_classifier(tmp_path / "missing.keras")


# ---- one writer per study -----------------------------------------------------------------------------

HOLD_LOCK = """
import sys, time
from cnmc_core.store import StudyLock, StudyStore
with StudyLock(StudyStore(sys.argv[1], sys.argv[2])):
    print("locked", flush=True)
    time.sleep(120)
"""


def test_a_second_writer_is_refused_and_a_dead_writers_lock_is_taken_over(study_copy, demo_data):
    root, name = study_copy
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(root), name], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        for args in (["stats"], ["train", "--data", demo_data, "--weights", "none", "--models", "vgg16"]):
            r = cli(*args, "--artifacts", root, "--study", name)
            assert r.returncode == 2, r.stderr
            lines = [line for line in r.stderr.splitlines() if line.strip()]
            assert len(lines) == 1, r.stderr
            assert lines[0].startswith(f"error: study {name} is being written by process {holder.pid} since ")
            assert lines[0].endswith("; wait for it or use another --study")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert json.loads((root / name / ".lock").read_text())["pid"] == holder.pid  # left behind by the killed writer
    r = cli("stats", "--artifacts", root, "--study", name, "--replicates", "100")
    assert r.returncode == 0, r.stderr
    assert f"taking over the lock of process {holder.pid}" in r.stderr
    assert not (root / name / ".lock").exists()  # released when done


def test_two_demo_data_writers_at_once_write_the_images_once(tmp_path):
    spec = synthetic.DemoSpec(seed=5, train_all_subjects=3, train_hem_subjects=3, train_cells_all=2,
                              train_cells_hem=2, prelim_all_subjects=1, prelim_hem_subjects=1, prelim_cells=2,
                              final_subjects=2, final_cells=1)
    wrote = []
    threads = [threading.Thread(target=lambda: wrote.append(synthetic.ensure_generated(tmp_path / "d", spec)))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(wrote) == [False, False, True]
    assert synthetic.is_synthetic(tmp_path / "d")
    leftovers = [p.name for p in (tmp_path / "d").rglob("*") if ".tmp" in p.name]
    assert leftovers == []


# ---- values refused before anything is written ------------------------------------------------------

@pytest.mark.parametrize("args, needle", [
    (["--input-size", "0"], "argument --input-size: must be 1 or more; got 0"),
    (["--models", ""], "argument --models: --models is empty"),
    (["--seed", "-1"], "argument --seed: must be 0 or more; got -1"),
    (["--epochs", "0"], "argument --epochs: must be 1 or more; got 0"),
    (["--study", "evil\n"], "study name 'evil\\n' is not allowed"),
])
def test_the_parser_refuses_bad_values_before_anything_is_written(args, needle, demo_data, tmp_path, capsys):
    art = tmp_path / "art"
    code, err = run_main(["train", "--data", demo_data, "--artifacts", art, *args], capsys)
    assert code == 2 and len(err) == 1 and needle in err[0], err
    assert not art.exists()


def test_an_empty_data_argument_is_refused(tmp_path, capsys):
    code, err = run_main(["train", "--data", "", "--artifacts", tmp_path / "art"], capsys)
    assert code == 2 and err == [
        "error: argument --data: is empty; give the folder (see `python -m cnmc_core train --help`)"]
    assert not (tmp_path / "art").exists()


def test_a_failed_train_leaves_no_empty_study_folder(tmp_path):
    (tmp_path / "nothing").mkdir()
    r = cli("train", "--data", tmp_path / "nothing", "--artifacts", tmp_path / "art", "--study", "s")
    assert r.returncode == 2 and "no C-NMC images found" in r.stderr
    assert not (tmp_path / "art" / "s").exists()


# ---- the scan ----------------------------------------------------------------------------------------

def test_the_scan_reads_no_file_too_large_or_outside_the_data_folder(kaggle_dir, tmp_path, monkeypatch):
    fold = kaggle_dir / "C-NMC_Leukemia" / "training_data" / "fold_0" / "all"
    big = fold / "UID_1_50_1_all.bmp"
    with open(big, "wb") as f:  # 2 GiB, sparse: a header, then nothing on disk
        f.write(b"BM")
        f.truncate(2 * 2**30)
    secret = write_cell(tmp_path / "outside" / "secret.bmp")
    (fold / "UID_1_51_1_all.bmp").symlink_to(secret)
    read = []
    real_read = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: read.append(self.name) or real_read(self))

    records = {Path(r.path).name: r for r in scan(kaggle_dir).records}
    assert big.name not in read and "UID_1_51_1_all.bmp" not in read
    assert f"over the per-file maximum of {MAX_FILE_BYTES // 2**20} MB" in records[big.name].reason
    link = records["UID_1_51_1_all.bmp"]
    assert "symbolic link to a file outside the data folder" in link.reason and link.sha1 == ""


# ---- trusted data folders ----------------------------------------------------------------------------

def test_only_this_machines_data_folders_are_trusted(tiny_study, demo_data, study_copy, tmp_path, monkeypatch):
    monkeypatch.delenv("CNMC_DATA_ROOTS", raising=False)
    root, _ = tiny_study
    assert demo_data.resolve() in trusted_data_roots(root)  # the study was trained from it here
    copy_root, _ = study_copy
    assert trusted_data_roots(copy_root) == []  # a shared study brings no trust with it
    record_data_root(copy_root, tmp_path / "mine")
    monkeypatch.setenv("CNMC_DATA_ROOTS", os.pathsep.join([str(tmp_path / "env"), ""]))
    assert trusted_data_roots(copy_root) == [(tmp_path / "mine").resolve(), (tmp_path / "env").resolve()]
