"""Predict on every kind of input a person can drop on the page: bad files get a reason, odd ones a prediction.

Every file is made here. Bad input: empty, text or PDF named as an image, truncated, 1x1, a
decompression bomb. Unusual valid input: RGBA, grayscale, palette, 16-bit, CMYK JPEG, EXIF-rotated
JPEG, animated GIF, a 3000x3000 TIFF. Then the out-of-distribution warning and the CLI.
"""

from __future__ import annotations

import functools
import io
import json
import struct
import subprocess
import sys
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from cnmc_core.images import MAX_PIXELS, open_image
from cnmc_core.predict import Predictor
from cnmc_core.store import StudyStore

from .conftest import ROOT, TINY_MODELS
from .helpers import cli

pytestmark = pytest.mark.slow  # they share the trained tiny study


@pytest.fixture(scope="module")
def predictor(tiny_study) -> Predictor:
    return Predictor.load(StudyStore(*tiny_study))


@pytest.fixture(scope="module")
def cell(tiny_study) -> Image.Image:
    """A validation cell of the study (450x450 RGB, centred on black)."""
    store = StudyStore(*tiny_study)
    path = store.read_predictions("vgg16")["path"][0]
    return open_image(f"{store.read_study()['data']['path']}/{path}")


def encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


@functools.cache
def png_bomb(side: int) -> bytes:
    """A real decompression bomb: a valid 1-bit PNG of side x side pixels, all zeros, about 100 KB per 10k side."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\x00" * (1 + (side + 7) // 8)  # filter byte + packed bits
    z = zlib.compressobj(9)
    rows = row * 1000
    parts = [z.compress(rows) for _ in range(side // 1000)] + [z.compress(row * (side % 1000)), z.flush()]
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b"")


def assert_prediction(result: dict) -> None:
    assert "error" not in result, result
    assert {"file", "predictions", "ensemble", "label", "agreement", "ood"} <= set(result)
    assert set(result["predictions"]) == set(TINY_MODELS)
    assert all(0.0 <= p <= 1.0 for p in result["predictions"].values())
    assert result["call"] in ("ALL", "HEM") and result["agreement"].endswith(result["call"])
    assert result["label"] == ("inconclusive" if result["reasons"] else result["call"])  # answer.py's rule


# --- bad input ---------------------------------------------------------------------------------------
def _bad_inputs(cell: Image.Image) -> dict[str, tuple[bytes, str]]:
    png = encode(cell, "PNG")
    jpeg = encode(cell, "JPEG", quality=90)
    return {
        "empty.png": (b"", "the file is empty"),
        "notes.png": (b"Patient notes, not an image.\n" * 20, "not an image file"),
        "report.jpg": (b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << >>\n%%EOF\n", "not an image file"),
        "half.png": (png[: len(png) // 2], "truncated"),
        "half.jpg": (jpeg[: len(jpeg) // 2], "truncated"),
        "half.bmp": (encode(cell, "BMP")[:50_000], "truncated"),
        "dot.png": (encode(Image.new("RGB", (1, 1), (200, 100, 200)), "PNG"), "1x1 pixels is too small"),
        "bomb.png": (png_bomb(40_000), "refused before decoding"),
    }


def test_each_bad_file_gets_a_one_line_reason_and_the_next_upload_works(predictor, cell, tmp_path):
    good = encode(cell, "PNG")
    for name, (data, reason) in _bad_inputs(cell).items():
        for source in (data, _write(tmp_path / name, data)):  # an upload in memory, and a file on disk
            result = predictor.predict(source, name=name)
            assert set(result) == {"file", "error"} and result["file"] == name
            error = result["error"]
            assert reason in error and "\n" not in error and "Traceback" not in error, result
        assert_prediction(predictor.predict(good, name="next.png"))


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def test_a_bomb_is_refused_from_its_header_fast_and_without_allocating(tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_bomb(40_000))  # 1.6e9 pixels: decoding would need 1.6 GB
    assert bomb.stat().st_size < 1_000_000 and 40_000**2 > MAX_PIXELS
    code = (
        "import sys, time\n"
        "from cnmc_core.images import ImageError, open_image\n"
        "t = time.perf_counter()\n"
        "try:\n    open_image(sys.argv[1]); print('decoded')\n"
        "except ImageError as e:\n    print(e)\n"
        "print(time.perf_counter() - t)\n"
        # VmHWM: this process's peak resident memory, KiB (ru_maxrss would include the forking pytest's)
        "print(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')))\n"
    )
    r = subprocess.run([sys.executable, "-c", code, str(bomb)], cwd=ROOT, capture_output=True, text=True, check=True)
    message, seconds, peak_kib = r.stdout.strip().splitlines()
    assert "refused before decoding" in message
    assert float(seconds) < 1.0
    assert int(peak_kib) < 300 * 1024  # the whole interpreter stayed under 300 MB


def test_uploads_stay_in_memory_and_match_the_file_on_disk(predictor, cell, tmp_path, tiny_study):
    data = encode(cell, "PNG")
    before = {p for p in tiny_study[0].rglob("*")} | {p for p in ROOT.iterdir()}
    from_memory = predictor.predict(data, name="../../etc/evil name.png")
    after = {p for p in tiny_study[0].rglob("*")} | {p for p in ROOT.iterdir()}
    assert after == before  # nothing written anywhere, least of all under the name the user chose
    assert from_memory["file"] == "../../etc/evil name.png"  # only echoed back
    from_disk = predictor.predict(_write(tmp_path / "c.png", data))
    assert from_memory["predictions"] == from_disk["predictions"]


# --- unusual but valid input ---------------------------------------------------------------------------
def test_rgba_is_composited_on_black_like_the_training_background(predictor, cell):
    rgb = np.asarray(cell).copy()
    alpha = np.where(rgb.max(axis=-1) > 0, 255, 0).astype(np.uint8)
    rgb[alpha == 0] = 255  # a white background, hidden by alpha
    rgba = Image.fromarray(np.dstack([rgb, alpha]), "RGBA")
    result = predictor.predict(encode(rgba, "PNG"))
    assert_prediction(result)
    assert result["predictions"] == predictor.predict(encode(cell, "PNG"))["predictions"]


def test_grayscale_palette_and_16_bit_frames_are_predicted_like_their_rgb_form(predictor, cell):
    gray = cell.convert("L")
    gray_rgb = predictor.predict(encode(gray.convert("RGB"), "PNG"))
    as_gray = predictor.predict(encode(gray, "PNG"))
    assert_prediction(as_gray)
    assert as_gray["predictions"] == gray_rgb["predictions"]
    assert as_gray["ood"]["warning"] and any("stain colour" in r for r in as_gray["ood"]["reasons"])  # no stain colour

    wide = Image.fromarray(np.asarray(gray, dtype=np.uint16) * 257)  # mode I;16: 16-bit, the same brightness
    as_16 = predictor.predict(encode(wide, "PNG"))
    assert_prediction(as_16)
    assert as_16["predictions"] == pytest.approx(as_gray["predictions"], abs=1e-6)

    palette = cell.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    as_palette = predictor.predict(encode(palette, "PNG"))
    assert_prediction(as_palette)
    assert as_palette["predictions"] == predictor.predict(encode(palette.convert("RGB"), "PNG"))["predictions"]


def test_a_cmyk_jpeg_gets_the_prediction_of_its_rgb_conversion(predictor, cell):
    cmyk_jpeg = encode(cell.convert("CMYK"), "JPEG", quality=95)
    with Image.open(io.BytesIO(cmyk_jpeg)) as img:
        assert img.mode == "CMYK"
        as_rgb = img.convert("RGB")
    decoded = np.asarray(open_image(cmyk_jpeg), dtype=np.float32)
    assert np.abs(decoded - np.asarray(cell, dtype=np.float32)).mean() < 6  # colours kept, not inverted
    result = predictor.predict(cmyk_jpeg)
    assert_prediction(result)
    assert result["predictions"] == predictor.predict(encode(as_rgb, "PNG"))["predictions"]


def test_an_exif_rotated_jpeg_is_turned_upright(predictor, cell):
    upright = cell.crop((0, 60, 450, 360))  # 450 x 300, landscape
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # portrait on disk ...
    exif = Image.Exif()
    exif[0x0112] = 6  # ... and "rotate 90 degrees clockwise to display"
    data = encode(stored, "JPEG", quality=95, exif=exif.tobytes())
    decoded = open_image(data)
    assert decoded.size == upright.size
    assert np.abs(np.asarray(decoded, np.float32) - np.asarray(upright, np.float32)).mean() < 4
    assert_prediction(predictor.predict(data))


def test_an_animated_gif_is_read_from_its_first_frame(predictor, cell):
    first = cell.convert("P", palette=Image.Palette.ADAPTIVE, colors=128)
    second = Image.new("P", cell.size, 0)
    data = encode(first, "GIF", save_all=True, append_images=[second], duration=100, loop=0)
    with Image.open(io.BytesIO(data)) as gif:
        assert gif.n_frames == 2
        frame0 = gif.convert("RGB")
    result = predictor.predict(data)
    assert_prediction(result)
    assert result["predictions"] == predictor.predict(encode(frame0, "PNG"))["predictions"]
    assert not result["ood"]["warning"]  # the cell, not the blank second frame


def test_a_3000_pixel_tiff_is_predicted_in_bounded_time(predictor, cell, tmp_path):
    big = tmp_path / "big.tif"
    cell.resize((3000, 3000), Image.BILINEAR).save(big, compression="tiff_deflate")
    t = time.perf_counter()
    result = predictor.predict(big)
    assert time.perf_counter() - t < 20
    assert_prediction(result)
    assert not result["ood"]["warning"], result["ood"]  # still one centred cell on black


# --- out of distribution --------------------------------------------------------------------------------
def test_frames_unlike_the_training_cells_are_flagged_but_still_predicted(predictor, cell):
    assert predictor.image_reference is not None and set(predictor.feature_references) == set(TINY_MODELS)
    centred = predictor.predict(encode(cell, "PNG"))
    assert centred["ood"] == {"warning": False, "reasons": [], "far_models": []}

    rng = np.random.default_rng(0)
    a = np.asarray(cell)
    unusual = {
        "photo": Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)),
        "smear field": Image.fromarray(np.tile(a[110:340, 110:340], (3, 3, 1))),
        "blank": Image.new("RGB", (450, 450), (0, 0, 0)),
        "white": Image.new("RGB", (450, 450), (255, 255, 255)),
    }
    for name, img in unusual.items():
        result = predictor.predict(encode(img, "PNG"), name=name)
        assert_prediction(result)  # the prediction is still shown ...
        assert result["ood"]["warning"] and result["ood"]["reasons"], name  # ... with the reason it is unreliable
    photo = predictor.predict(encode(unusual["photo"], "PNG"))
    assert any("black background" in r for r in photo["ood"]["reasons"])
    assert any("features are far" in r for r in photo["ood"]["reasons"])


def test_classify_with_gradcam_gives_each_models_heatmap_in_image_coordinates(predictor, cell):
    wide = cell.crop((0, 75, 450, 375))
    out = predictor.classify(encode(wide, "PNG"), name="wide.png", cam="gradcam")
    assert_prediction(out.result)
    assert set(out.heatmaps) == set(TINY_MODELS)
    for key, e in out.heatmaps.items():
        assert e.heatmap.shape == (300, 450) and 0 <= e.heatmap.min() and e.heatmap.max() <= 1
        assert e.p_all == pytest.approx(out.result["predictions"][key], abs=1e-6)
        assert e.target == ("ALL" if e.p_all >= 0.5 else "HEM")


def test_predict_command_prints_one_json_line_per_image_with_the_same_numbers(predictor, cell, tmp_path, tiny_study):
    good = _write(tmp_path / "cell.png", encode(cell, "PNG"))
    bad = _write(tmp_path / "bomb.png", png_bomb(8_000))  # 64e6 pixels: over the limit, under PIL's own
    r = cli("predict", "--study", tiny_study[1], "--artifacts", tiny_study[0], good, bad)
    assert r.returncode == 1, r.stderr  # 1: a line is an error (issue 13)
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(lines) == 2
    assert lines[0]["predictions"] == pytest.approx(predictor.predict(good)["predictions"], abs=1e-6)
    assert lines[0]["ood"]["warning"] is False
    huge = lines[1]["error"]
    assert huge.startswith("8000x8000 pixels is too large") and "refused before decoding" in huge
    assert "Traceback" not in r.stderr


def test_the_reference_reuses_the_studys_cached_features_and_matches_a_fresh_forward_pass(
    tiny_study, tmp_path, monkeypatch
):
    import shutil

    import keras

    from cnmc_core.models import load_classifier
    from cnmc_core.ood import build_reference
    from cnmc_core.store import read_npz

    store = StudyStore(*tiny_study)
    # A copy of the study without the feature cache: the reference has to run the models.
    shutil.copytree(store.dir, tmp_path / "tiny")
    fresh_store = StudyStore(tmp_path, "tiny")
    build_reference(fresh_store)
    # The study itself: every model loaded first, then no new Keras model may be built (no forward pass).
    models = {k: load_classifier(store.model_file(k, "model.keras")) for k in TINY_MODELS}

    def no_model(*args, **kwargs):
        raise AssertionError("the reference ran a model although the features were cached")

    monkeypatch.setattr(keras, "Model", no_model)
    build_reference(store, load=models.__getitem__)
    for key in TINY_MODELS:
        cached, fresh = read_npz(store.feature_reference(key)), read_npz(fresh_store.feature_reference(key))
        for name, rtol in (("mean", 1e-4), ("scale", 1e-3)):
            atol = 1e-6 * float(np.abs(fresh[name]).max())
            np.testing.assert_allclose(cached[name], fresh[name], rtol=rtol, atol=atol, err_msg=f"{key} {name}")
