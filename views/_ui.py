"""What every page shares: the study picker and its guards, cached reads, settings kept across pages
and in the link, the demo-build progress, and the wrapper that turns any error into one line.

Not a page (the app lists its pages in app.py with st.navigation). Pages call `start(title)`, then
one `cnmc_core.results` function through `view(...)`, then display.
"""

from __future__ import annotations

import re
import traceback
from typing import Callable

import pandas as pd
import plotly.express as px
import streamlit as st

from cnmc_core import results

RESEARCH_ONLY = "**Research use only — not for diagnosis.** These models have not been validated for clinical use."
EMPTY = (
    "There is no study under the artifacts root `{root}` yet.\n\n"
    "Build the synthetic demo study with the button on the **Overview** page (about 2-3 minutes on a CPU), "
    "or from a terminal: `python -m cnmc_core demo --artifacts {root}`. On the real C-NMC data: "
    "`python -m cnmc_core train --data <C-NMC folder> --artifacts {root}`. "
    "Set `CNMC_ARTIFACTS` to show studies from another folder."
)
PALETTE = px.colors.qualitative.Plotly  # one colour per registry model, the same on every page
_MODEL_ORDER = list(results.MODELS)


ENSEMBLE_COLOR = "#222222"  # the ensemble is not a registry model: it gets no palette colour


def model_color(name_or_key: str) -> str:
    if name_or_key in (results.ENSEMBLE_NAME, "ensemble"):
        return ENSEMBLE_COLOR
    keys = {results.model_name(k): i for i, k in enumerate(_MODEL_ORDER)}
    i = _MODEL_ORDER.index(name_or_key) if name_or_key in _MODEL_ORDER else keys.get(name_or_key, 0)
    return PALETTE[i % len(PALETTE)]


