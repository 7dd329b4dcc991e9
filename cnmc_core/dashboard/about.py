"""The About page's text that depends on the code: what the smear preparation does, where it fails, and how the
Classify page's answer is made (the Inconclusive rule, the track record), with every number taken from the module
that applies it, so the page cannot drift from the code."""

from __future__ import annotations

from .. import answer, prepare, smears


def preparation_markdown() -> str:
    """What happens to an upload on the Classify page (and in `predict` / `explain`), and where it fails."""
    return f"""
**What the preparation does.** The models learned C-NMC frames: one segmented, stain-normalised cell centred on
black. A crop or field cut from a smear photograph is made into such frames first (classical image analysis with
scikit-image, no neural network). The stains are separated, the nuclei thresholded and touching cells split
(watershed); red cells, platelets and debris are left out by size and shape. The **whole** crop is then rescaled
to C-NMC's pixel scale ({smears.CNMC_UM_PER_PX} µm per pixel, an assumption documented in docs/preparation.md):
from the micrometres per pixel you state, else from the red cells measured in the crop (median
{smears.RED_CELL_DIAMETER_UM} µm across), else not at all, with a note. A cell is never resized on its own: in
C-NMC a cell's size is evidence (ALL blasts are larger). Each cell is masked, centred on black and its stain
normalised toward the study's training frames (Reinhard, in Lab); the page shows each frame before and after.
An image that already looks like a C-NMC frame passes through unchanged. At most {prepare.MAX_CELLS} cells are
classified per upload, after downscaling to at most {prepare.MAX_PIXELS:,} pixels.

**Where it fails.** *Blurred cells*: the chromatin texture the models rely on is gone, and so may be the red cells'
pallor that gives the scale. *Overlapping white cells it cannot split*: cells lying largely over one another are
found as one cell. *Other white-cell types* (neutrophils, monocytes, eosinophils): the preparation finds them, since
they are stained cells of the right size, but the models never saw them; the out-of-distribution check must say
so, and the answer means nothing for them. Results on crops are **research use only**, like everything here.

**How the answer is made.** The headline is the ensemble's call (the mean P(ALL) of the models at its threshold)
only when it can be backed up. It says **Inconclusive**, with the reasons, when the image is unlike the training
cells (the out-of-distribution check warns), when the models split (fewer than two thirds of them vote with the
ensemble, each at its own threshold), or when the ensemble's P(ALL) is within {answer.NEAR_THRESHOLD} of its
threshold. Every model's P(ALL) stays below it, each beside its **track record** on the study's validation cells:
sensitivity, specificity and AUC with 95% intervals (class-stratified subject bootstrap; the unit is the cell), and
what a score like this one has meant: among the validation cells that model scored within ±{answer.NEAR_SCORE} of
it, the share that were ALL and how many cells that is. The **reference cells** are the training cells of each
class nearest to the upload in one model's feature space.
"""
