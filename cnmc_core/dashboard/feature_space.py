"""The Feature space page: what each model's frozen base makes of the validation cells, as small multiples.

One panel per model: a 2-D map (PCA or t-SNE) of the pooled features of the same cells, in the same colours in
every panel, with two numbers beside it: class separability and patient clustering (projection.py computes
both, with their one-line captions). The maps are computed once, at the end of a study (or here, once, for a
study made before they existed: `compute_maps`) and read back; a page view never computes them.

`feature_space_figures(data, method, colour_by)` is the one call that gives the Plotly figures (one per model,
title and numbers included); the HTML report embeds the same figures.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..palette import CLASS_COLORS
from ..projection import CAPTIONS, MAX_TSNE, METHOD_NAMES, build_projections, read_projection
from ..store import PROJECTION_FILES, StoreError, StudyLock, StudyStore, trusted_data_roots
from .base import CLASSES, StudyData, model_name, number, section, threshold_of

METHODS = METHOD_NAMES  # "pca" -> "PCA", "tsne" -> "t-SNE"
COLOUR_BY = {"class": "True class", "subject": "Patient", "call": "The model's call", "correct": "Right or wrong"}
CLASS_COLOURS = {c: CLASS_COLORS[c] for c in ("ALL", "HEM")}  # the palette's, as on every page; the calls too
OUTCOME_COLOURS = {"right": "#0072B2", "wrong": "#D55E00"}  # Okabe-Ito blue and vermillion: colour-blind safe
# Patients: 48 colours, then they repeat. No palette tells 28-100 patients apart for every eye; hover names them.
SUBJECT_COLOURS = px.colors.qualitative.Dark24 + px.colors.qualitative.Light24  # 48, then they repeat
TSNE_CAP = MAX_TSNE
# Measured (docs/benchmarks.md): seconds per model for a small study, about 1.5 minutes at C-NMC's 1,867 cells.
COMPUTE_COST = "a few seconds per model on a small study, about 1-2 minutes per model at the size of C-NMC"


@dataclass
class Panel:
    key: str
    name: str
    coords: np.ndarray  # (n, 2) float32, one row per cell of FeatureSpace.cells; NaN where t-SNE's subsample left it
    calls: np.ndarray  # (n,) int8: 1 = the model calls the cell ALL (P(ALL) >= its threshold)
    prob_all: np.ndarray  # (n,) float: the model's P(ALL)
    scores: dict  # this map's scores (projection.py: knn_accuracy, silhouette_class, same_subject_share_map, ...)
    axes: tuple[str, str]  # axis titles ("PC 1 (12% of the variance)" for PCA; "" for t-SNE, whose axes mean nothing)


@dataclass
class FeatureSpace:
    method: str  # "pca" or "tsne"
    cells: pd.DataFrame  # image (the row's identity: its path as split.csv writes it), file, subject, label
    #                      ("ALL"/"HEM"), hover; the same validation cells, in the same order, in every panel
    panels: dict[str, Panel] = field(default_factory=dict)  # model key -> its map, in study order
    unmapped: list[str] = field(default_factory=list)  # model keys without current maps (none yet, or stale)
    missing: dict[str, str] = field(default_factory=dict)  # model key -> why else it has no panel (plain text)
    subsample: int | None = None  # cells t-SNE mapped when it ran on a subsample; None when it mapped them all

    @property
    def n_cells(self) -> int:
        return len(self.cells)

    @property
    def n_subjects(self) -> int:
        return int(self.cells["subject"].nunique())


def files_stamp(data: StudyData) -> tuple:
    """(model, file, mtime, size) of every saved map: passed to a cached `feature_space` call, so that maps
    computed after the study was read (by `compute_maps`, or a rerun) are read."""
    store, out = StudyStore(data.root, data.name), []
    for key in data.models:
        for name in PROJECTION_FILES:
            try:
                stat = store.model_file(key, name).stat()
                out.append((key, name, stat.st_mtime_ns, stat.st_size))
            except (OSError, StoreError):
                out.append((key, name, None, None))
    return tuple(out)


def feature_space(data: StudyData, method: str = "tsne", files: tuple = ()) -> FeatureSpace:
    """Every model's saved `method` map of the validation cells; a model without current maps is in `unmapped`.

    `files` (files_stamp) is only a cache key. Maps are read, never computed here.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}; got {str(method)[:40]!r}")
    store = StudyStore(data.root, data.name)
    space, paths, first = None, None, True
    for key in data.models:
        predictions = data.predictions[key]
        these = predictions["path"].astype(str).tolist()
        if paths is not None and these != paths:
            space.missing[key] = "its validation cells differ from the other models' (a different split)"
            continue
        projection = read_projection(store, key, data.metrics[key].get("config_hash"), these)
        if projection is None:
            continue
        if space is None:  # the first model with saved maps fixes the cells every panel shows
            paths, space = these, FeatureSpace(method, _cells(predictions))
        if not np.array_equal(projection.labels, predictions["label"].astype(int).to_numpy()):  # (length too)
            space.missing[key] = "its saved maps do not match its predictions (cells or labels); compute them again"
            continue
        if first:  # every model's t-SNE ran on the same seeded subsample (same labels, same seed)
            subsample, first = projection.scores.get("tsne_subsample"), False
            space.subsample = subsample if isinstance(subsample, int) and not isinstance(subsample, bool) else None
        scores = section(projection.scores, "methods", method)
        space.panels[key] = Panel(key, model_name(key), projection.coordinates[method], projection.calls,
                                  predictions["prob_all"].to_numpy(dtype=float), scores,
                                  _axes(method, projection.scores.get("pca_variance")))
    space = space or FeatureSpace(method, pd.DataFrame(columns=["image", "file", "subject", "label", "hover"]))
    space.unmapped = [k for k in data.models if k not in space.panels and k not in space.missing]
    return space


