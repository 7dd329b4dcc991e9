"""About: the protocol in plain words, how to reproduce it on the real C-NMC data, the paper, the notice."""

import streamlit as st

from cnmc_core.dashboard import about, base
from views import _ui as ui

PROTOCOL = """
**The question.** Can a network trained on photographs of everyday objects (ImageNet) tell a leukemic
lymphoblast (**ALL**) from a normal B cell (**HEM**) in a single-cell image of a blood smear?

**The data.** C-NMC 2019: one stain-normalised cell per 450×450 image, centred on black. The training
folds hold 10,661 images of 73 people (7,272 ALL, 3,389 HEM); the preliminary test set, used here for
validation, holds 1,867 images of 28 other people.

**The split is by person.** All cells of one person are in one split. Splitting images at random puts
near-identical cells of one person on both sides and inflates the results.

**The models.** Seven ImageNet networks (below), each frozen. Only a small head is trained on top:
global max pooling → dropout 0.5 → a dense layer with two sigmoid outputs; Adamax, learning rate 0.001,
batch 40, up to 15 epochs, early stopping after 5 epochs without a better validation loss (the best
epoch's weights are kept). Training images are flipped left-right at random. The whole frame is resized
to the model's input, never cropped to the cell: ALL cells are about 30% larger, and size is a signal.

**Speed.** With the base frozen, its output for an image never changes, so it is computed once (for
each training image and its mirror) and cached; the head then trains in seconds. The results are those
of the ordinary training loop.

**The metrics.** ALL is the positive class: recall (sensitivity) is the share of ALL cells found,
specificity the share of normal cells recognised as normal. A cell is called ALL when the model's
P(ALL) is at least 0.5 (the threshold page shows other choices).
"""

REPRODUCE = """
1. Download C-NMC 2019 (the *C-NMC_Leukemia* copy on Kaggle, or the TCIA copy) and unpack it.
2. Install: `bash scripts/setup.sh` (a virtual environment in `.venv` with the pinned versions).
3. Train and evaluate the seven models with ImageNet weights (downloaded once into `~/.keras/models`):
"""

GPU = """
TensorFlow uses an NVIDIA GPU automatically when it is installed as `tensorflow[and-cuda]`
(`pip install "tensorflow[and-cuda]==2.21.0"` on Linux); nothing else changes. On a CPU, a smaller
`--input-size` (for example 128) gives a quicker first look.
Offline? Put the seven notop `.h5` weight files in a folder and pass `--weights <folder>`.
"""

PAPER = """
A. Vijesh and K. Sikka, *"A Comparative Analysis of Transfer Learning in State-of-the-Art Pre-Trained
Models on the C-NMC Leukemia Dataset"*. Its Table I (validation accuracy,
precision, recall) is shown beside this study's results on the Overview page. Its best model, ResNet101,
reached 76.4% validation accuracy.
"""


def page() -> None:
    ui.start("About", needs_study=False, notice=ui.RESEARCH_ONLY)
    st.markdown(PROTOCOL)
    st.dataframe(base.registry_table(), hide_index=True)
    st.header("Reproduce it on the real C-NMC data")
    st.markdown(REPRODUCE)
    st.code("python -m cnmc_core train --data <C-NMC folder> --study cnmc --artifacts artifacts\n"
            "streamlit run app.py", language="bash")
    st.markdown(GPU)
    st.markdown("To try everything without the data: `python -m cnmc_core demo` builds a small synthetic study "
                "(generated cells, random weights) in 2-3 minutes on a CPU.")
    st.header("Smear crops, and the answer on the Classify page")
    st.markdown(about.preparation_markdown())
    st.header("The reference paper")
    st.markdown(PAPER)
    st.header("Research use only")
    st.warning("These models and this dashboard are for **research and teaching only, not for diagnosis**. They have "
             "not been validated on patients or approved as a medical device; a cell's call must never guide a "
             "clinical decision.", icon="🚫")


ui.run(page)
