"""The dashboard's read model: every page asks one of these modules, in one call, for what it shows.

Pages never see a path, a Keras object or a metric formula. They get plain values: dicts, DataFrames
and small dataclasses that pickle (so Streamlit can cache them). Paths are resolved through
`cnmc_core.store` (the one module that knows the layout); metrics come from scikit-learn via
`evaluation.classification_metrics`, the same function that wrote metrics.json.

A study folder may come from someone else: what it says is validated here (model keys against the
registry, files through the store's readers), and a broken model is listed as not shown, never raised.

    base          StudyData, load_study, stamp, studies, names and metric labels (every page)
    thumbnails    cell images from the study's data folder, only inside folders this machine trusts
    overview      the Overview page: facts, the metrics table with the paper's, intervals
    quadrants     confusion matrices and the cells behind one quadrant
    curves        training curves, ROC / PR, calibration, one model at any threshold
    comparison    the Compare page: model pairs, reliability diagrams, subjects, two studies
    feature_space the Feature space page: each model's saved 2-D map of the cells and its Plotly figure, the
                  separability and patient-clustering numbers in words, computing maps a study lacks
    dataset_view  class balance, subjects per split, sample cells, excluded files
    classify      the study's Predictor, per-model tables, overlays (the Classify page)
    classify_answer  the Classify page's answer: track records, reference cells, summary, export, examples
    about         the About page's text that depends on the code (preparation, the Inconclusive rule)
    gallery_view  the Grad-CAM gallery of a study
    demo_build    the Overview's demo button: one `python -m cnmc_core demo` process per root
    figures       Plotly figures of the read model's values, for the study report
    report        the study report: one self-contained HTML file built from the modules above (the only
                  module that imports other page families; the CLI's `report` and the Overview's download)

Conventions, as in metrics.json: ALL (label 1) is the positive class; a confusion matrix is
[[tn, fp], [fn, tp]] with rows = true class (HEM, ALL) and columns = predicted class (HEM, ALL).
"""
