"""The study report: one self-contained HTML file of a study (`python -m cnmc_core report`, and the
Overview's download button), which opens offline in any browser with no server.

It is the read model put on paper: every number and every verdict comes from the same functions the pages
call (overview, quadrants, curves, comparison, gallery_view, and analysis.verdict through them), never
computed anew here; `dashboard.figures` draws them as the pages do, and `cnmc_core.report.Document`
writes the file (it escapes every text, embeds plotly.js once and the images as data: URIs).

A study folder may come from someone else: names, subjects, paths and JSON values go into the file only
as escaped text, and files are read only through the store (inside the study folder; the gallery's
through `gallery_view`, which refuses symlinks). Nothing outside the study folder is read.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone

import pandas as pd

from .. import __version__
from ..report import Cell, Document, image_uri, number_cell
from . import comparison, curves, feature_space, figures, gallery_view, overview, quadrants
from .base import (
    ENSEMBLE_NAME,
    LOWER_IS_BETTER,
    METRICS,
    OURS,
    PAPER,
    StudyData,
    model_name,
    number,
    registry_table,
    section,
    stats_command,
)

SECTIONS = {  # anchor -> heading, in the order of the file (tests and the browser check read these)
    "study": "The study: data and protocol",
    "metrics": "Metrics on the validation split",
    "matrices": "Confusion matrices",
    "curves": "ROC, precision-recall and calibration",
    "significance": "Which differences are real? Significance",
    "gallery": "Grad-CAM gallery",
    "features": "Feature space",
    "notices": "Research use only",
}
RESEARCH_ONLY = ("These models and this report are for research and teaching only, not for diagnosis. They have not "
                 "been validated on patients or approved as a medical device; a cell's call must never guide a "
                 "clinical decision.")
SYNTHETIC = ("These cells are generated, not from patients, and the models use random weights: the numbers show how "
             "the pipeline works, not how well it diagnoses.")
PAPER_CAVEAT = ("The paper's rows are copied from its Table I: it reports validation accuracy, precision and recall "
                "only, with no interval, on its own validation images; the numbers are not of these cells and not "
                "comparable cell for cell. Its EfficientNetB0 row (accuracy 0.50, recall 1.00) is what a model "
                "that calls every cell ALL scores: the collapse EfficientNet shows when fed 0-1 inputs instead of "
                "0-255.")
PROTOCOL_KEYS = ("preset", "weights", "input_size", "epochs", "batch_size", "learning_rate", "patience", "dropout",
                 "flip", "standardize", "orientations", "color_jitter", "class_weight", "tta", "threshold",
                 "finetune", "split", "val_fold", "val_fraction", "seed", "precision", "xla", "distribute")
FEATURE_METHOD = "tsne"  # the Feature space page's first view (the saved PCA maps are on the page)
INTERVAL_CHARTS = ("accuracy", "roc_auc")  # the paper reports accuracy; ROC AUC is the threshold-free one


def study_report(data: StudyData, generated: datetime | None = None) -> str:
    """The whole report of study `data` as one HTML text (UTF-8 when written)."""
    doc = Document(f"Study report: {data.name}")
    doc.notice(RESEARCH_ONLY, "danger", "Research use only, not for diagnosis.", top=True)
    if data.synthetic:
        doc.notice(SYNTHETIC, "warning", "Synthetic demo data.", top=True)
    if data.missing:
        doc.notice("; ".join(f"{model_name(k)}: {why}" for k, why in data.missing.items()), "warning",
                   "Not in this report:", top=True)
    for note in data.notes:
        doc.notice(note, "warning", top=True)
    when = (generated or datetime.now(timezone.utc)).strftime("%Y-%m-%d %H:%M UTC")
    doc.paragraph(f"Made {when} by cnmc_core {__version__} from the study's saved files; it opens without a server "
                  f"or a network. The same results are in the dashboard's pages.", muted=True)
    view = overview.overview(data)
    _study_section(doc, data, view)
    _metrics_section(doc, data, view)
    _matrices_section(doc, data)
    _curves_section(doc, data)
    _significance_section(doc, data)
    _gallery_section(doc, data)
    _features_section(doc, data)
    doc.section(SECTIONS["notices"], "notices")
    doc.notice(RESEARCH_ONLY, "danger", "Research use only, not for diagnosis.")
    if data.synthetic:
        doc.notice(SYNTHETIC, "warning", "Synthetic demo data.")
    doc.paragraph(f"Recompute the statistics of this study from its saved predictions: {stats_command(data)}",
                  muted=True)
    doc.end_section()
    return doc.render()


def report_bytes(data: StudyData) -> bytes:
    """The report as the UTF-8 bytes of its file (the Overview's download button)."""
    return study_report(data).encode("utf-8")


def report_file_name(data: StudyData) -> str:
    """The report's file name ('demo_report.html'); study names are checked: letters, digits, '.', '_', '-'."""
    return f"{data.name}_report.html"


# ---- sections ---------------------------------------------------------------------------------------

def _study_section(doc: Document, data: StudyData, view: overview.Overview) -> None:
    doc.section(SECTIONS["study"], "study")
    doc.facts({"Study": data.name, **view.facts})
    doc.subheading("Images and subjects per split")
    doc.frame(view.splits, caption="Splits are by subject: no person is in two splits.")
    cfg = section(data.info, "config")
    doc.subheading("Protocol (study.json)")
    doc.facts({key: cfg[key] for key in PROTOCOL_KEYS if key in cfg and not isinstance(cfg[key], (dict, list))})
    versions, d = section(data.info, "versions"), section(data.info, "data")
    extra = {"Seed": data.info.get("seed", cfg.get("seed", "?")), "Data fingerprint": d.get("fingerprint", "?"),
             **{f"Version of {k}": v for k, v in versions.items() if not isinstance(v, (dict, list))}}
    doc.facts(extra)
    doc.subheading("The models")
    doc.frame(registry_table(data.models))
    doc.end_section()


def _metrics_section(doc: Document, data: StudyData, view: overview.Overview) -> None:
    doc.section(SECTIONS["metrics"], "metrics")
    if view.takeaway or view.verdict:  # the Overview's first-screen answer: the verdict, then the top ROC AUC
        doc.paragraph(view.takeaway or view.verdict, strong=True)
    if view.stats_note:
        doc.notice(view.stats_note, "info")
    keys = {model_name(k): k for k in data.evaluated}
    bounds = {(r.Model, r.metric): (r.low, r.high) for r in view.intervals.itertuples()}
    labels = {**METRICS, **LOWER_IS_BETTER}
    columns = ["Model", "Source", *labels.values(), "Threshold", "Best epoch", "Val. images"]
    rows, ids, classes = [], [], []
    for r in view.table.to_dict("records"):
        ours = r["Source"] == OURS
        row = [r["Model"], r["Source"]]
        for metric, label in labels.items():
            low_high = bounds.get((r["Model"], metric)) if ours else None
            below = f"95%: {low_high[0]:.3f}–{low_high[1]:.3f}" if low_high else ""
            row.append(number_cell(r[label], below=below))
        row += [number_cell(r["Threshold"], 2), _count(r["Best epoch"]), _count(r["Val. images"])]
        rows.append(row)
        ids.append(f"{keys.get(r['Model'], r['Model'])}|{'ours' if ours else 'paper'}")
        classes.append("" if ours else "ref")
    doc.table(columns, rows, ids, classes, table_id="metrics-table")
    doc.paragraph(
        "ALL (leukemic lymphoblast) is the positive class; recall is sensitivity for ALL. Unit: cell; N is the "
        "validation images column. Under each value: its 95% interval, a class-stratified bootstrap over "
        "validation subjects (the cells of one patient are not independent). Weighted F1: the F1 of each class "
        "weighted by its size (how the C-NMC challenge ranked entries). ECE: expected calibration error (10 bins of "
        "P(ALL)); Brier: mean squared error of P(ALL); lower is better for both."
        + (f" {ENSEMBLE_NAME} averages the P(ALL) of {', '.join(view.members)}; it is not trained itself."
           if view.members else ""), muted=True)
    if view.stopping_caveat:  # the validation split chose some model's stopping epoch
        doc.notice(view.stopping_caveat, "warning")
    if view.cv is not None and len(view.cv):
        doc.subheading("Cross-validated over the training patients")
        doc.frame(view.cv, caption=view.cv_note)
    if (view.table["Source"] == PAPER).any():
        doc.notice(PAPER_CAVEAT, "info", "The paper's rows (in italics).")
    if view.paper is not None and not view.paper.empty:
        doc.subheading("Beside the paper (its Table I)")
        doc.frame(view.paper, table_id="paper-table",
                  caption="Difference: this study − the paper. The paper split its data differently and reports no "
                          "interval, so a difference is a pointer, not a test.")
    if not view.patients.empty:
        doc.subheading("Per patient")
        doc.frame(view.patients, caption=f"Unit: patient, N = {int(view.patients['Patients'].max())} validation "
                                          "patients. Patient AUC ranks patients by their mean P(ALL); a patient is "
                                          "called ALL when the share of its cells called ALL reaches the share "
                                          "threshold. 95% intervals: class-stratified bootstrap over patients.")
    for metric in INTERVAL_CHARTS:
        if metric in set(view.intervals["metric"]):
            paper = view.table.loc[view.table["Source"] == PAPER, METRICS[metric]].notna().any()
            doc.figure(figures.interval_chart(view.intervals, view.table, metric),
                       f"{METRICS[metric]} of each model with its 95% subject-bootstrap interval"
                       + ("; grey ring: the paper's value" if paper else "")
                       + ". Overlapping intervals do not mean equal models: the significance section tests each pair.")
    doc.end_section()


def _matrices_section(doc: Document, data: StudyData) -> None:
    doc.section(SECTIONS["matrices"], "matrices")
    matrices = quadrants.confusion(data)
    doc.figure(figures.confusion_grid(list(matrices.values())),
               "Validation split, unit: cell. Rows: true class; columns: the call (ALL when P(ALL) ≥ the model's "
               "threshold). Each cell: count and share of its row.")
    doc.table(["Model", "TN (HEM called HEM)", "FP (HEM called ALL)", "FN (ALL called HEM)", "TP (ALL called ALL)",
               "Threshold"],
              [[m.name, *m.counts[0], *m.counts[1], number_cell(m.threshold, 2)] for m in matrices.values()],
              [f"{k}|matrix" for k in matrices], table_id="matrices-table")
    doc.end_section()


def _curves_section(doc: Document, data: StudyData) -> None:
    doc.section(SECTIONS["curves"], "curves")
    roc = curves.roc_pr(data)
    if roc.skipped:
        doc.notice(f"The validation split of {', '.join(roc.skipped)} holds one class only: no ROC or PR curve.")
    if not roc.auc:
        doc.paragraph("No model has a validation split with both classes, so there are no curves to draw.")
    else:
        doc.paragraph(f"Unit: cell. Each line is drawn with at most {figures.MAX_CURVE_POINTS:,} of its points; "
                      "the AUC and AP in the legends use every point.", muted=True)
        doc.subheading("ROC curve (ALL is positive)")
        doc.figure(figures.curve_lines(roc.roc, "fpr", "tpr", roc.auc, "AUC", True))
        doc.subheading("Precision-recall curve")
        doc.figure(figures.curve_lines(roc.pr, "recall", "precision", roc.ap, "AP", False))
        doc.subheading("Calibration")
        doc.figure(figures.calibration(roc.calibration, roc.ece),
                   "Does P(ALL) = 0.8 mean that 80% of such cells are ALL? Each point is one of 10 equal-width bins "
                   "of P(ALL) saved with the model's metrics, at its mean P(ALL); ECE is the size-weighted mean gap "
                   "to the diagonal. Unit: cell.")
    doc.end_section()


def _significance_section(doc: Document, data: StudyData) -> None:
    doc.section(SECTIONS["significance"], "significance")
    view = comparison.compare(data)
    if view.verdict.sentence:
        doc.paragraph(view.verdict.sentence, strong=True)
    if len(data.models) < 2:
        doc.paragraph("This study has one model: there is no pair to compare.")
    elif len(view.models) < 2:
        doc.paragraph(f"No model comparisons are saved for this study. Compute them: {stats_command(data)}")
    else:
        if view.recompute:
            doc.notice(view.recompute)
        tested = view.verdict.tested
        unit = (f"Unit: patient · N = {view.verdict.n_subjects} patients · Holm over {view.verdict.n_pairs} pairs"
                if tested else f"Unit: cell · N = {view.n_cells} cells · {comparison.MCNEMAR}")
        doc.figure(figures.p_matrix(view.models, view.pair[view.headline], view.significant, tested, unit),
                   ("Each cell: the Holm-adjusted p-value of a paired sign-flip test over patients between the row "
                    "and the column model (each patient gives one difference: the share of its cells the row model "
                    "calls right minus the column model's, each at its own threshold). " if tested else
                    "Each cell: the Holm-adjusted p-value of an exact McNemar test on the validation cells that "
                    f"exactly one of the two calls right; McNemar {comparison.MCNEMAR}, so it is optimistic. ")
                   + f"✱ and green: p < {comparison.SIGNIFICANCE:g}. The ensemble is not in the matrix: it is made "
                     "of these models.")
        doc.subheading(f"All {len(view.pairs)} pairs")
        doc.frame(view.pairs, digits={c: 4 for c in view.pairs.columns if c.startswith("p ")},
                  table_id="pairs-table",
                  caption=f"Cell-level McNemar {comparison.MCNEMAR}: cells of one patient are not, so its "
                          "p-values are far too small; it is shown beside the patient-level test, not instead of it.")
    if not view.subjects.empty:
        doc.subheading("Which patients are hard?")
        doc.figure(figures.subject_heatmap(view.subjects),
                   "Share of each validation subject's cells called right (at each model's threshold), hardest "
                   "first. For an ALL subject this is its sensitivity, for a HEM subject its specificity.")
    doc.end_section()


def _gallery_section(doc: Document, data: StudyData) -> None:
    doc.section(SECTIONS["gallery"], "gallery")
    shown = gallery_view.load_gallery(data.root, data.name)
    if shown is None:
        doc.paragraph("This study has no Grad-CAM gallery yet: it is made at the end of a study (run the study's "
                      "command again: finished models are skipped and the gallery is built).")
        doc.end_section()
        return
    stale = shown.stale()
    if stale:
        doc.notice("Retrained since the gallery was made (their heatmaps show the old model): "
                   + ", ".join(model_name(k) for k in stale) + ".")
    doc.paragraph(f"{len(shown.cells)} validation cells, {shown.method} on each model's last convolutional block; "
                  "the heatmap shows the evidence for the class the model predicts (magma: dark for none, pale "
                  "yellow for the strongest).",
                  muted=True)
    for cell in shown.cells:
        cell_id = str(cell.get("id", ""))
        try:
            title, models = shown.cell_caption(cell_id), shown.models
        except (KeyError, TypeError, ValueError):  # an index.json entry without the fields a caption needs
            continue
        items = [(_uri(shown.image(cell_id)), "the cell")]
        for key in models:
            try:
                caption = shown.caption(cell_id, key)
            except (KeyError, TypeError, ValueError):
                caption = f"{model_name(key)}: no result saved"
            items.append((_uri(shown.overlay(cell_id, key)), caption))
        doc.subheading(title)
        doc.images(items)
    doc.subheading("Sanity check: is the heat on the cell?")
    doc.frame(shown.sanity_table(), caption="A model that looks at the cell puts more of its heat there than the "
                                            "cell's share of the frame. Random-weight models need not.")
    doc.end_section()


def _features_section(doc: Document, data: StudyData) -> None:
    """The Feature space page's maps (dashboard.feature_space reads the maps saved with the study; nothing is
    computed here): t-SNE of every model coloured by class, then by patient, and each map's two numbers."""
    doc.section(SECTIONS["features"], "features")
    try:
        space = feature_space.feature_space(data, FEATURE_METHOD)
    except (OSError, ValueError) as e:
        doc.paragraph(f"The feature-space maps cannot be read: {str(e).splitlines()[0] if str(e) else e}")
        doc.end_section()
        return
    if space.unmapped:
        doc.notice(f"No current feature-space maps are saved for {', '.join(map(model_name, space.unmapped))}: "
                   "open the Feature space page once to compute them, then make the report again.", "info")
    for key, why in space.missing.items():
        doc.notice(f"{model_name(key)}: {why}", "info")
    if not space.panels:
        doc.end_section()
        return
    method = feature_space.METHODS[FEATURE_METHOD]
    doc.paragraph(f"{method} maps of the pooled features of the same {space.n_cells:,} validation cells "
                  f"({space.n_subjects} patients) in every panel"
                  + (f" (t-SNE on a class-stratified subsample of {space.subsample:,} cells)"
                     if space.subsample else "")
                  + ". Close points are cells the frozen base sees as alike; the axes of a t-SNE map mean nothing.",
                  muted=True)
    rows = []
    for panel in space.panels.values():
        separability, clustering = feature_space.scores(panel)
        rows.append([panel.name,
                     Cell(separability.value, _finite(panel.scores.get("knn_accuracy")), separability.detail),
                     Cell(clustering.value, _finite(panel.scores.get("same_subject_share_map")), clustering.detail)])
    doc.table(["Model", "Class separability", "Patient clustering"], rows, [f"{k}|features" for k in space.panels],
              caption=f"{separability.caption} {clustering.caption}", table_id="features-table")
    for colour_by in ("class", "subject"):
        doc.subheading(f"Coloured by {feature_space.COLOUR_BY[colour_by].lower()}")
        doc.figures([_svg(feature_space.figure(space, key, colour_by, height=360)) for key in space.panels])
    doc.end_section()


def _svg(fig):
    """`fig` with its WebGL scatter traces drawn as SVG: a browser keeps only about 16 WebGL contexts alive (a
    report with a dozen maps would lose the first ones), some have none (virtual machines, print)."""
    drawn = fig.to_dict()  # a plain dict: the same attributes, without Plotly's slow re-validation of each trace
    for trace in drawn["data"]:
        trace["type"] = "scatter" if trace.get("type") == "scattergl" else trace.get("type", "scatter")
    return drawn


def _finite(x) -> float | None:
    """A saved score as a float, None when it is not a finite number (the map's JSON may come from anyone)."""
    x = number(x)
    return x if math.isfinite(x) else None


def _uri(image) -> str | None:
    return None if image is None else image_uri(image, "JPEG")


def _count(value) -> Cell | str:
    return "—" if value is None or pd.isna(value) else number_cell(int(value))
