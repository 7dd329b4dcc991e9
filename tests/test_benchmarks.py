"""The benchmark scripts a user runs still run (tiny settings); their figures live in docs/benchmarks.md."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from .conftest import ROOT


@pytest.mark.slow
def test_device_check_runs_on_the_cpu_in_its_tiny_setting():
    out = subprocess.run(
        ["bash", "benchmarks/device_check.sh", "--tiny", "--models", "efficientnet_b0,resnet50"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHON": sys.executable},
    )  # this environment's
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(summary["models"]) == {"efficientnet_b0", "resnet50"}
    for row in summary["models"].values():
        assert row["float32"] > 0 and row["train_ratio"] > 0
        mixed = next(v for k, v in row.items() if k.startswith("mixed_"))
        assert mixed > 0
        assert row["feature_rel_err"] < 0.1  # mixed precision agrees with float32
