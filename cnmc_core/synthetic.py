"""A synthetic, C-NMC-like dataset: single cells centred on black, written in the Kaggle layout.

It exists so that the whole study can run on any machine with no download. It is not data about
real patients and everything shown from it says so (the folder carries `SYNTHETIC.txt`).

The morphology follows what hematologists look at (the values are chosen, not measured):
- ALL lymphoblasts: larger (about 30% more area), a nucleus that fills more of the cell (high N:C
  ratio), fine dispersed chromatin, often one to three pale nucleoli, a less regular outline.
- Normal B cells (HEM): smaller and round, thinner-looking nucleus margin, dense clumped chromatin.
Each subject has its own stain hue, stain strength and illumination, and each class's parameters
are drawn from overlapping distributions, so a classifier can do well but not perfectly.

Every image is drawn from its own seed (derived from the dataset seed, the subject and the cell),
so the output is byte-for-byte the same for a seed, whatever the order or parallelism.
"""

from __future__ import annotations

import csv
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from .disk import atomic_path, exclusive

log = logging.getLogger(__name__)

SIDE = 450  # C-NMC frames are 450 x 450 RGB
MARKER = "SYNTHETIC.txt"


@dataclass(frozen=True)
class DemoSpec:
    """How big the synthetic dataset is. Subjects are split evenly over the three folds."""

    seed: int = 0
    train_all_subjects: int = 12  # ALL patients in the training folds
    train_hem_subjects: int = 9  # normal subjects in the training folds
    train_cells_all: int = 28  # cells per ALL training subject
    train_cells_hem: int = 22  # cells per normal training subject (C-NMC has ~2:1 ALL:HEM cells)
    prelim_all_subjects: int = 4  # labelled preliminary test set (our validation split)
    prelim_hem_subjects: int = 4
    prelim_cells: int = 22
    final_subjects: int = 4  # unlabelled final test set
    final_cells: int = 10


@dataclass(frozen=True)
class _Cell:
    subject: str
    is_all: bool
    seed: int


def _subject_style(rng: np.random.Generator) -> dict:
    """Per-subject stain and illumination: hue, strength, brightness, colour cast."""
    return {
        "hue": rng.normal(0.0, 0.06),  # shifts purple towards blue or magenta
        "strength": rng.uniform(0.8, 1.15),  # stain density
        "gain": rng.uniform(0.85, 1.12),  # illumination
        "cast": rng.normal(0.0, 6.0, size=3),  # small per-channel offset
        "size": rng.normal(1.0, 0.05),  # patients differ a little in cell size
    }


def _smooth_noise(rng: np.random.Generator, shape, sigma: float) -> np.ndarray:
    n = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
    return n / (n.std() + 1e-6)


