"""How the forward passes run: precision, XLA and several GPUs. Speed options; the protocol is unchanged.

precision "float32" (default) or "mixed": the frozen base computes in bfloat16 (CPUs, NVIDIA GPUs
of compute capability 8.0 and later) or float16 (older NVIDIA GPUs), with float32 weights. It
acts on feature extraction and fine-tuning only: a twin of the classifier under the mixed policy
shares the classifier's weights by copy; the head is trained in float32, and the classifier saved
with the study is always float32 (it runs anywhere, and the dashboard predicts in float32).
Features are cached per precision. `tests/test_runtime.py` states the agreement with float32.

xla "auto" (Keras's own choice: XLA on with one GPU, off on CPUs and under tf.distribute), "on" or
"off": whether the forward passes and fine-tuning steps are XLA-compiled (`jit_compile`).

distribute "auto" (tf.distribute.MirroredStrategy over all GPUs when two or more are visible),
"none" (the default device), "mirrored" (MirroredStrategy always: over the GPUs, or over the
CPU devices when there is no GPU; for testing) or "multiworker" (tf.distribute.MultiWorkerMirroredStrategy
over the machines listed in $TF_CONFIG: every worker runs the same command with its own TF_CONFIG; see
docs/protocols.md, "Several machines"). Under a strategy each replica takes the configured batch, so the
global batch is batch x replicas. Models are built under `scope(strategy)`. The head trains on each worker
alone (it is small, and every worker has all the features); fine-tuning cannot run under "multiworker"
(config.StudyConfig.validate says why).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator

import numpy as np

PRECISIONS = ("float32", "mixed")
XLA_MODES = ("auto", "on", "off")
DISTRIBUTE_MODES = ("auto", "none", "mirrored", "multiworker")
MULTIWORKER_HELP = 'docs/protocols.md, "Several machines"'


def mixed_policy() -> str:
    """The Keras mixed policy for this machine: bfloat16 on CPUs and recent GPUs, float16 on NVIDIA GPUs before 8.0."""
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            cc = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability", (8, 0))
            return "mixed_bfloat16" if tuple(cc) >= (8, 0) else "mixed_float16"
    return "mixed_bfloat16"


def policy_name(precision: str) -> str:
    """"float32" -> "float32"; "mixed" -> mixed_policy()."""
    if precision not in PRECISIONS:
        raise ValueError(f"--precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    return "float32" if precision == "float32" else mixed_policy()


@contextlib.contextmanager
def dtype_policy(policy: str) -> Iterator[None]:
    """Layers built inside compute under `policy` (e.g. "mixed_bfloat16"); float32 again afterwards.

    (keras.utils.clear_session() also resets the policy to float32: set it after clearing.)
    """
    import keras

    keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy("float32")


def mixed_twin(classifier, build, policy: str):
    """The same classifier computing under `policy`, with a copy of `classifier`'s weights.

    `build()` builds the architecture again (random weights: nothing is downloaded or read).
    """
    with dtype_policy(policy):
        twin = build()
    twin.set_weights(classifier.get_weights())
    return twin


def set_xla(model, xla: str) -> None:
    """XLA-compile `model`'s forward passes ("on"), not ("off"), or leave it to Keras ("auto")."""
    if xla not in XLA_MODES:
        raise ValueError(f"--xla must be one of {', '.join(XLA_MODES)}; got {xla!r}")
    if xla != "auto":
        model.jit_compile = xla == "on"


def jit_compile(xla: str) -> bool | str:
    """The `jit_compile` argument of Model.compile for `xla`."""
    return {"auto": "auto", "on": True, "off": False}[xla]


def make_strategy(distribute: str):
    """A tf.distribute strategy, or None for the default device (see the module docstring).

    "multiworker" reads $TF_CONFIG (checked first: a bad one is a ValueError naming what is wrong) and waits
    until every worker listed there has started; create it before TensorFlow runs anything else.
    """
    if distribute not in DISTRIBUTE_MODES:
        raise ValueError(f"--distribute must be one of {', '.join(DISTRIBUTE_MODES)}; got {distribute!r}")
    if distribute == "none":
        return None
    if distribute == "multiworker":
        check_tf_config(os.environ.get("TF_CONFIG"))
    import tensorflow as tf

    if distribute == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()

    gpus = tf.config.list_logical_devices("GPU")
    if distribute == "auto":
        return tf.distribute.MirroredStrategy() if len(gpus) >= 2 else None
    devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(devices=devices)


def check_tf_config(text: str | None) -> dict:
    """$TF_CONFIG for "multiworker", parsed: {"cluster": {"worker": ["host:port", ...]}, "task": {"type":
    "worker", "index": i}}. Raises ValueError with one line saying what is wrong and where the format is."""
    where = f"(the format: {MULTIWORKER_HELP})"
    if not text or not text.strip():
        raise ValueError(f"--distribute multiworker needs TF_CONFIG: the cluster's workers and this one's index "
                         f"{where}")
    try:
        config = json.loads(text)
    except ValueError as e:
        raise ValueError(f"TF_CONFIG is not JSON ({e}) {where}") from None
    workers = config.get("cluster", {}).get("worker") if isinstance(config, dict) else None
    if not isinstance(workers, list) or not workers or not all(isinstance(w, str) and ":" in w for w in workers):
        raise ValueError(f'TF_CONFIG needs "cluster": {{"worker": ["host:port", ...]}} {where}')
    task = config.get("task")
    index = task.get("index") if isinstance(task, dict) else None
    if not isinstance(task, dict) or task.get("type") != "worker" or not isinstance(index, int) \
            or not 0 <= index < len(workers):
        raise ValueError(f'TF_CONFIG needs "task": {{"type": "worker", "index": i}} with i from 0 to '
                         f"{len(workers) - 1} {where}")
    return config


def scope(strategy):
    """strategy.scope(), or a no-op without a strategy."""
    return strategy.scope() if strategy is not None else contextlib.nullcontext()


def replicas(strategy) -> int:
    return int(strategy.num_replicas_in_sync) if strategy is not None else 1


def forward(model, x: np.ndarray) -> np.ndarray:
    """model(x) in inference mode for one batch, as float32 numpy.

    Under a strategy with several replicas the batch is split between them with `predict`:
    Keras's `predict_on_batch` would give every replica the whole batch and return it that many
    times over.
    """
    strategy = getattr(model, "distribute_strategy", None)
    if strategy is not None and strategy.num_replicas_in_sync > 1:
        out = model.predict(x, batch_size=len(x), verbose=0)
    else:
        out = model.predict_on_batch(x)
    return np.asarray(out, dtype=np.float32)
