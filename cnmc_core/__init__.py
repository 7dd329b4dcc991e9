"""cnmc_core: train, evaluate and explain seven Keras transfer models on C-NMC 2019 (ALL vs HEM).

Importing the package does not import TensorFlow: Keras is imported inside the functions that need it,
so the dashboard and `python -m cnmc_core models` start fast.

The layer order. Data flows one way, and so do imports: a module imports only modules listed before it
(`tests/test_structure.py` parses every import and enforces this, with no circles and no function-local
imports other than `tensorflow`, `keras`, `tf_keras_vis` and `cnmc_core.training`, which subclasses
Keras classes at import and so is lazy like Keras itself).

    registry     the model table: one ModelSpec per model key, the single source of truth
    runtime      how forward passes run: precision, XLA, distribution over devices
    config       StudyConfig, presets, config hashes
    disk         file-system primitives: atomic writes, pid checks, folder locks (no layout)
    artifacts    what each study file must hold: the checks behind the store's validated reads
    store        the only module that knows paths on disk: atomic writes, validated reads, the study lock
    progress     ProgressEvent, the one progress-event type (study emits, cli prints, dashboard reads)
    images       bounded decoding, resizing, preprocessing, batches
    synthetic    the synthetic C-NMC demo generator
    smears       synthetic smear crops and fields with ground truth
    dataset      scanning C-NMC folders (Kaggle, TCIA, fold_* only)
    splits       subject-disjoint splits
    stats        statistics: subject bootstrap, paired tests, calibration
    patient_stats  patient-level results built on stats
    evaluation   classification metrics (scikit-learn)
    models       building, loading and saving the flat Keras classifiers; ImageNet weights
    features     pooled-feature extraction and its cache
    projection   2-D maps of the pooled features (PCA, t-SNE) and how well they separate classes and patients
    head         the paper's head in NumPy: targets, class weights, probabilities, the threshold
    training     head training and fine-tuning
    crossval     subject-level cross-validation of the head on cached features (train --split cv)
    render       colour maps, overlays, PNG bytes
    palette      the colours of every chart: a colour-blind-safe colour and marker per model, the classes, the accent
    heat         reading a heatmap: its share of heat on the cell, flat or empty, in the words shown beside it
    explain      the CAM methods (Grad-CAM, Grad-CAM++, Score-CAM)
    compiled     each model's compiled Grad-CAM pass kept in a machine-local cache (never in a study), read back fast
    gallery      the Grad-CAM gallery: choosing, building, reading
    ood          the out-of-distribution check: frame statistics and feature reference
    neighbours   reference cells: the training cells nearest to an upload in a model's feature space
    masks        mask operations giving what scikit-image's and scipy's give, faster (holes, openings, distances)
    segment      finding white cells in a smear crop
    cutout       a white cell cut out onto black: its coverage at its soft edge, the glass's light removed
    stain        stain normalisation in CIE Lab (Reinhard): the colour reference, a stain's distance, moving it
    prepare      smear crop -> C-NMC-style frames (scale, mask, centring, stain normalisation)
    answer       the Inconclusive rule, and the one-line summary of several results
    predict      classifying uploads with every model of a study
    roundtrip    the headline round trip: validation cells on synthetic smears, prepared and classified
    analysis     a study's statistics (the `stats` command)
    study        running a study, and its study-end hooks
    report       the self-contained HTML document of a report: escaped text, tables, Plotly with its JavaScript
                 once, images as data: URIs (no study knowledge: dashboard.report fills it from the read model)
    dashboard    the dashboard's read model (dashboard.base first, then one module per page family; then
                 dashboard.report, the study report, which alone reads every page family)
    commands     what each command of the command line does, and the tables it prints
    cell_commands  `predict` and `explain`: classifying and explaining cells, smear crops and fields
    cli          the command line: arguments, parsing, exit codes
    __main__

Pages (`views/`) import only `cnmc_core.dashboard` and `views/_ui.py`.
"""

__version__ = "0.1.0"

# The layer order above, as data: tests/test_structure.py reads it. A name that has no module yet is allowed.
LAYERS = (
    "registry", "runtime", "config", "disk", "artifacts", "store", "progress", "images", "synthetic", "smears",
    "dataset", "splits", "stats", "patient_stats", "evaluation", "models", "features", "projection", "head",
    "training", "crossval", "render", "palette", "heat", "explain", "compiled", "gallery", "ood", "neighbours",
    "masks", "segment", "cutout", "stain", "prepare", "answer", "predict",
    "roundtrip", "analysis", "study", "report", "dashboard",
    "commands", "cell_commands", "cli", "__main__",
)