def draw_cell(is_all: bool, style: dict, rng: np.random.Generator) -> np.ndarray:
    """One 450x450x3 uint8 cell centred on black."""
    # Morphology from overlapping class-conditional distributions. `t` in [0, 1] is how blast-like
    # this cell is; ALL cells mostly draw high t, normal cells low t, with a shared middle.
    t = float(np.clip(rng.beta(6, 2) if is_all else rng.beta(2, 6), 0, 1))
    radius = (98 + 30 * t + rng.normal(0, 7)) * style["size"]  # ALL ~ 30% more area
    nc_ratio = np.clip(0.68 + 0.2 * t + rng.normal(0, 0.04), 0.5, 0.95)  # nucleus / cell radius
    irregular = 0.015 + 0.06 * t * rng.uniform(0.5, 1.5)  # outline harmonics amplitude
    clump = 1.0 - t  # chromatin clumping: dense clumps (normal) vs fine (blast)
    n_nucleoli = rng.poisson(2.0 * t * t)

    yy, xx = np.mgrid[0:SIDE, 0:SIDE].astype(np.float32)
    cy, cx = SIDE / 2 + rng.normal(0, 6, size=2)
    angle = rng.uniform(0, 2 * np.pi)
    aspect = rng.uniform(0.85, 1.0)
    dy, dx = yy - cy, xx - cx
    u = dx * np.cos(angle) + dy * np.sin(angle)
    v = (-dx * np.sin(angle) + dy * np.cos(angle)) / aspect
    r = np.hypot(u, v)
    theta = np.arctan2(v, u)
    outline = np.ones_like(theta)
    for k in range(2, 7):
        outline += irregular / k**0.5 * rng.normal() * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    rel = r / (radius * outline)  # < 1 inside the cell

    # Nucleus: offset a little from the centre (more in normal cells, whose cytoplasm shows).
    off = radius * (1 - nc_ratio) * rng.uniform(0.0, 0.8)
    phi = rng.uniform(0, 2 * np.pi)
    nr = np.hypot(u - off * np.cos(phi), v - off * np.sin(phi))
    n_outline = np.ones_like(theta)
    for k in range(2, 6):
        n_outline += (irregular * 1.2) / k**0.5 * rng.normal() * np.cos(k * theta + rng.uniform(0, 6.3))
    n_rel = nr / (radius * nc_ratio * n_outline)

    cell = np.clip((1.0 - rel) * 6.0, 0, 1)  # soft edges, about 1/6 of the radius
    nucleus = np.clip((1.0 - n_rel) * 8.0, 0, 1)

    # Chromatin: fine grain for blasts, coarse dark clumps for normal cells.
    fine = _smooth_noise(rng, (SIDE, SIDE), 1.2)
    coarse = _smooth_noise(rng, (SIDE, SIDE), 5.0)
    chromatin = (1 - clump) * 0.35 * fine + clump * np.clip(coarse, -0.5, 3.0) * 0.6
    density = 0.75 + 0.25 * chromatin  # darker where larger
    for _ in range(n_nucleoli):
        a = rng.uniform(0, 2 * np.pi)
        d = rng.uniform(0, 0.55) * radius * nc_ratio
        ny, nx = cy + d * np.sin(a), cx + d * np.cos(a)
        rad = rng.uniform(5, 10)
        density -= 0.45 * np.exp(-((yy - ny) ** 2 + (xx - nx) ** 2) / (2 * rad**2))

    # Colours (RGB, 0-255) before the subject's stain: pale blue-violet cytoplasm, deep purple nucleus.
    cyto_rgb = np.array([170, 150, 205], np.float32)
    nuc_rgb = np.array([95, 45, 140], np.float32)
    s = style["strength"]
    hue = style["hue"]
    shift = np.array([1 + hue, 1 - abs(hue) * 0.5, 1 - hue], np.float32)
    cyto = 255 - (255 - cyto_rgb) * s
    nuc_base = 255 - (255 - nuc_rgb) * s
    nuc = nuc_base[None, None, :] * (1.25 - 0.35 * np.clip(density, 0.2, 1.6))[..., None]
    rgb = (cyto[None, None, :] * (1 - nucleus[..., None]) + nuc * nucleus[..., None]) * shift
    rgb = rgb * style["gain"] + style["cast"]
    rgb = rgb * cell[..., None]
    rgb += rng.normal(0, 2.5, size=rgb.shape).astype(np.float32) * cell[..., None]
    return np.clip(rgb, 0, 255).astype(np.uint8)


def _subjects(spec: DemoSpec) -> dict:
    """Subject ids per group, with C-NMC's naming: ALL subjects are numbers, normal ones carry H."""
    final_all = (spec.final_subjects + 1) // 2
    final_hem = spec.final_subjects // 2
    n_all = [spec.train_all_subjects, spec.prelim_all_subjects, final_all]
    n_hem = [spec.train_hem_subjects, spec.prelim_hem_subjects, final_hem]
    groups = {}
    first_all, first_hem = 1, 1
    for group, a, h in zip(("train", "prelim", "final"), n_all, n_hem):
        groups[group] = [(str(i), True) for i in range(first_all, first_all + a)] + [
            (f"H{i}", False) for i in range(first_hem, first_hem + h)
        ]
        first_all, first_hem = first_all + a, first_hem + h
    return groups


def _write_bmp(path: Path, pixels: np.ndarray) -> None:
    # A unique temp name per writer: two demo builds at once write the same files without colliding.
    # Not fsynced (durable=False): the generator can always write them again.
    with atomic_path(path, durable=False) as tmp:
        Image.fromarray(pixels, "RGB").save(tmp, format="BMP")


