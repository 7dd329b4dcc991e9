"""The one progress-event type: a study emits `ProgressEvent`s, the CLI prints them (and writes them
as JSON with --progress-file), and the dashboard reads that JSON back and describes it in words.

Stages, in the order a study goes through them:

    scan        message                                      scanning the data folder
    model       model, index, count                          a model starts (index 0-based)
    skip        model, index, count                          a model is already complete
    features    model, index, count, split, done, total      pooled features, per decoded batch
    head        model, index, count                          the head trains on the features
    finetune    model, index, count, epoch, epochs           one fine-tuning epoch ended (epoch 1-based)
    evaluate    model, index, count                          the fine-tuned model runs on the images
    save        model, index, count                          the model's artifacts are written
    statistics, gallery, done                                the study's end
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields

from .registry import MODELS

STAGES = ("scan", "model", "skip", "features", "head", "finetune", "evaluate", "save", "statistics", "gallery", "done")


@dataclass(frozen=True)
class ProgressEvent:
    stage: str  # one of STAGES
    model: str | None = None  # registry key of the model in progress
    index: int | None = None  # its place among the study's models, 0-based
    count: int | None = None  # how many models the study has
    split: str | None = None  # features: "train" or "val"
    done: int | None = None  # features: images done so far
    total: int | None = None  # features: images in this split
    epoch: int | None = None  # finetune: the epoch that just ended, 1-based
    epochs: int | None = None  # finetune: the most epochs it may run
    message: str | None = None  # scan: what is being scanned

    def to_dict(self) -> dict:
        """The fields that are set, as JSON-ready values (what --progress-file holds, plus its "time")."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, data: dict) -> ProgressEvent:
        """The event from `to_dict`'s form; keys it does not know (such as "time") are ignored."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


# Ctrl-C that cannot be lost. Python raises KeyboardInterrupt wherever the main thread is when the signal is
# handled; when that is inside a finaliser (`__del__`, of which TensorFlow has many) the exception is reported
# as "ignored" and the run goes on. So the command line's handler also remembers the interrupt, and every
# progress event raises it again (`raise_if_interrupted`): a run stops at its next event at the latest.
_INTERRUPTED = threading.Event()


def _on_interrupt(signum, frame) -> None:
    _INTERRUPTED.set()
    raise KeyboardInterrupt


@contextmanager
def catching_interrupts():
    """The remembering Ctrl-C handler while a command runs (the previous one after). Nothing off the main thread,
    where Python allows no handler, nor where Ctrl-C is ignored (a job started in the background by a script
    inherits that, and Python keeps it)."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        yield
        return
    _INTERRUPTED.clear()
    before = signal.signal(signal.SIGINT, _on_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)


def raise_if_interrupted() -> None:
    """KeyboardInterrupt again when an earlier one was swallowed on its way out."""
    if _INTERRUPTED.is_set():
        raise KeyboardInterrupt


def _model_name(key) -> str:
    spec = MODELS.get(str(key))
    return spec.name if spec else str(key)


def describe(event: dict | ProgressEvent | None) -> tuple[float, str]:
    """(fraction of the whole build done, one line for a person) from the latest event.

    No event yet means the demo's images are still being written (the CLI emits its first event
    after that).
    """
    if event is None or event == {}:
        return 0.0, "writing the synthetic cell images …"
    if isinstance(event, dict):
        event = ProgressEvent.from_dict(event) if event.get("stage") else ProgressEvent(stage="")
    stage = event.stage
    if stage == "done":
        return 1.0, "done"
    if stage == "scan":
        return 0.0, "scanning the images …"
    count, index = max(1, int(event.count or 1)), int(event.index or 0)
    within = {"model": 0.0, "head": 0.9, "save": 0.97, "skip": 1.0}.get(stage, 0.0)
    what = {"model": "building", "head": "training the head", "save": "saving",
            "skip": "already complete"}.get(stage, stage)
    if stage == "features":
        done, total = int(event.done or 0), max(1, int(event.total or 1))
        train = event.split == "train"
        within = (0.75 * done / total) if train else 0.75 + 0.15 * done / total
        what = f"features of the {'training' if train else 'validation'} images {done}/{total}"
    fraction = min(1.0, (index + within) / count)
    return fraction, f"model {index + 1} of {count}: {_model_name(event.model or '?')} — {what}"
