"""What every page shares: the study picker and its guards, cached reads, settings kept across pages
and in the link, the demo-build progress, and the wrapper that turns any error into one line.

Not a page (the app lists its pages in app.py with st.navigation). Pages call `start(title)`, then
one read-model function (a `cnmc_core.dashboard` module) through `view(...)`, then display.

Text from the link or from a study (study and model names, notes, reasons, subjects, paths) is shown
through `code()`: literally, never as Markdown. A shared study is input from someone else.
"""

from __future__ import annotations

import math
import re
import traceback
from collections.abc import Callable

import pandas as pd
import streamlit as st
from streamlit import config as streamlit_config  # (AppTest patches its get_option, not st's)

from cnmc_core.dashboard import base, classify, demo_build, figures, thumbnails

APP_NAME = "C-NMC leukemia cells"  # the sidebar's heading and every browser tab's title
RESEARCH_ONLY = "**Research use only — not for diagnosis.** These models have not been validated for clinical use."
palette = base.palette  # colour-blind-safe colours, markers and dashes, the same on every page
ENSEMBLE_COLOR = palette.ENSEMBLE_STYLE_COLOR
# Streamlit draws captions in its text colour at 60% (3.9:1 on white); where the explanations live they need 4.5:1.
# A style-only st.html block takes no room on the page.
STYLE = f"""<style>
[data-testid="stCaptionContainer"], [data-testid="stCaptionContainer"] :is(p, li, strong, em, code, span) {{
  color: {palette.CAPTION_COLOR} !important; opacity: 1 !important; }}
</style>"""


model_color = figures.model_color  # one colour per model, the same in the report (dashboard/figures.py)


# ---- running a page -----------------------------------------------------------------------------

def run(page: Callable[[], None]) -> None:
    """Run a page body; an unexpected error becomes one st.error line (the log keeps the traceback)."""
    try:
        page()
    except Exception as e:  # st.stop / st.rerun are BaseExceptions and pass through
        traceback.print_exc()
        first = str(e).splitlines()[0] if str(e) else ""
        st.error(f"This page could not be shown: {type(e).__name__}{': ' + first if first else ''}")


# ---- text from outside (file names) --------------------------------------------------------------