def generate(out_dir: str | Path, spec: DemoSpec = DemoSpec(), workers: int | None = None) -> Path:
    """Write the synthetic dataset under `out_dir` (Kaggle layout) and return the C-NMC root.

    Layout: training_data/fold_{0,1,2}/{all,hem}/UID_<subject>_<image>_<cell>_<all|hem>.bmp,
    validation_data/C-NMC_test_prelim_phase_data/<n>.bmp with its labels CSV, and
    testing_data/C-NMC_test_final_phase_data/<n>.bmp (no labels).
    """
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    groups = _subjects(spec)
    master = np.random.SeedSequence(spec.seed)
    styles = {}
    for i, (subject, _) in enumerate(groups["train"] + groups["prelim"] + groups["final"]):
        styles[subject] = _subject_style(np.random.default_rng([spec.seed, 7, i]))

    jobs: list[tuple[Path, _Cell]] = []
    for i, (subject, is_all) in enumerate(groups["train"]):
        fold = i % 3
        cls = "all" if is_all else "hem"
        n = spec.train_cells_all if is_all else spec.train_cells_hem
        folder = root / "training_data" / f"fold_{fold}" / cls
        folder.mkdir(parents=True, exist_ok=True)
        for c in range(n):
            name = f"UID_{subject}_{c // 4 + 1}_{c % 4 + 1}_{cls}.bmp"
            jobs.append((folder / name, _Cell(subject, is_all, len(jobs))))

    prelim_dir = root / "validation_data" / "C-NMC_test_prelim_phase_data"
    prelim_dir.mkdir(parents=True, exist_ok=True)
    prelim_rows = []
    prelim_cells = [(s, a, c) for s, a in groups["prelim"] for c in range(spec.prelim_cells)]
    order = np.random.default_rng([spec.seed, 11]).permutation(len(prelim_cells))
    for n, idx in enumerate(order, start=1):
        subject, is_all, c = prelim_cells[idx]
        cls = "all" if is_all else "hem"
        prelim_rows.append((f"UID_{subject}_{c // 4 + 1}_{c % 4 + 1}_{cls}.bmp", f"{n}.bmp", int(is_all)))
        jobs.append((prelim_dir / f"{n}.bmp", _Cell(subject, is_all, len(jobs))))

    final_dir = root / "testing_data" / "C-NMC_test_final_phase_data"
    final_dir.mkdir(parents=True, exist_ok=True)
    final_cells = [(s, a) for s, a in groups["final"] for _ in range(spec.final_cells)]
    order = np.random.default_rng([spec.seed, 13]).permutation(len(final_cells))
    for n, idx in enumerate(order, start=1):
        subject, is_all = final_cells[idx]
        jobs.append((final_dir / f"{n}.bmp", _Cell(subject, is_all, len(jobs))))

    seeds = master.spawn(len(jobs))

    def work(i: int) -> None:
        path, cell = jobs[i]
        pixels = draw_cell(cell.is_all, styles[cell.subject], np.random.default_rng(seeds[i]))
        _write_bmp(path, pixels)

    with ThreadPoolExecutor(max_workers=workers or min(4, os.cpu_count() or 1)) as pool:
        list(pool.map(work, range(len(jobs))))

    labels = root / "validation_data" / "C-NMC_test_prelim_phase_data_labels.csv"
    with atomic_path(labels) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Patient_ID", "new_names", "labels"])
        w.writerows(prelim_rows)
    with atomic_path(root / MARKER) as tmp:  # last: its presence means the dataset is whole
        tmp.write_text(
            "Synthetic C-NMC-like cells made by `python -m cnmc_core demo` "
            f"(seed {spec.seed}). Not images of real patients; not for any medical use.\n"
        )
    log.info("wrote %d synthetic cells under %s", len(jobs), root)
    return root


def is_synthetic(data_dir: str | Path) -> bool:
    return (Path(data_dir) / MARKER).exists()


def ensure_generated(out_dir: str | Path, spec: DemoSpec = DemoSpec()) -> bool:
    """Write the dataset under `out_dir` unless it is there already; True when this call wrote it.

    Builds started at once (two demo studies share the default data folder) take turns on a lock
    in the folder: the first writes, the others find the dataset whole and go on.
    """
    root = Path(out_dir)
    if is_synthetic(root):
        return False
    root.mkdir(parents=True, exist_ok=True)
    with exclusive(root / ".generating.lock"):
        if is_synthetic(root):
            return False
        generate(root, spec)
        return True
