"""One infant's report page: both files written, one PDF page, only the chosen label shown."""

import re
import zlib

import numpy as np
import pytest

from kerasmyelin.errors import OutputError
from kerasmyelin.evaluation.subject_report import (
    DISCLAIMER,
    GRADE_COLOURS,
    GRADES,
    TITLE,
    render_subject_report,
)
from kerasmyelin.norms.model import AHEAD, NOT_GRADED, WITHIN
from kerasmyelin.levels import INPUT_NAMES, LEVELS

SIZE = 32


def inputs(seed: int = 0):
    rng = np.random.default_rng(seed)
    images = {n: rng.random((SIZE, SIZE), dtype=np.float32) for n in INPUT_NAMES}
    heat = {n: rng.random((SIZE, SIZE), dtype=np.float32) for n in INPUT_NAMES}
    grid = np.linspace(0.0, 24.0, 25)
    normative = {"age_months": grid, "expected": grid, "lo": grid - 2.5, "hi": grid + 2.5, "lo_marked": grid - 4.0}
    return images, heat, normative


def result(**changes) -> dict:
    base = {"subject": "sub-042", "estimate_months": 9.4, "interval_months": [7.9, 11.0], "interval_level": 0.9,
            "age_months": 12.5, "gap_months": -3.1, "corrected_gap_months": -2.6, "grade": "possible delay",
            "grade_rule": "possible delay below the 5th percentile of typical infants' corrected gaps",
            "levels": {lv.key: {"T1w": 40 + i, "T2w": 41 + i, "confidence": 0.9} for i, lv in enumerate(LEVELS)},
            "months_by_input": {n: 0.5 for n in INPUT_NAMES}, "heat_method": "integrated_gradients",
            "model": "run-ensemble (sha256 3f2a9c1b)", "kerasmyelin_version": "0.1.0"}
    return {**base, **changes}


def streams(data: bytes) -> list[bytes]:
    """Every Flate-compressed stream of a PDF, decompressed (images and fonts too)."""
    out = []
    for stream in re.findall(rb"stream\r?\n(.*?)endstream", data, re.S):
        try:
            out.append(zlib.decompressobj().decompress(stream))
        except zlib.error:
            continue
    return out


def pdf_text(data: bytes) -> list[str]:
    """The strings drawn in a matplotlib PDF (Type 3 fonts: character codes are ASCII), one per
    line of text, kerned pieces joined; glyphs from the fallback font (e.g. "−") read as NUL."""
    blocks = []
    for content in streams(data):
        for block in re.findall(rb"BT(.*?)ET", content, re.S):
            pieces = re.findall(rb"\(((?:\\.|[^\\)])*)\)", block)
            blocks.append(b"".join(re.sub(rb"\\(.)", rb"\1", p) for p in pieces).decode("latin-1"))
    return blocks


def pages(data: bytes) -> int:
    return len(re.findall(rb"/Type\s*/Page\b(?!s)", data))


@pytest.mark.parametrize("age", [12.5, None])
def test_writes_one_page_png_and_pdf_with_and_without_age(tmp_path, age):
    images, heat, normative = inputs()
    r = result() if age is not None else result(age_months=None, gap_months=None, corrected_gap_months=None,
                                                grade=None)
    png, pdf = render_subject_report(r, images, heat, normative, tmp_path / "out" / "report.png",
                                     tmp_path / "out" / "report.pdf")
    assert png == tmp_path / "out" / "report.png" and pdf == tmp_path / "out" / "report.pdf"
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF")
    assert pages(data) == 1
    text = "\n".join(pdf_text(data))
    for shown in (TITLE.replace("—", ""), "sub-042", DISCLAIMER, "run-ensemble (sha256 3f2a9c1b)",
                  LEVELS[1].name, "slice 42"):
        assert shown in text.replace("\x00", ""), shown
    assert ("POSSIBLE DELAY" in text) == (age is not None)
    assert ("Not graded" in text) == (age is None)
    assert not list(tmp_path.glob("out/.*"))  # no temporary files left behind


def test_a_model_without_norms_gets_no_band_no_interval_and_no_grade(tmp_path):
    images, heat, _ = inputs()
    r = result(interval_months=None, interval_level=None, corrected_gap_months=None, grade=None, grade_rule=None)
    _, pdf = render_subject_report(r, images, heat, None, tmp_path / "r.png", tmp_path / "r.pdf")
    text = "\n".join(pdf_text(pdf.read_bytes()))
    assert "no norms for this model" in text and "typical infants" not in text
    assert "Not graded: the model has no norms" in text
    with pytest.raises(ValueError, match="needs the norms"):
        render_subject_report(result(interval_months=None), images, heat, None, tmp_path / "x.png", tmp_path / "x.pdf")


def test_draws_without_heat_levels_or_contributions(tmp_path):
    images, _, normative = inputs()
    r = result(grade="within norms")
    del r["levels"], r["months_by_input"], r["grade_rule"]
    _, pdf = render_subject_report(r, images, None, normative, tmp_path / "r.png", tmp_path / "r.pdf")
    assert pages(pdf.read_bytes()) == 1


