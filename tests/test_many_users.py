"""Many users at once, in a real headless Chromium: 8 sessions upload different cells to one dashboard
at the same moment (benchmarks/load_users.py) and each must be shown its own right answer, with the
study's models loaded exactly once in the server (no race on the first load of the shared cache)."""

from __future__ import annotations

import pytest

from .helpers import chromium_marks

pytestmark = chromium_marks("async_api")  # skips the module before load_users imports Playwright

from benchmarks import load_users  # noqa: E402

SESSIONS = 8


def test_eight_sessions_at_once_each_get_their_own_right_answer_and_one_model_load(tiny_study):
    root, name = tiny_study
    report = load_users.run(str(root), name, sessions=SESSIONS, timeout=300)

    assert not report.exceptions, report.exceptions
    assert len(report.sessions) == SESSIONS
    assert len({s.file for s in report.sessions}) == SESSIONS  # different cells: a mix-up would show
    for s in report.sessions:
        assert not s.error, f"{s.file}: {s.error}"
        assert s.shown_file == s.file, "a session was shown another session's upload"
        assert s.shown_label.lower() == s.expected_label.lower()  # (the page writes "Inconclusive")
        assert s.shown_ensemble == pytest.approx(s.expected_ensemble, abs=6e-4)  # shown to 3 decimals
    assert report.all_correct
    # All eight asked for the models before any had them: st.cache_resource must have loaded them once.
    assert report.loads == 1, f"{report.loads} model loads in the server:\n{report.log[-2000:]}"
    assert report.rss_after_mb < 4096, f"server RSS {report.rss_after_mb:.0f} MB after {SESSIONS} sessions"
    # Where the CPU went (the benchmark's explanation of its waits): both sides did work, and together no more
    # than the cores could give in that time (a process counted twice, or in the wrong tree, would break this).
    assert len(report.cpu) == 2, report.cpu  # opening the sessions; the uploads to the last result
    for cpu in report.cpu:
        assert cpu.server_s > 0.2 and cpu.browsers_s > 0.2, cpu
        assert cpu.server_s + cpu.browsers_s <= cpu.wall_s * cpu.cores * 1.05, cpu


def test_too_many_sessions_are_refused():
    with pytest.raises(ValueError, match="--sessions must be between 1 and"):
        load_users.run("unused", "unused", sessions=load_users.MAX_SESSIONS + 1)
