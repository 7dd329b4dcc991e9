"""Killed runs resume, changed data is noticed, broken or hostile artifacts are named, paths stay inside."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cnmc_core.disk import remove_stale_temp_files
from cnmc_core.store import StoreError, StudyStore, list_studies

from .conftest import ROOT, write_cell
from .helpers import cli

ARGS = ("--weights", "none", "--input-size", "75", "--epochs", "2", "--preset", "paper_std")


def _start(args, progress: Path) -> subprocess.Popen:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.Popen(
        [sys.executable, "-m", "cnmc_core", *map(str, args), "--progress-file", str(progress)],
        # Ctrl-C as in a terminal, even when the test run itself was started in the background by a script
        # (such a job inherits SIGINT ignored, and Python would keep ignoring it in the child)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _wait_for(progress: Path, predicate, proc, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the run ended before the moment to interrupt it: {proc.stderr.read()[-1500:]}")
        try:
            info = json.loads(progress.read_text())
        except (OSError, ValueError):
            info = {}
        if predicate(info):
            return info
        time.sleep(0.02)
    pytest.fail("timed out waiting for the run to reach the moment to interrupt it")


@pytest.mark.slow
def test_sigkill_mid_features_then_rerun_finishes_without_redoing(demo_data, tmp_path):
    art = tmp_path / "art"
    args = [
        "train",
        "--data",
        demo_data,
        "--artifacts",
        art,
        "--study",
        "k",
        "--models",
        "efficientnet_b0,resnet50",
        *ARGS,
        "--feature-batch-size",
        "8",
    ]
    proc = _start(args, tmp_path / "p.json")
    _wait_for(
        tmp_path / "p.json",
        lambda i: (
            i.get("model") == "resnet50"
            and i.get("stage") == "features"
            and i.get("split") == "train"
            and 16 <= i.get("done", 0) < i.get("total", 0)
        ),
        proc,
    )
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    study = art / "k"
    assert (study / "models" / "efficientnet_b0" / "metrics.json").is_file()
    assert not (study / "models" / "resnet50" / "metrics.json").exists()  # never a half model as a result
    done_before = time.time()

    r = cli(*args)
    assert r.returncode == 0, r.stderr
    assert "already complete, skipped: efficientnet_b0" in r.stdout
    # Only the images not cached before the kill are computed again.
    line = next(x for x in r.stderr.splitlines() if x.startswith("computing features of"))
    computed, total = int(line.split()[3]), int(line.split()[5])
    assert 0 < computed < total
    assert json.loads((study / "study.json").read_text())["status"] == "complete"
    assert (study / "models" / "efficientnet_b0" / "model.keras").stat().st_mtime < done_before  # not retrained
    hidden = [p for p in study.rglob("*") if p.name.startswith(".")]
    assert hidden == []


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_says_how_to_resume(demo_data, tmp_path):
    args = [
        "train",
        "--data",
        demo_data,
        "--artifacts",
        tmp_path / "art",
        "--study",
        "c",
        "--models",
        "resnet50",
        *ARGS,
        "--feature-batch-size",
        "8",
    ]
    proc = _start(args, tmp_path / "p.json")
    _wait_for(tmp_path / "p.json", lambda i: i.get("stage") == "features" and i.get("done", 0) >= 8, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert "run the same command again to resume" in err and "Traceback" not in err


@pytest.mark.slow
def test_changed_data_is_detected_and_stale_features_never_reused(demo_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(demo_data, data)
    args = [
        "train",
        "--data",
        data,
        "--artifacts",
        tmp_path / "art",
        "--study",
        "d",
        "--models",
        "efficientnet_b0",
        *ARGS,
    ]
    assert cli(*args).returncode == 0
    edited = next(data.glob("training_data/fold_0/all/*.bmp"))
    write_cell(edited, value=250, side=450, radius=150)  # an edited file: same name, new content
    r = cli(*args)
    assert r.returncode == 0, r.stderr
    assert "the data changed since this study last ran" in r.stdout
    assert "computing features of 1 of" in r.stderr  # just the edited image; the rest from the cache


def test_symlinked_study_outside_the_root_is_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "study.json").write_text(json.dumps({"created": "x", "config": {"models": []}}))
    root = tmp_path / "root"
    root.mkdir()
    (root / "evil").symlink_to(outside, target_is_directory=True)
    with pytest.raises(StoreError, match="outside the artifacts root"):
        StudyStore(root, "evil")
    entry = next(s for s in list_studies(root) if s["name"] == "evil")
    assert "outside the artifacts root" in entry["problem"]
    r = cli("predict", "--study", "evil", "--artifacts", root, "x.bmp")
    assert r.returncode == 2 and "outside the artifacts root" in r.stderr


@pytest.mark.parametrize("name", ["../up", "/etc", "a/b", ".hidden", "", "x" * 81, "..", "a\\b"])
def test_study_names_cannot_escape(name, tmp_path):
    with pytest.raises(StoreError):
        StudyStore(tmp_path, name)


@pytest.mark.slow  # TensorFlow
def test_a_model_file_that_would_run_code_is_refused(tmp_path):
    import keras

    from cnmc_core.models import load_classifier

    inp = keras.Input((4,))
    model = keras.Model(inp, keras.layers.Lambda(lambda x: x * 2)(inp))
    path = tmp_path / "model.keras"
    model.save(path)
    with pytest.raises(ValueError, match="refused: it holds code"):
        load_classifier(path)


def test_stale_temp_files_of_dead_processes_are_removed(tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    ).stdout.strip()
    stale = tmp_path / "models" / "vgg16" / f".metrics.json.{dead}.abc.tmp"
    live = tmp_path / f".split.csv.{os.getppid()}.abc.tmp"  # a running process's file is left alone
    stale.parent.mkdir(parents=True)
    stale.write_text("half")
    live.write_text("in progress")
    assert remove_stale_temp_files(tmp_path) == 1
    assert not stale.exists() and live.exists()


@pytest.mark.slow
def test_broken_artifacts_are_named_and_the_rest_still_works(tiny_study, tmp_path, demo_data):
    root, name = tiny_study
    copy = tmp_path / "root"
    shutil.copytree(root / name, copy / name)
    store = StudyStore(copy, name)
    model = store.model_file("vgg16", "model.keras")
    model.write_bytes(model.read_bytes()[:1000])  # truncated
    r = cli("predict", "--study", name, "--artifacts", copy, next(demo_data.glob("training_data/fold_0/all/*.bmp")))
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert set(result["predictions"]) == {"efficientnet_b0"}
    assert "vgg16" in r.stderr and "vgg16" in json.dumps(result.get("unavailable", {}))

    store.model_file("efficientnet_b0", "metrics.json").write_text("{not json")
    entry = next(s for s in list_studies(copy) if s["name"] == name)
    assert not entry["complete"] and "efficientnet_b0" not in entry["models"]
    r = cli("studies", "--artifacts", copy)
    assert "incomplete" in r.stdout
    (copy / name / "study.json").unlink()
    assert "no study.json" in cli("studies", "--artifacts", copy).stdout


@pytest.mark.slow
def test_disk_full_mid_study_is_one_line_and_leaves_no_corrupt_study(demo_data, tmp_path, monkeypatch, capsys):
    import errno

    from cnmc_core import cli, disk

    real_write_text = disk.write_text

    def full_disk(path, write):
        if path.name != "predictions.csv":
            return real_write_text(path, write)

        def half_then_full(f):  # some bytes reach the temp file, then the disk is full
            f.write("path,subject,label,prob_all\n")
            raise OSError(errno.ENOSPC, "No space left on device", str(path))

        return real_write_text(path, half_then_full)

    monkeypatch.setattr(disk, "write_text", full_disk)
    art = tmp_path / "art"
    args = [
        "train",
        "--data",
        str(demo_data),
        "--artifacts",
        str(art),
        "--study",
        "full",
        "--models",
        "efficientnet_b0",
        *ARGS,
    ]
    assert cli.main(args) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "No space left on device" in err[0]
    study = art / "full"
    info = json.loads((study / "study.json").read_text())  # still valid JSON, and it says what happened
    assert info["status"] == "failed" and "No space left on device" in info["error"]
    assert not (study / "models" / "efficientnet_b0" / "metrics.json").exists()  # not marked complete
    assert [p for p in study.rglob("*") if p.name.startswith(".")] == []  # no temp file left behind

    monkeypatch.setattr(disk, "write_text", real_write_text)  # space again: the same command finishes
    assert cli.main(args) == 0
    assert json.loads((study / "study.json").read_text())["status"] == "complete"


class _Finaliser:
    """Sends Ctrl-C to this process from inside `__del__`, where Python reports the KeyboardInterrupt as
    'ignored' and goes on: how a Ctrl-C landing in one of TensorFlow's finalisers used to be lost."""

    def __del__(self):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)  # the handler runs here, inside the finaliser


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the swallowing, on purpose
def test_a_ctrl_c_swallowed_by_a_finaliser_still_stops_the_run_at_its_next_progress_event():
    from cnmc_core import progress
    from cnmc_core.commands import _ProgressPrinter

    printer = _ProgressPrinter(None)
    event = progress.ProgressEvent("head", model="vgg16", index=0, count=1)
    before = signal.signal(signal.SIGINT, signal.default_int_handler)  # Python's own, as in a terminal
    try:
        with progress.catching_interrupts():
            printer(event)  # no interrupt yet: nothing raised
            gone = _Finaliser()
            del gone  # the interrupt is swallowed here ...
            with pytest.raises(KeyboardInterrupt):
                printer(event)  # ... and raised again at the next event
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler before is back
    finally:
        signal.signal(signal.SIGINT, before)