def _cells(predictions: pd.DataFrame) -> pd.DataFrame:
    images = predictions["path"].astype(str)
    cells = pd.DataFrame({
        "image": images,
        "file": [PurePosixPath(p).name for p in images],
        "subject": predictions["subject"].astype(str),
        "label": np.where(predictions["label"].astype(int).to_numpy() == 1, CLASSES[1], CLASSES[0]),
    }).reset_index(drop=True)
    cells["hover"] = _hover(cells)
    return cells


def _hover(cells: pd.DataFrame) -> pd.Series:
    """Each cell's hover line, kept to one line: it is sent once per panel (on a C-NMC-sized study the hover text is
    about 40% of the t-SNE maps' bytes; a click shows the whole cell below the maps). The study's text is escaped
    (Plotly reads a few HTML tags in hover text)."""
    return ("patient " + cells["subject"].map(lambda s: html.escape(s, quote=False)) + " · "
            + cells["file"].map(lambda f: html.escape(f, quote=False)) + " · true " + cells["label"])


def _axes(method: str, variance) -> tuple[str, str]:
    if method != "pca":
        return "", ""
    shares = [number(v) for v in variance] if isinstance(variance, list) and len(variance) == 2 else [np.nan] * 2
    return tuple(f"PC {i + 1}" + (f" ({share:.0%} of the variance)" if np.isfinite(share) else "")
                 for i, share in enumerate(shares))


# ---- the figures ----------------------------------------------------------------------------------------

def groups(space: FeatureSpace, panel: Panel, colour_by: str) -> tuple[np.ndarray, dict[str, str]]:
    """(the group of each cell, group -> colour) for one panel, colouring by class, call or right/wrong: the same
    groups get the same colours in every panel."""
    labels = space.cells["label"].to_numpy()
    if colour_by == "class":
        return labels, CLASS_COLOURS
    if colour_by == "call":
        called = np.where(panel.calls == 1, "called ALL", "called HEM")
        return called, {"called ALL": CLASS_COLOURS["ALL"], "called HEM": CLASS_COLOURS["HEM"]}
    if colour_by == "correct":
        right = (panel.calls == 1) == (labels == CLASSES[1])
        return np.where(right, "right", "wrong"), OUTCOME_COLOURS
    raise ValueError(f"colour_by must be one of {sorted(COLOUR_BY)}; got {str(colour_by)[:40]!r}")


def subject_colours(space: FeatureSpace) -> tuple[np.ndarray, list]:
    """(each cell's patient as a number, a colour scale giving patient i the colour SUBJECT_COLOURS[i % 48]).

    One trace per panel with a number per point, not one trace per patient: a hundred patients in nine panels
    would be 900 traces, each costing Plotly milliseconds to build and the browser to draw.
    """
    order, codes = np.unique(space.cells["subject"].to_numpy(), return_inverse=True)
    top = max(len(order) - 1, 1)
    scale = [[i / top, SUBJECT_COLOURS[i % len(SUBJECT_COLOURS)]] for i in range(len(order))]
    return codes, scale if len(order) > 1 else [[0, SUBJECT_COLOURS[0]], [1, SUBJECT_COLOURS[0]]]