# Control characters and bidirectional overrides (which can disguise "cell\u202egnp.exe" as "cellexe.png").
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def code(text: str) -> str:
    """`text` as one Markdown code span: shown literally, never as Markdown, HTML, emoji or math.

    For text that comes from outside (uploaded file names, the link, a study's files): the fence is one
    backtick longer than the longest run inside, and control and bidi-override characters become U+FFFD.
    """
    text = _UNPRINTABLE.sub("\ufffd", str(text))
    fence = "`" * (max((len(run) for run in re.findall("`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


plotly_text = figures.plotly_text  # text for a Plotly label or hover, escaped (dashboard/figures.py)


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # a spreadsheet runs a cell that starts with one of these


def csv_safe(frame):
    """A copy of `frame` whose text cells cannot run as spreadsheet formulas (=, +, -, @ get a leading ')."""
    out = frame.copy()
    for col in out.columns:
        if not (pd.api.types.is_numeric_dtype(out[col]) or pd.api.types.is_bool_dtype(out[col])):
            out[col] = out[col].map(lambda v: f"'{v}" if isinstance(v, str) and v[:1] in FORMULA_STARTS else v)
    return out


# ---- cached reads -------------------------------------------------------------------------------

@st.cache_data(show_spinner=False, max_entries=8)
def _load(stamp: tuple) -> base.StudyData:
    return base.load_study(stamp[0], stamp[1])


@st.cache_data(show_spinner=False, max_entries=256)
def _view(fn_id: str, stamp: tuple, args: tuple, _fn: Callable, _data: base.StudyData):
    return _fn(_data, *args)


def view(fn: Callable, data: base.StudyData, *args):
    """`fn(data, *args)` (a read-model function), cached until a file of the study changes.

    The cache key is the function's module and qualified name, the study's stamp and `args`.
    """
    return _view(f"{fn.__module__}.{fn.__qualname__}", data.stamp, args, fn, data)


@st.cache_data(show_spinner=False, max_entries=2048)
def thumbnail(stamp: tuple, image: str) -> bytes | None:
    """A PNG of one of the study's cell images (`image`: the row's identity), or None if it cannot be shown."""
    return thumbnails.thumbnail(stamp, image)


# ---- settings kept in the session and in the link -------------------------------------------------

# A link is input from anyone: every value read from it is parsed here and then checked against what the
# widget allows (choice, multichoice, slider); anything else falls back to the default.
def _from_url(key: str, default):
    raw = st.query_params.get(key)
    if raw is None:
        return default
    raw = str(raw)[:400]
    if isinstance(default, bool):
        return raw.lower() in ("1", "true", "yes", "on")
    if isinstance(default, float):
        try:
            value = float(raw)
        except ValueError:
            return default
        return value if math.isfinite(value) else default
    if isinstance(default, list):
        return list(dict.fromkeys(part for part in raw.split(",") if part))
    return raw


def _to_url(key: str, value) -> None:
    if isinstance(value, bool):
        text = "1" if value else "0"
    elif isinstance(value, (list, tuple)):
        text = ",".join(map(str, value))
    elif isinstance(value, float):
        text = f"{value:g}"
    else:
        text = str(value)
    if st.query_params.get(key) != text:
        st.query_params[key] = text


def setting(key: str, default):
    """A setting's value: this session's if set, else the link's (first visit), else `default`."""
    if key not in st.session_state:
        st.session_state[key] = _from_url(key, default)
    return st.session_state[key]


def _keep(key: str) -> None:
    st.session_state[key] = st.session_state[f"_w_{key}"]


def _widget(make, key: str, default, **kwargs):
    """A widget bound to setting `key`: its value survives page switches and goes into the link."""
    st.session_state[f"_w_{key}"] = setting(key, default)
    make(key=f"_w_{key}", on_change=_keep, args=(key,), **kwargs)
    _to_url(key, st.session_state[key])
    return st.session_state[key]


def toggle(label: str, key: str, default: bool, **kwargs) -> bool:
    return bool(_widget(st.toggle, key, default, label=label, **kwargs))


def choice(label: str, options: list, key: str, default, container=st, radio: bool = False, **kwargs):
    """A selectbox (or radio) over `options` bound to setting `key`; an unknown value (old link) falls back to default.

    The options are what goes into the link: plain strings (keys), shown through `format_func`.
    """
    if setting(key, default) not in options:
        st.session_state[key] = default if default in options else options[0]
    make = container.radio if radio else container.selectbox
    return _widget(make, key, default, label=label, options=options, **kwargs)


def multichoice(label: str, options: list[str], key: str, default: list[str], container=st, **kwargs) -> list[str]:
    """A multiselect bound to setting `key`; values the options do not hold are dropped (all of them: the default)."""
    asked = setting(key, list(default))
    kept = [v for v in asked if v in options] if isinstance(asked, list) else []
    st.session_state[key] = kept if kept or not asked else [v for v in default if v in options]
    return list(_widget(container.multiselect, key, default, label=label, options=options, **kwargs))


def slider(label: str, key: str, low: float, high: float, default: float, step: float, container=st,
           **kwargs) -> float:
    """A slider over [low, high] bound to setting `key`; a value from the link is put on the step, or refused."""
    value = setting(key, float(default))
    if not isinstance(value, float) or not low <= value <= high:
        value = float(default)
    st.session_state[key] = round(low + round((value - low) / step) * step, 6)
    return float(_widget(container.slider, key, float(default), label=label, min_value=float(low),
                         max_value=float(high), step=float(step), **kwargs))


# ---- the study ----------------------------------------------------------------------------------

def start(title: str, *, home: bool = False, needs_study: bool = True, notice: str = "") -> base.StudyData | None:
    """Title, study picker in the sidebar and guards; returns the chosen study (cached) or stops the page.

    `home`: the page offers the demo build; `needs_study=False`: return None instead of stopping.
    """
    st.set_page_config(page_title=f"{title} · {APP_NAME}")
    st.html(STYLE)
    st.title(title)
    if not signed_in():
        st.stop()
    if notice:
        st.warning(notice, icon="⚠️")
    root = base.root()
    build = demo_build.demo_build_status(root)
    if home and (build.state in ("running", "failed") or (build.state == "done" and "_building" in st.session_state)):
        build_progress(root)  # offers the button again itself if the build failed
    elif build.state == "running":
        st.info("The demo study is being built; its progress is on the Overview page.")
    found, broken = base.studies(root)
    if broken:
        st.warning("Cannot read: " + "; ".join(f"{code(name)} ({code(why)})" for name, why in broken.items()))
    if not found:
        if build.state != "running":
            st.info(base.NO_STUDY.format(root=root))
            if home and build.state != "failed":
                demo_button(root)
        if needs_study:
            st.stop()
        return None
    names = [s["name"] for s in found]
    if "study" not in st.session_state:
        requested = st.query_params.get("study")
        name, why_not = base.choose_study(names, requested)
        if why_not:
            st.warning(f"The link asks for study {code(requested[:80])}, which {why_not}; showing {code(name)}.")
        st.session_state["study"] = name
    labels = {s["name"]: _study_label(s) for s in found}
    name = choice("Study", names, "study", names[0], container=st.sidebar, format_func=labels.get)
    data = _load(base.stamp(root, name))
    if data.synthetic:
        st.warning("**Synthetic demo data.** These cells are generated, not from patients, and the models "
                   "use random weights: the numbers show how the pipeline works, not how well it diagnoses.",
                   icon="⚠️")
    if data.missing:
        st.warning("Not shown: " + "; ".join(f"{code(base.model_name(key))}: {code(why)}"
                                             for key, why in data.missing.items()))
    for note in data.notes:
        st.warning(code(note))
    if not data.models and needs_study:
        st.info(f"Study {code(name)} has no finished model yet (status: {code(data.status)}). "
                "Its results appear here as each model finishes.")
        st.stop()
    warm_models(data)
    return data


def signed_in() -> bool:
    """True, unless .streamlit/secrets.toml configures a login (an [auth] table: Streamlit's OIDC `st.login`, see
    docs/dashboard.md) and this browser has not logged in: then the page shows a login button instead."""
    if not (st.secrets.load_if_toml_exists() and "auth" in st.secrets):
        return True
    if st.user.get("is_logged_in"):  # (a Mapping: the key is absent where Streamlit has not seen the secrets)
        st.sidebar.button("Log out", on_click=st.logout, key="logout")
        return True
    st.info("This dashboard is shared on a network: log in with your lab account to see it.")
    st.button("Log in", on_click=st.login, type="primary", key="login")
    return False


# ---- the study's models, loading in the background ------------------------------------------------

def warm_models(data: base.StudyData, delay: float = classify.WARM_DELAY_S) -> None:
    """Start loading the study's models in the background (classify.warm): Classify a cell then answers the first
    upload without the load. Not while the study is being written (each finished model would start a load)."""
    app_test = bool(streamlit_config.get_option("global.appTest"))
    if data.models and data.status != "running" and classify.warm_enabled(app_test):
        classify.warm(data.stamp, len(data.models), delay)


def models_ready(data: base.StudyData, line, live: bool = True) -> None:
    """One line in the placeholder `line` (an st.empty drawn where it belongs): how many of the study's models are
    loaded and ready; live (every 2 s) while they load, unless not `live`: a page about to wait for the models
    (files dropped) draws it once and redraws it when they are in (`redraw_models_line`), since the live line, once
    they are ready, runs the whole page again to stop polling, which with 8 users uploading during the load drew
    every result twice. For the page that needs them: their load starts now, not after the usual delay."""
    warm_models(data, delay=0)
    load = classify.load_status(data.stamp)
    if live and load is not None and load.stage not in ("ready", "failed"):
        with line:
            _models_live(data.stamp, len(data.models))
    else:
        line.caption(classify.models_line(load, len(data.models)))


def redraw_models_line(line, data: base.StudyData) -> None:
    """Redraw a `models_ready(..., live=False)` line, once the page has the models."""
    line.caption(classify.models_line(classify.load_status(data.stamp), len(data.models)))


@st.fragment(run_every=2.0)
def _models_live(stamp: tuple, n: int) -> None:
    load = classify.load_status(stamp)
    if load is None or load.stage in ("ready", "failed"):
        st.rerun(scope="app")  # the page once more, with the line that no longer polls
    st.caption(classify.models_line(load, n))


def _study_label(s: dict) -> str:
    tags = [f"{len(s['models'])}/{len(s['expected'])} models"]
    if s.get("synthetic"):
        tags.append("synthetic")
    return f"{s['name']} ({', '.join(tags)})"


def models_choice(data: base.StudyData, label: str = "Model", container=st) -> str:
    """The model to look at closely; shared by the pages that show one model at a time."""
    return choice(label, data.models, "model", data.models[0], container=container, format_func=base.model_name)


def no_images(source: thumbnails.ImageSource, what: str) -> None:
    """Say why the study's cell images cannot be shown here, and how to show them."""
    st.info(f"The {what} cannot be shown: the study's data folder ({code(source.hint or 'not recorded')}) is not "
            "a data folder this machine trusts (one a study was trained from here), or it is not there. "
            f"To show them, add the folder that holds your copy of the data to {code(thumbnails.TRUST_SETTING)}.")


# ---- building the demo study --------------------------------------------------------------------

def demo_button(root: str) -> None:
    allowed, why_not = demo_build.build_allowed(streamlit_config.get_option("server.address"))
    if not allowed:
        st.caption(why_not)
        return
    if st.button("Build the demo study", key="build_demo", type="primary", icon="🧪",
                 help="Runs `python -m cnmc_core demo` in a separate process: synthetic cells, seven models, "
                      "CPU only."):
        st.session_state["_building"] = True
        demo_build.start_demo_build(root)
        st.rerun()


@st.fragment(run_every=1.0)
def build_progress(root: str) -> None:
    """Live progress of the demo build (polls the CLI's progress file once a second)."""
    run(lambda: _build_progress(root))


def _build_progress(root: str) -> None:
    status = demo_build.demo_build_status(root)
    if status.state == "running":
        st.progress(status.fraction, text=f"Building the demo study: {status.text}")
    elif status.state == "failed":
        st.error(f"The demo build failed: {code(status.text)}. Its whole output is in {code(status.log)}.")
        demo_button(root)
    elif status.state == "done" and st.session_state.pop("_building", None):
        st.success("The demo study is ready.")
        st.rerun(scope="app")