def color_map() -> dict[str, str]:
    return {results.model_name(k): model_color(k) for k in _MODEL_ORDER}


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

    For names that come from outside (uploaded file names): the fence is one backtick longer than
    the longest run inside, and control and bidi-override characters become U+FFFD.
    """
    text = _UNPRINTABLE.sub("\ufffd", text)
    fence = "`" * (max((len(run) for run in re.findall("`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def csv_safe(frame):
    """A copy of `frame` whose text cells cannot run as spreadsheet formulas (=, +, -, @ get a leading ')."""
    out = frame.copy()
    for col in out.columns:
        if not (pd.api.types.is_numeric_dtype(out[col]) or pd.api.types.is_bool_dtype(out[col])):
            out[col] = out[col].map(lambda v: f"'{v}" if isinstance(v, str) and v[:1] in ("=", "+", "-", "@", "\t", "\r") else v)
    return out


# ---- cached reads -------------------------------------------------------------------------------

@st.cache_data(show_spinner=False, max_entries=8)
def _load(stamp: tuple) -> results.StudyData:
    return results.load_study(stamp[0], stamp[1])


@st.cache_data(show_spinner=False, max_entries=256)
def _view(fn_name: str, stamp: tuple, args: tuple, _data: results.StudyData):
    return getattr(results, fn_name)(_data, *args)


def view(fn: Callable, data: results.StudyData, *args):
    """`fn(data, *args)` from `cnmc_core.results`, cached until a file of the study changes."""
    return _view(fn.__name__, data.stamp, args, data)


@st.cache_data(show_spinner=False, max_entries=2048)
def thumbnail(data_path: str, rel_path: str, side: int = 128) -> bytes | None:
    return results.thumbnail(data_path, rel_path, side)


# ---- settings kept in the session and in the link -------------------------------------------------

def _from_url(key: str, default):
    raw = st.query_params.get(key)
    if raw is None:
        return default
    if isinstance(default, bool):
        return raw.lower() in ("1", "true", "yes", "on")
    return raw


def _to_url(key: str, value) -> None:
    text = ("1" if value else "0") if isinstance(value, bool) else str(value)
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


def choice(label: str, options: list, key: str, default, container=st, **kwargs):
    """A selectbox over `options` bound to setting `key`; an unknown value (old link) falls back to default."""
    if setting(key, default) not in options:
        st.session_state[key] = default if default in options else options[0]
    return _widget(container.selectbox, key, default, label=label, options=options, **kwargs)


# ---- the study ----------------------------------------------------------------------------------

def start(title: str, *, home: bool = False, needs_study: bool = True, notice: str = "") -> results.StudyData | None:
    """Title, study picker in the sidebar and guards; returns the chosen study (cached) or stops the page.

    `home`: the page offers the demo build; `needs_study=False`: return None instead of stopping.
    """
    st.title(title)
    if notice:
        st.warning(notice, icon=":material/warning:")
    root = results.root()
    build = results.demo_build_status(root)
    if home and (build.state in ("running", "failed") or (build.state == "done" and "_building" in st.session_state)):
        build_progress(root)  # offers the button again itself if the build failed
    elif build.state == "running":
        st.info("The demo study is being built; its progress is on the Overview page.")
    found, broken = results.studies(root)
    if broken:
        st.warning("Cannot read: " + "; ".join(f"`{name}` ({why})" for name, why in broken.items()))
    if not found:
        if build.state != "running":
            st.info(EMPTY.format(root=root))
            if home and build.state != "failed":
                demo_button(root)
        if needs_study:
            st.stop()
        return None
    names = [s["name"] for s in found]
    if "study" not in st.session_state:
        name, note = results.choose_study(names, st.query_params.get("study"))
        if note:
            st.warning(note)
        st.session_state["study"] = name
    labels = {s["name"]: _study_label(s) for s in found}
    name = choice("Study", names, "study", names[0], container=st.sidebar, format_func=labels.get)
    data = _load(results.stamp(root, name))
    if data.synthetic:
        st.warning("**Synthetic demo data.** These cells are generated, not from patients, and the models "
                   "use random weights: the numbers show how the pipeline works, not how well it diagnoses.", icon=":material/warning:")
    if data.missing:
        st.warning("Not shown: " + "; ".join(f"**{results.model_name(k)}** (`{k}`): {why}" for k, why in data.missing.items()))
    for note in data.notes:
        st.warning(note)
    if not data.models and needs_study:
        st.info(f"Study `{name}` has no finished model yet (status: {data.info.get('status', '?')}). "
                "Its results appear here as each model finishes.")
        st.stop()
    return data


def _study_label(s: dict) -> str:
    tags = [f"{len(s['models'])}/{len(s['expected'])} models"]
    if s.get("synthetic"):
        tags.append("synthetic")
    return f"{s['name']} ({', '.join(tags)})"


def models_choice(data: results.StudyData, label: str = "Model", container=st) -> str:
    """The model to look at closely; shared by the pages that show one model at a time."""
    return choice(label, data.models, "model", data.models[0], container=container, format_func=results.model_name)


# ---- building the demo study --------------------------------------------------------------------

def demo_button(root: str) -> None:
    if st.button("Build the demo study", key="build_demo", type="primary", icon=":material/science:",
                 help="Runs `python -m cnmc_core demo` in a separate process: synthetic cells, seven models, CPU only."):
        st.session_state["_building"] = True
        results.start_demo_build(root)
        st.rerun()


@st.fragment(run_every=1.0)
def build_progress(root: str) -> None:
    """Live progress of the demo build (polls the CLI's progress file once a second)."""
    run(lambda: _build_progress(root))


def _build_progress(root: str) -> None:
    status = results.demo_build_status(root)
    if status.state == "running":
        st.progress(status.fraction, text=f"Building the demo study: {status.text}")
    elif status.state == "failed":
        st.error(f"The demo build failed: {status.text}. Its whole output is in `{status.log}`.")
        demo_button(root)
    elif status.state == "done" and st.session_state.pop("_building", None):
        st.success("The demo study is ready.")
        st.rerun(scope="app")