def traces(space: FeatureSpace, key: str, colour_by: str = "class", legend: bool = True) -> list[dict]:
    """Model `key`'s map as Scattergl trace specs (plain dicts: Plotly validates them once, in the figure): one
    marker per cell, coloured by `colour_by`; hover names the cell's patient, file and P(ALL); each point's
    customdata is [row in space.cells, P(ALL)] (the page shows the clicked cell)."""
    panel = space.panels[key]
    hover = space.cells["hover"].to_numpy()
    drawn = np.isfinite(panel.coords).all(axis=1)
    common = {"type": "scattergl", "mode": "markers", "showlegend": legend and colour_by != "subject",
              "hovertemplate": "%{text}<br>P(ALL) %{customdata[1]:.2f}<extra></extra>"}
    marker = {"size": 5 if drawn.sum() <= 3000 else 3, "opacity": 0.75}

    def points(rows: np.ndarray) -> dict:
        # float32 map coordinates: a map needs no more than 7 digits, and they are half the bytes to send and parse
        xy = panel.coords[rows].astype(np.float32)
        return {"x": xy[:, 0], "y": xy[:, 1], "text": hover[rows],
                # float32 holds every row number below 2**24 exactly, in half the bytes of float64
                "customdata": np.column_stack([rows, panel.prob_all[rows]]).astype(np.float32), **common}

    if colour_by == "subject":
        codes, scale = subject_colours(space)
        rows = np.flatnonzero(drawn)
        return [{**points(rows), "name": "patients", "marker": {
            **marker, "color": codes[rows], "colorscale": scale, "cmin": 0, "cmax": max(codes.max(initial=0), 1)}}]
    group_of, colours = groups(space, panel, colour_by)
    return [{**points(rows), "name": html.escape(name, quote=False), "legendgroup": name,
             "marker": {**marker, "color": colour}}
            for name, colour in colours.items() if len(rows := np.flatnonzero((group_of == name) & drawn))]


def figure(space: FeatureSpace, key: str, colour_by: str = "class", height: int = 380) -> go.Figure:
    """Model `key`'s map on its own (`traces`), its name as title and its two numbers as subtitle."""
    panel = space.panels[key]
    fig = go.Figure(traces(space, key, colour_by))
    fig.update_layout(
        title={"text": html.escape(panel.name), "subtitle": {"text": headline(panel)}}, height=height,
        showlegend=colour_by != "subject", legend={"orientation": "h", "y": -0.05, "itemsizing": "constant"},
        margin={"l": 10, "r": 10, "t": 60, "b": 10}, clickmode="event+select", dragmode="pan",
    )
    fig.update_xaxes(title=panel.axes[0], showticklabels=False, zeroline=False)
    fig.update_yaxes(title=panel.axes[1], showticklabels=False, zeroline=False)
    return fig


def row_figure(space: FeatureSpace, keys: list[str], colour_by: str = "class", columns: int = 3,
               height: int = 400) -> go.Figure:
    """The maps of `keys` side by side in one figure of `columns` panels (the page draws its small multiples a row
    at a time: one plot and one WebGL context per row instead of per model, which is what costs a browser most).
    The legend is the first panel's; clicking an entry hides that group in every panel of the row."""
    if not 1 <= len(keys) <= columns:
        raise ValueError(f"a row holds 1 to {columns} models; got {len(keys)}")
    fig = make_subplots(rows=1, cols=columns, horizontal_spacing=0.03,
                        subplot_titles=[html.escape(space.panels[k].name) for k in keys])
    specs = [traces(space, key, colour_by, legend=i == 0) for i, key in enumerate(keys)]
    fig.add_traces([t for spec in specs for t in spec], rows=1, cols=[i + 1 for i, s in enumerate(specs) for _ in s])
    for i, key in enumerate(keys):
        axes = space.panels[key].axes
        fig.update_xaxes(title=axes[0], row=1, col=i + 1)
        fig.update_yaxes(title=axes[1], row=1, col=i + 1)
    fig.update_xaxes(showticklabels=False, zeroline=False, showgrid=False)
    fig.update_yaxes(showticklabels=False, zeroline=False, showgrid=False)
    for i in range(len(keys), columns):  # a short last row keeps the others' panel width
        fig.update_xaxes(visible=False, row=1, col=i + 1)
        fig.update_yaxes(visible=False, row=1, col=i + 1)
    fig.update_layout(height=height, showlegend=colour_by != "subject", clickmode="event+select", dragmode="pan",
                      legend={"orientation": "h", "y": -0.08, "itemsizing": "constant"},
                      margin={"l": 10, "r": 10, "t": 40, "b": 10})
    return fig


def feature_space_figures(data: StudyData, method: str = "tsne", colour_by: str = "class") -> dict[str, go.Figure]:
    """The page's figures for a study in one call (the report embeds these): model key -> its map, in study
    order, the model's name as title and its two numbers as subtitle. Models without saved maps are left out."""
    if colour_by not in COLOUR_BY:
        raise ValueError(f"colour_by must be one of {sorted(COLOUR_BY)}; got {str(colour_by)[:40]!r}")
    space = feature_space(data, method)
    return {key: figure(space, key, colour_by) for key in space.panels}


