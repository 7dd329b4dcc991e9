"""Serving the dashboard (issue 16). Local by default: started with the project's own config, it listens on
loopback only; the demo-build button is offered only on a loopback bind (or when allowed); a login appears only
when secrets.toml configures one; the study's models load once, in the background, before the first upload.

The addresses are read from the kernel's socket table (/proc/net/tcp and tcp6), never by connecting anywhere
but 127.0.0.1."""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from streamlit.testing.v1.util import patch_config_options

from cnmc_core.dashboard import classify
from cnmc_core.dashboard.demo_build import build_allowed, is_local_address

from .helpers import a_cell_file, open_app, texts

ROOT = Path(__file__).resolve().parents[1]
LISTEN = "0A"  # TCP state LISTEN in /proc/net/tcp


def _listening(port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """Local addresses with a listening TCP socket on `port`, from /proc/net/tcp and /proc/net/tcp6."""
    found = []
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            address, port_hex = fields[1].split(":")
            if fields[3] != LISTEN or int(port_hex, 16) != port:
                continue
            raw = bytes.fromhex(address)
            # the kernel prints each 32-bit word in host (little-endian) order
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            found.append(ipaddress.ip_address(raw) if width == 8 else ipaddress.IPv6Address(raw))
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux's /proc/net/tcp")
def test_the_projects_config_binds_the_dashboard_to_loopback_only(tmp_path):
    port = _free_port()
    env = {**os.environ, "CNMC_ARTIFACTS": str(tmp_path)}
    # the project's config as it is: no --server.address on the command line
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
                             "--server.headless", "true"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        addresses = []
        while time.monotonic() < deadline and proc.poll() is None:
            addresses = _listening(port)
            if addresses:
                time.sleep(1.0)  # let every socket of the server open
                addresses = _listening(port)
                break
            time.sleep(0.3)
        assert proc.poll() is None, f"streamlit exited with {proc.returncode}"
        assert addresses, f"streamlit never listened on port {port}"
        assert all(a.is_loopback for a in addresses), f"listening beyond loopback: {addresses}"
    finally:  # nothing of the server needs a clean stop here
        proc.kill()
        proc.wait(10)


def test_the_socket_table_reader_sees_a_wildcard_listener():
    """The check above can fail: a socket bound to every interface is read as 0.0.0.0, not loopback."""
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        s.listen()
        port = s.getsockname()[1]
        seen = _listening(port)
    assert seen and not any(a.is_loopback for a in seen)


# ---- the demo build on a server others can reach ---------------------------------------------------

def test_only_loopback_binds_count_as_local():
    for local in ("localhost", "LOCALHOST", "127.0.0.1", "127.0.0.2", "::1", "[::1]"):
        assert is_local_address(local), local
    for shared in ("", None, "0.0.0.0", "::", "192.168.1.20", "10.0.0.5", "lab-server.example.org"):
        assert not is_local_address(shared), shared
    assert build_allowed("0.0.0.0", {"CNMC_ALLOW_DEMO_BUILD": "1"}) == (True, "")
    assert not build_allowed("0.0.0.0", {"CNMC_ALLOW_DEMO_BUILD": "yes"})[0]  # only "1" allows it
    assert build_allowed("localhost", {})[0]
    allowed, why = build_allowed("localhost", {"CNMC_ALLOW_DEMO_BUILD": "0"})  # behind a reverse proxy
    assert not allowed and "python -m cnmc_core demo" in why


@pytest.mark.parametrize("address, allow, offered", [  # (localhost, the project's config: tests/test_app.py)
    ("0.0.0.0", None, False),
    ("", None, False),  # unset: Streamlit listens on every interface
    ("0.0.0.0", "1", True),
])
def test_the_demo_button_is_offered_only_on_a_local_bind_unless_allowed(tmp_path, monkeypatch, address, allow,
                                                                         offered):
    monkeypatch.setenv("CNMC_ARTIFACTS", str(tmp_path))  # no study: the Overview offers the build
    if allow is None:
        monkeypatch.delenv("CNMC_ALLOW_DEMO_BUILD", raising=False)
    else:
        monkeypatch.setenv("CNMC_ALLOW_DEMO_BUILD", allow)
    with patch_config_options({"server.address": address}):
        at = open_app("overview")
    buttons = [b for b in at.button if b.label == "Build the demo study"]
    assert len(buttons) == (1 if offered else 0)
    if not offered:
        assert "CNMC_ALLOW_DEMO_BUILD=1" in texts(at.caption) and "python -m cnmc_core demo" in texts(at.caption)
    assert "python -m cnmc_core demo" in texts(at.info)  # the way to build it is always said


# ---- the models, loading in the background -------------------------------------------------------------

class _FakePredictor:
    """Stands in for predict.Predictor: two models, each explained and classified once by the warm-up."""

    def __init__(self):
        self.models = {"vgg16": None, "efficientnet_b0": None}
        self.explained, self.classified = [], 0

    def explainer(self, key):
        return type("E", (), {"explain": lambda _, frame, method: self.explained.append((key, method, frame.size))})()

    def cached(self, key):  # (vgg16's pass as if from this machine's cache: warmed while the next model loads)
        return key == "vgg16"

    def classify_image(self, frame, label):
        self.classified += 1

    def classify_prepared(self, content, name):
        self.classified += 1

    def save_compiled(self):  # (after the load: the passes into this machine's cache; nothing to save here)
        self.saved = True
        return 0


def test_the_background_load_runs_once_starts_when_wanted_and_warms_every_model(monkeypatch):
    calls, release, during = [], threading.Event(), []

    def load(base, name, each=None):
        calls.append((base, name))
        release.wait(5)
        predictor = _FakePredictor()
        each(predictor, "vgg16")  # its pass from the cache: warmed while the load goes on
        each(predictor, "efficientnet_b0")  # traced here: warmed after the load
        deadline = time.monotonic() + 5
        while not predictor.explained and time.monotonic() < deadline:
            time.sleep(0.01)
        during.append([k for k, _, _ in predictor.explained])
        return predictor

    monkeypatch.setattr(classify, "load_predictor", load)
    monkeypatch.setattr(classify, "start_tensorflow", lambda: None)
    stamp = ("/nowhere", f"warm-{time.monotonic_ns()}")
    first = classify.warm(stamp, 2, delay=30.0)  # a page was drawn: the load waits its turn
    time.sleep(0.2)
    assert calls == [] and first.stage == "waiting"
    assert "0 of 2 models ready" in classify.models_line(first, 2)

    got = []
    askers = [threading.Thread(target=lambda: got.append(classify.loaded_predictor(stamp))) for _ in range(4)]
    for t in askers:
        t.start()  # four sessions drop a file at once: the waiting load starts now, once
    time.sleep(0.2)
    assert calls == [stamp] and classify.warm(stamp, 2) is first
    release.set()
    for t in askers:
        t.join(5)
    assert len(got) == 4 and all(p is got[0] for p in got)
    p = got[0]
    assert during == [["vgg16"]]  # the cached model's warm-up ran before the load was over, the other's did not
    assert [k for k, _, _ in p.explained] == ["vgg16", "efficientnet_b0"] and p.classified == 2
    assert {m for _, m, _ in p.explained} == {classify.WARM_CAM}
    assert first.stage == "ready" and first.ready == first.total == 2 and len(calls) == 1
    assert classify.models_line(first, 2).endswith("2 of 2 models ready.")
    deadline = time.monotonic() + 5
    while not getattr(p, "saved", False) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert p.saved  # once ready, the load hands its traced passes to this machine's cache (compiled.py)


def test_a_failed_background_load_is_raised_to_every_page_that_asks(monkeypatch):
    def load(base, name, each=None):
        raise FileNotFoundError("study 'x' has no usable model: vgg16: results incomplete")

    monkeypatch.setattr(classify, "load_predictor", load)
    monkeypatch.setattr(classify, "start_tensorflow", lambda: None)
    stamp = ("/nowhere", f"broken-{time.monotonic_ns()}")
    for _ in range(2):
        with pytest.raises(FileNotFoundError, match="no usable model"):
            classify.loaded_predictor(stamp)
    assert classify.load_status(stamp).stage == "failed"
    assert "could not be loaded" in classify.models_line(classify.load_status(stamp), 1)


def test_a_failed_warm_up_still_gives_the_loaded_models(monkeypatch):
    class Cold(_FakePredictor):
        def classify_image(self, frame, label):
            raise RuntimeError("out of memory while tracing")

    monkeypatch.setattr(classify, "load_predictor", lambda base, name, each=None: Cold())
    monkeypatch.setattr(classify, "start_tensorflow", lambda: None)
    stamp = ("/nowhere", f"cold-{time.monotonic_ns()}")
    assert isinstance(classify.loaded_predictor(stamp), Cold)
    assert classify.load_status(stamp).stage == "ready"


def test_only_the_newest_loads_are_kept(monkeypatch):
    monkeypatch.setattr(classify, "load_predictor", lambda base, name, each=None: _FakePredictor())
    monkeypatch.setattr(classify, "start_tensorflow", lambda: None)
    stamps = [("/nowhere", f"kept-{i}-{time.monotonic_ns()}") for i in range(classify.KEPT + 1)]
    for s in stamps:
        classify.loaded_predictor(s)
    assert classify.load_status(stamps[0]) is None
    assert all(classify.load_status(s) is not None for s in stamps[1:])


def test_background_loading_is_on_in_a_server_off_under_apptest_and_can_be_forced(monkeypatch):
    monkeypatch.delenv("CNMC_WARM_MODELS", raising=False)
    assert classify.warm_enabled(app_test=False) and not classify.warm_enabled(app_test=True)
    monkeypatch.setenv("CNMC_WARM_MODELS", "0")
    assert not classify.warm_enabled(app_test=False)
    monkeypatch.setenv("CNMC_WARM_MODELS", "1")
    assert classify.warm_enabled(app_test=True)


def test_a_page_of_the_study_starts_the_load_and_classify_says_how_many_are_ready(tiny_study, tmp_path, monkeypatch):
    """AppTest (in this process): the Overview starts loading the study's models; the Classify page then says all
    are ready, and an upload is answered with the models that load, loaded once."""
    root, name = tiny_study
    shutil.copytree(Path(root) / name, tmp_path / name)  # a study of its own: no other test has loaded it
    monkeypatch.setenv("CNMC_ARTIFACTS", str(tmp_path))
    monkeypatch.setenv("CNMC_WARM_MODELS", "1")
    loads = []
    real = classify.load_predictor
    monkeypatch.setattr(classify, "load_predictor",
                        lambda base, study, each=None: loads.append(study) or real(base, study, each))

    at = open_app("overview")
    stamp = next(s for s in list(classify._LOADS) if s[0] == str(tmp_path))
    load = classify.load_status(stamp)
    assert load.done.wait(300) and load.stage == "ready", load.error

    at.switch_page("views/6_Classify_a_cell.py").run()
    assert "2 of 2 models ready" in texts(at.caption)
    cell = a_cell_file(Path(root), name)
    at.file_uploader(key="upload").set_value((cell.name, cell.read_bytes(), "image/bmp")).run()
    assert not at.exception and not at.error, texts(at.error)
    assert at.metric[0].value in ("ALL", "HEM", "Inconclusive")
    assert loads == [name]  # the page used the background load's models: loaded once


def test_files_dropped_while_the_models_load_wait_for_them_and_the_line_then_says_they_are_ready(
        tiny_study, tmp_path, monkeypatch):
    """AppTest: the models are still loading (held until a timer lets them go) when a file is dropped. The page
    draws the models line once instead of the live one (whose full-page rerun, once the models are ready, drew every
    result twice with 8 users), waits for the load, and then says all are ready above the answer."""
    root, name = tiny_study
    shutil.copytree(Path(root) / name, tmp_path / name)  # a study of its own: no other test has loaded it
    monkeypatch.setenv("CNMC_ARTIFACTS", str(tmp_path))
    monkeypatch.setenv("CNMC_WARM_MODELS", "1")
    go = threading.Event()
    real = classify.load_predictor
    monkeypatch.setattr(classify, "load_predictor",
                        lambda base, study, each=None: go.wait(120) and real(base, study, each))

    at = open_app("classify")  # no file yet: the load starts, and the line is live while it runs
    assert "0 of 2 models ready" in texts(at.caption)
    stamp = next(s for s in list(classify._LOADS) if s[0] == str(tmp_path))
    assert classify.load_status(stamp).stage == "loading"
    cell = a_cell_file(Path(root), name)
    threading.Timer(2.0, go.set).start()  # the load goes on while the page waits for it
    at.file_uploader(key="upload").set_value((cell.name, cell.read_bytes(), "image/bmp")).run()
    assert not at.exception and not at.error, texts(at.error)
    assert at.metric[0].value in ("ALL", "HEM", "Inconclusive")
    lines = [c for c in texts(at.caption).splitlines() if "models ready" in c]
    assert lines == ["✅ 2 of 2 models ready."], lines


# ---- an optional login (st.login), only when secrets.toml configures one -------------------------------

AUTH = {"redirect_uri": "https://cnmc.lab.example/oauth2callback", "cookie_secret": "a-long-random-string-of-32-chars",
        "client_id": "cnmc-dashboard", "client_secret": "s3cret",
        "server_metadata_url": "https://login.lab.example/.well-known/openid-configuration"}


def test_with_an_auth_table_in_the_secrets_a_page_shows_only_the_login(tmp_path, monkeypatch):
    monkeypatch.setenv("CNMC_ARTIFACTS", str(tmp_path))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=90)
    at.secrets["auth"] = AUTH
    at.run()
    assert not at.exception
    assert [b.label for b in at.button] == ["Log in"]
    assert "log in" in texts(at.info) and "no study" not in texts(at.info)  # nothing of the artifacts is shown

    at.user = {"is_logged_in": True, "email": "someone@lab.example"}  # back from the lab's login
    at.run()
    assert "no study" in texts(at.info) and [b.label for b in at.sidebar.button] == ["Log out"]


def test_without_secrets_there_is_no_login(tmp_path, monkeypatch):
    monkeypatch.setenv("CNMC_ARTIFACTS", str(tmp_path))
    at = open_app("overview")
    assert "Log in" not in [b.label for b in at.button] and "log in" not in texts(at.info)
    assert "no study" in texts(at.info)


def test_streamlits_clear_session_after_each_run_leaves_the_cached_models_alone():
    """Streamlit's script runner calls keras.backend.clear_session() after every run (emptying TensorFlow's kernel
    cache under the cached models); that caller, and only that one, is answered with nothing."""
    import types

    cleared = []
    backend = types.SimpleNamespace(clear_session=lambda: cleared.append("cleared"))
    classify.keep_models_across_script_runs(backend)
    classify.keep_models_across_script_runs(backend)  # installed once, not wrapped twice
    runner = {"__name__": classify.STREAMLIT_RUNNER, "backend": backend}
    exec("def _clean_problem_modules():\n    backend.clear_session()\n", runner)
    runner["_clean_problem_modules"]()
    assert cleared == []
    backend.clear_session()  # anyone else (training, tests) still clears
    assert cleared == ["cleared"]
