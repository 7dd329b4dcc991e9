"""Several machines (issue 16): `train --distribute multiworker` (tf.distribute.MultiWorkerMirroredStrategy) run by
two worker processes on 127.0.0.1, each with its own TF_CONFIG, must give the features and the trained head of a
single-process run. Bounded: every process has a timeout and is killed when it passes it.

The tolerance is the MirroredStrategy test's (tests/test_runtime.py): features within 1e-4 of their scale. Each
worker computes half of every batch and the strategy gathers the halves, so every feature comes from one worker;
the head then trains on each worker alone, on all the features, as in one process.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cnmc_core import runtime
from cnmc_core.config import from_preset

from .conftest import ROOT

KEY = "efficientnet_b0"
TIMEOUT_S = 600  # per process; a worker whose peer never comes up would otherwise wait for ever


def _train(data: Path, artifacts: Path, distribute: str, env: dict | None = None) -> subprocess.Popen:
    command = [sys.executable, "-m", "cnmc_core", "train", "--data", str(data), "--artifacts", str(artifacts),
               "--study", "mw", "--models", KEY, "--weights", "none", "--input-size", "75", "--epochs", "3",
               "--seed", "1", "--preset", "paper_std", "--distribute", distribute]
    return subprocess.Popen(command, cwd=ROOT, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _finish(proc: subprocess.Popen, what: str) -> None:
    try:
        _, err = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"{what} did not finish within {TIMEOUT_S} s: {err[-2000:]}")
    assert proc.returncode == 0, f"{what} exited {proc.returncode}: {err[-3000:]}"


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _features(artifacts: Path) -> dict[str, np.ndarray]:
    """Every cached feature array of the run, by its path in the feature cache."""
    root = artifacts / ".cache" / "features"
    return {str(p.relative_to(root)): np.load(p) for p in sorted(root.rglob("*.npy"))}


def _head(artifacts: Path) -> list[np.ndarray]:
    from cnmc_core.models import HEAD_DENSE, load_classifier

    model = load_classifier(artifacts / "mw" / "models" / KEY / "model.keras")
    return model.get_layer(HEAD_DENSE).get_weights()


@pytest.mark.slow
def test_two_workers_on_loopback_give_the_single_process_features_and_head(demo_data, tmp_path):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    # Worker 0 (the chief) writes the study; worker 1 writes to its own scratch folder.
    workers = [_train(demo_data, tmp_path / f"worker{i}", "multiworker",
                      {"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})})
               for i in range(2)]
    single = _train(demo_data, tmp_path / "single", "none")
    try:
        for i, proc in enumerate(workers):
            _finish(proc, f"worker {i}")
        _finish(single, "the single-process run")
    finally:
        for proc in (*workers, single):
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)

    one = _features(tmp_path / "single")
    assert one, "the single-process run cached no features"
    for i in range(2):
        study = json.loads((tmp_path / f"worker{i}" / "mw" / "study.json").read_text())
        assert study["status"] == "complete" and study["compute"]["replicas"] == 2
        many = _features(tmp_path / f"worker{i}")
        assert many.keys() == one.keys()  # the same images and views, in a cache of the same base
        scale = max(float(np.abs(a).max()) for a in one.values())
        diff = max(float(np.abs(many[k] - one[k]).max()) for k in one)
        assert diff <= 1e-4 * scale, (i, diff, scale)

        kernel, bias = _head(tmp_path / f"worker{i}")
        kernel1, bias1 = _head(tmp_path / "single")
        head_scale = float(np.abs(kernel1).max())
        assert np.abs(kernel - kernel1).max() <= 1e-4 * head_scale and np.abs(bias - bias1).max() <= 1e-4 * head_scale
        p_many = pd.read_csv(tmp_path / f"worker{i}" / "mw" / "models" / KEY / "predictions.csv")["prob_all"]
        p_one = pd.read_csv(tmp_path / "single" / "mw" / "models" / KEY / "predictions.csv")["prob_all"]
        assert np.abs(p_many.to_numpy() - p_one.to_numpy()).max() <= 1e-4


@pytest.mark.parametrize("tf_config, says", [
    (None, "--distribute multiworker needs TF_CONFIG"),
    ("{not json", "TF_CONFIG is not JSON"),
    ('{"cluster": {"worker": []}, "task": {"type": "worker", "index": 0}}', 'TF_CONFIG needs "cluster"'),
    ('{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 1}}', "with i from 0 to 0"),
])
def test_a_missing_or_bad_tf_config_is_one_clear_line(monkeypatch, tf_config, says):
    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    with pytest.raises(ValueError, match="docs/protocols.md") as e:
        runtime.make_strategy("multiworker")
    assert says in str(e.value) and "\n" not in str(e.value)


def test_multiworker_refuses_fine_tuning_and_says_what_to_use():
    with pytest.raises(ValueError, match="--distribute multiworker cannot fine-tune.*--distribute mirrored"):
        from_preset("finetune", distribute="multiworker")
    assert from_preset("paper", distribute="multiworker").distribute == "multiworker"