# ---- the numbers, in words ------------------------------------------------------------------------------

@dataclass
class Score:
    label: str  # "Class separability"
    value: str  # "0.81"
    detail: str  # the unit and N: what the number is, on how many cells and patients
    caption: str  # one line in plain words: what it means


def _fmt(x) -> str:
    x = number(x)
    return f"{x:.2f}" if np.isfinite(x) else "n/a"


def scores(panel: Panel) -> list[Score]:
    """The two numbers beside a map (class separability, patient clustering), each with its unit, N and caption."""
    s = panel.scores
    n = f"N = {_int(s.get('n_cells'))} cells of {_int(s.get('n_subjects'))} patients"
    k, folds = _int(s.get("knn_k")), _int(s.get("cv_folds"))
    return [
        Score("Class separability", _fmt(s.get("knn_accuracy")),
              f"balanced accuracy of a {k}-nearest-neighbour vote on the map, {folds} folds grouped by patient "
              f"(0.5 = chance); silhouette by class {_fmt(s.get('silhouette_class'))}; {n}",
              _plain(CAPTIONS["knn_accuracy"])),
        Score("Patient clustering", _fmt(s.get("same_subject_share_map")),
              f"share of each cell's {_int(s.get('neighbours'))} nearest neighbours on the map from its own patient "
              f"(chance {_fmt(s.get('same_subject_chance'))}; in the full feature space "
              f"{_fmt(s.get('same_subject_share_features'))}); silhouette by patient "
              f"{_fmt(s.get('silhouette_subject'))}; {n}",
              _plain(CAPTIONS["same_subject_share_map"])),
    ]


def _plain(caption: str) -> str:
    """A caption without its leading "Class separability: " (the page shows that name beside the number)."""
    text = caption.split(": ", 1)[-1]
    return text[:1].upper() + text[1:]


def _int(x) -> str:
    x = number(x)
    return f"{int(x):,}" if np.isfinite(x) else "?"


def headline(panel: Panel) -> str:
    """The two numbers in one short line (a figure's subtitle)."""
    s = panel.scores
    return (f"class separability {_fmt(s.get('knn_accuracy'))} · same-patient neighbours "
            f"{_fmt(s.get('same_subject_share_map'))} (chance {_fmt(s.get('same_subject_chance'))})")


def cell(space: FeatureSpace, row: int) -> dict:
    """One cell of the maps (a row of space.cells): its image, file, subject, class and each model's P(ALL) and call."""
    if not isinstance(row, (int, np.integer)) or not 0 <= row < space.n_cells:
        raise ValueError(f"row must be from 0 to {space.n_cells - 1}; got {str(row)[:20]!r}")
    out = space.cells.iloc[int(row)].to_dict()
    out["models"] = pd.DataFrame([
        {"Model": p.name, "P(ALL)": float(p.prob_all[row]), "Call": CLASSES[int(p.calls[row])],
         "Right": CLASSES[int(p.calls[row])] == out["label"]}
        for p in space.panels.values()
    ])
    return out


# ---- maps for a study made before they existed ----------------------------------------------------------

def compute_maps(data: StudyData) -> dict[str, str]:
    """Compute and save the maps the study lacks (once; the study's lock is held, so never beside a run that
    writes it). Features come from this machine's feature cache, or from the study's images when they are in a
    data folder this machine trusts. Returns {model key: "" when mapped, else why not}. Raises ValueError
    (FolderBusy, StoreError) when the study cannot be written now."""
    store = StudyStore(data.root, data.name)
    with StudyLock(store):
        return build_projections(store, data_root=_trusted_data_folder(data),
                                 keys=[k for k in data.models if k in data.metrics])


def _trusted_data_folder(data: StudyData) -> Path | None:
    """The study's data folder when it lies inside a folder this machine trusts (as for thumbnails), else None:
    a shared study's own `data.path` is a hint, never a permission to read there."""
    hint = section(data.info, "data").get("path")
    try:
        named = Path(hint).expanduser().resolve() if isinstance(hint, str) and hint else None
    except (OSError, RuntimeError):  # a symlink loop
        return None
    trusted = [folder for folder in trusted_data_roots(data.root) if folder.is_dir()]
    return named if named and named.is_dir() and any(named.is_relative_to(t) for t in trusted) else None


def threshold_text(data: StudyData) -> str:
    """'0.5' or '0.42, 0.5': the thresholds behind 'the model's call'."""
    return ", ".join(sorted({f"{threshold_of(data.metrics[k]):g}" for k in data.models}))