def test_shows_no_identifier_but_the_chosen_label(tmp_path):
    images, heat, normative = inputs()
    r = result(source="/data/DOE^JANE/T1w.nii.gz", participant_name="DOE^JANE")  # ignored keys
    png, pdf = render_subject_report(r, images, heat, normative, tmp_path / "r.png", tmp_path / "r.pdf")
    data = pdf.read_bytes()
    text = "\n".join(pdf_text(data))
    assert "sub-042" in text
    for leaked in ("DOE", "JANE", "nii"):
        assert leaked not in text
    everything = data + b"".join(streams(data))
    assert b"DOE" not in everything and b"DOE" not in png.read_bytes()


@pytest.mark.parametrize("changes, message", [
    ({"grade": "delayed"}, "unknown grade"),
    ({"age_months": None}, "without a corrected age"),
    ({"estimate_months": 12.0}, "outside its interval"),
    ({"subject": ""}, "subject"),
])
def test_inconsistent_results_are_refused(tmp_path, changes, message):
    images, heat, normative = inputs()
    with pytest.raises(ValueError, match=message):
        render_subject_report(result(**changes), images, heat, normative, tmp_path / "r.png", tmp_path / "r.pdf")
    assert not list(tmp_path.iterdir())


def test_grades_are_the_normative_models_five():
    assert GRADES == ("within norms", "ahead of norms", "possible delay", "marked delay",
                      "not graded: check the input")
    assert set(GRADE_COLOURS) == set(GRADES) and len(set(GRADE_COLOURS.values())) == len(GRADES)


def not_graded(**changes) -> dict:
    """Issue 19's infant: 1 month old, estimated at 30.0 months."""
    return result(**{"estimate_months": 30.0, "interval_months": [26.1, 33.9], "age_months": 1.0, "gap_months": 29.0,
                     "corrected_gap_months": 28.1, "grade": NOT_GRADED, "grade_reason": "estimate_outside_trained_ages",
                     "grade_reason_text": "the estimate (30.0 months) lies outside the ages this run was trained on "
                                          "(-1.7 to 24.0 months)", **changes})


def pixels(png, colour: str) -> int:
    """How many pixels of the PNG are exactly ``colour`` ("#rrggbb")."""
    from PIL import Image

    rgb = np.asarray(Image.open(png).convert("RGB")).reshape(-1, 3)
    return int(np.all(rgb == [int(colour[i:i + 2], 16) for i in (1, 3, 5)], axis=1).sum())


@pytest.mark.parametrize("grade", [WITHIN, AHEAD, NOT_GRADED])
def test_a_withheld_grade_is_a_grey_box_with_its_reason_never_green(tmp_path, grade):
    images, _, normative = inputs()  # no heat: the slices are grey, so any colour is the page's own
    r = not_graded() if grade == NOT_GRADED else result(grade=grade, corrected_gap_months=4.0)
    png, pdf = render_subject_report(r, images, None, normative, tmp_path / "r.png", tmp_path / "r.pdf")
    text = "\n".join(pdf_text(pdf.read_bytes()))
    green, own = pixels(png, GRADE_COLOURS[WITHIN]), pixels(png, GRADE_COLOURS[grade])
    assert own > 500  # the box (and the infant's point) in the grade's colour
    if grade == NOT_GRADED:
        assert green == 0
        assert "NOT GRADED: check the input" in text and "WITHIN NORMS" not in text
        assert "Why: the estimate (30.0 months) lies outside" in text
    else:
        assert grade.upper() in text and "NOT GRADED" not in text and "Why:" not in text
        assert (green > 500) == (grade == WITHIN)


def test_an_input_checks_withheld_grade_shows_without_age_or_norms(tmp_path):
    """Issue 19: an adult-sized brain is "not graded" with no corrected age and a model without norms:
    the grey box and its reason, not "Not graded: no corrected age given"."""
    from kerasmyelin.norms.model import BRAIN_SIZE

    images, heat, _ = inputs()
    why = "the brain (about 1,894 mL) is far larger than an infant's of 0-24 months"
    r = result(interval_months=None, interval_level=None, age_months=None, gap_months=None, corrected_gap_months=None,
               grade=NOT_GRADED, grade_reason=BRAIN_SIZE, grade_reason_text=why, grade_rule=None)
    png, pdf = render_subject_report(r, images, heat, None, tmp_path / "r.png", tmp_path / "r.pdf")
    text = " ".join(pdf_text(pdf.read_bytes()))
    assert "NOT GRADED: check the input" in text and "Why: the brain" in text
    assert "no corrected age given" not in text and pixels(png, GRADE_COLOURS[NOT_GRADED]) > 500
    with pytest.raises(ValueError, match="without a corrected age"):  # other grades still need the age
        render_subject_report(dict(r, grade=WITHIN), images, heat, None, tmp_path / "x.png", tmp_path / "x.pdf")


def test_a_withheld_grade_needs_its_reason(tmp_path):
    images, heat, normative = inputs()
    with pytest.raises(ValueError, match="without its reason"):
        render_subject_report(not_graded(grade_reason=None, grade_reason_text=None), images, heat, normative,
                              tmp_path / "r.png", tmp_path / "r.pdf")


def test_an_unwritable_path_is_an_output_error(tmp_path):
    images, heat, normative = inputs()
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="a-file"):
        render_subject_report(result(), images, heat, normative, tmp_path / "ok.png", blocker / "r.pdf")
