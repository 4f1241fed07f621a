"""Neural Network Console datasets: index.csv + PNG/BMP slices <-> the ten-slice cache."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from PIL import Image

from kerasmyelin.cli.main import main
from kerasmyelin.data.cache import read_cache
from kerasmyelin.data.nnc import export_nnc, import_nnc, load_grey_image
from kerasmyelin.data.nnc_index import input_for, read_nnc_index
from kerasmyelin.errors import InputError
from kerasmyelin.levels import INPUT_NAMES

# x__0:T1w a, ..., x__9:T2w e, y:age
PAPER_HEADER = [f"x__{i}:{n[:2].upper()}w {n[-1]}" for i, n in enumerate(INPUT_NAMES)] + ["y:age"]


def slice_pixels(row: int, k: int, size: int = 128) -> np.ndarray:
    """A uint8 image unique to (row, input k): a bright square whose level encodes both."""
    img = np.zeros((size, size), np.uint8)
    img[size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 20 + 20 * k + row
    return img


def write_dataset(root, header=PAPER_HEADER, ages=(3.5, 12.0), ids=None, size=128, ext="png",
                  columns_order=None):
    """An NNC dataset in ``root``: images/<row>/<input>.<ext> and index.csv with ``header``.

    Image cells follow INPUT_NAMES order unless ``columns_order`` (input names in header order).
    """
    order = columns_order or list(INPUT_NAMES)
    lines = [",".join(header)]
    for r, age in enumerate(ages):
        folder = root / "images" / f"{r:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        cells = []
        for name in order:
            k = INPUT_NAMES.index(name)
            path = folder / f"{name}.{ext}"
            Image.fromarray(slice_pixels(r, k, size)).save(path)
            cells.append(f"./images/{r:03d}/{name}.{ext}")
        extra = [] if ids is None else [ids[r]]
        lines.append(",".join(cells + [str(age)] + extra))
    index = root / "index.csv"
    index.write_text("\n".join(lines) + "\n")
    return index


def expected_image(row, k):
    return slice_pixels(row, k).astype(np.float32) / 255.0


@pytest.mark.parametrize("text, name", [
    ("T1w_a", "t1w_a"), ("t1_a", "t1w_a"), ("T1a", "t1w_a"), ("T1 a", "t1w_a"), ("T1WI-b", "t1w_b"),
    ("x_t2w_e", "t2w_e"), ("T2 level c", "t2w_c"), ("t2.d", "t2w_d"),
    ("x", None), ("T3_a", None), ("t1_f", None), ("age", None),
])
def test_header_names(text, name):
    assert input_for(text) == name


def test_paper_style_header_imports_to_the_cache(tmp_path):
    index = write_dataset(tmp_path / "nnc")
    out = import_nnc(index, tmp_path / "cache", progress=False)
    data = read_cache(out)
    assert list(data.participant_id) == ["row-001", "row-002"]
    np.testing.assert_allclose(data.age_months, [3.5, 12.0])
    for k, name in enumerate(INPUT_NAMES):
        assert data.images[name].shape == (2, 128, 128)
        for r in range(2):
            np.testing.assert_allclose(data.images[name][r], expected_image(r, k), atol=1e-3)  # float16 cache
    nnc = data.manifest["nnc"]
    assert nnc["mapped_by"] == "name" and nnc["columns"]["t1w_a"] == "x__0:T1w a" and nnc["intensity"] == "image"
    # Provenance by hash, not path: file and folder names can carry a patient's name.
    from kerasmyelin.io.atomic import sha256_file

    png = index.parent / "images" / "001" / "t2w_e.png"
    assert data.manifest["subjects"][1]["files"]["t2w_e"] == {"sha256": sha256_file(png)}
    assert str(index.parent) not in json.dumps(data.manifest)


def test_columns_found_by_label_in_any_order_with_an_id_column(tmp_path):
    shuffled = list(reversed(INPUT_NAMES))
    header = [f"img{i}:{n}" for i, n in enumerate(shuffled)] + ["age_months", "participant_id"]
    index = write_dataset(tmp_path / "nnc", header, ids=["sub-07", "sub-09"], columns_order=shuffled)
    data = read_cache(import_nnc(index, tmp_path / "cache", progress=False))
    assert list(data.participant_id) == ["sub-07", "sub-09"]
    np.testing.assert_allclose(data.images["t1w_c"][1], expected_image(1, INPUT_NAMES.index("t1w_c")), atol=1e-3)


def test_unnamed_columns_are_taken_in_the_papers_order(tmp_path, caplog):
    # x__9 first in the file: the __INDEX, not the file order, decides.
    order = [INPUT_NAMES[9]] + list(INPUT_NAMES[:9])
    header = ["x__9"] + [f"x__{i}" for i in range(9)] + ["y"]
    index = write_dataset(tmp_path / "nnc", header, columns_order=order)
    with caplog.at_level(logging.WARNING):
        data = read_cache(import_nnc(index, tmp_path / "cache", progress=False))
    assert data.manifest["nnc"]["mapped_by"] == "order" and "paper's order" in caplog.text
    np.testing.assert_allclose(data.images["t2w_e"][0], expected_image(0, 9), atol=1e-3)
    np.testing.assert_allclose(data.images["t1w_a"][0], expected_image(0, 0), atol=1e-3)


def test_bmp_and_other_sizes_are_resized(tmp_path):
    index = write_dataset(tmp_path / "nnc", size=256, ext="bmp")
    data = read_cache(import_nnc(index, tmp_path / "cache", progress=False))
    img = data.images["t1w_a"][0]
    assert img.shape == (128, 128)
    assert img[64, 64] == pytest.approx(20 / 255, abs=1e-3) and img[5, 5] == 0.0
    assert "resized from 256 to 128 pixels" in " ".join(data.manifest["subjects"][0]["notes"])


def test_head_intensity_scales_each_contrast_like_nifti_preparation(tmp_path):
    index = write_dataset(tmp_path / "nnc")
    data = read_cache(import_nnc(index, tmp_path / "cache", intensity="head", progress=False))
    # The head (the bright squares) of each contrast: its 99.5th percentile becomes 1.
    t1 = np.stack([data.images[n][0] for n in INPUT_NAMES[:5]])
    assert np.percentile(t1[t1 > 0], 99.5) == pytest.approx(1.0, abs=2e-3)
    assert data.manifest["nnc"]["intensity"] == "head"


def test_grey_rgb_is_accepted_and_colour_refused(tmp_path):
    grey = np.tile(slice_pixels(0, 3)[..., None], (1, 1, 3))
    Image.fromarray(grey).save(tmp_path / "grey.png")
    img, notes = load_grey_image(tmp_path / "grey.png")
    np.testing.assert_allclose(img, slice_pixels(0, 3) / 255.0, atol=1e-6)
    assert "RGB with grey content" in notes[0]
    colour = grey.copy()
    colour[10:20, 10:20] = (255, 0, 0)  # a red annotation
    Image.fromarray(colour).save(tmp_path / "colour.png")
    with pytest.raises(InputError, match="a colour image .*100 pixels") as exc:
        load_grey_image(tmp_path / "colour.png")
    assert str(tmp_path / "colour.png") in str(exc.value)
    rgba = np.dstack([grey, np.full(grey.shape[:2], 128, np.uint8)])
    Image.fromarray(rgba).save(tmp_path / "transparent.png")
    with pytest.raises(InputError, match="transparent"):
        load_grey_image(tmp_path / "transparent.png")


def test_sixteen_bit_png(tmp_path):
    pixels = (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)
    Image.fromarray(pixels).save(tmp_path / "deep.png")
    img, _ = load_grey_image(tmp_path / "deep.png")
    np.testing.assert_allclose(img, pixels / 65535.0, rtol=1e-6)


def _expect(index, phrase):
    with pytest.raises(InputError, match=phrase) as exc:
        read_nnc_index(index)
    assert str(index) in str(exc.value)


def test_refusals_name_the_file_and_problem(tmp_path):
    index = write_dataset(tmp_path / "nnc")
    text = index.read_text()
    lines = text.splitlines()

    without_t2w_e = [lines[0].replace(",x__9:T2w e", "")] + [",".join(r.split(",")[:9] + r.split(",")[10:])
                                                             for r in lines[1:]]
    index.write_text("\n".join(without_t2w_e) + "\n")
    _expect(index, "no image column for input.*t2w_e")

    index.write_text(text.replace("y:age", "x__10:notes"))
    _expect(index, "no age column")

    index.write_text(text.replace(",12.0", ",twelve"))
    _expect(index, r"line 3: age 'twelve' is not a number of months")

    index.write_text(text.replace(",12.0", ",52"))  # weeks by mistake? no: 52 months is allowed
    read_nnc_index(index)
    index.write_text(text.replace(",12.0", ",104"))
    _expect(index, "outside -3 to 60 months")

    index.write_text(text + lines[1] + "\n")
    _expect(index, "line 4 repeats the images of line 2")

    index.write_text(text.replace("images/001/t1w_b.png", "images/001/t1w_a.png"))
    _expect(index, "line 3: the same image file is given for t1w_a, t1w_b")

    index.write_text(lines[0] + "\n")
    _expect(index, "no examples")


def test_missing_and_corrupt_images_are_named(tmp_path):
    index = write_dataset(tmp_path / "nnc")
    missing = tmp_path / "nnc" / "images" / "001" / "t2w_c.png"
    missing.unlink()
    with pytest.raises(InputError, match="image not found") as exc:
        import_nnc(index, tmp_path / "cache", progress=False)
    assert str(missing) in str(exc.value) and not (tmp_path / "cache").exists()
    missing.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(InputError, match="not a readable image") as exc:
        import_nnc(index, tmp_path / "cache", progress=False)
    assert str(missing) in str(exc.value)


def test_duplicate_participants_are_refused(tmp_path):
    header = [n for n in INPUT_NAMES] + ["y", "subject"]
    index = write_dataset(tmp_path / "nnc", header, ids=["sub-01", "sub-01"])
    _expect(index, "participant 'sub-01' appears twice")


def test_corrected_age_from_chronological_and_gestational(tmp_path):
    index = write_dataset(tmp_path / "nnc", list(INPUT_NAMES) + ["chronological_age_months"], ages=(3.0, 6.0))
    lines = index.read_text().splitlines()
    lines[0] += ",gestational_age_weeks"
    lines[1] += ",32"
    lines[2] += ",40"
    index.write_text("\n".join(lines) + "\n")
    table = read_nnc_index(index)
    assert [r["age_months"] for r in table.rows] == pytest.approx([3.0 - 8 / (365.25 / 12 / 7), 6.0])


def test_export_then_import_round_trip(tmp_path):
    from tests.conftest import learnable_tenslice

    cache = learnable_tenslice(tmp_path / "cache", n=3, size=32)
    original = read_cache(cache)
    exported = export_nnc(cache, tmp_path / "nnc", progress=False)
    header = (exported / "index.csv").read_text().splitlines()[0]
    assert header == ",".join(INPUT_NAMES) + ",y:age_months"
    back = read_cache(import_nnc(exported / "index.csv", tmp_path / "again", image_size=32, progress=False))
    np.testing.assert_allclose(back.age_months, original.age_months, atol=1e-4)
    for name in INPUT_NAMES:
        np.testing.assert_allclose(back.images[name], np.clip(original.images[name], 0, 1), atol=1 / 255 + 1e-3)


def test_command_line(tmp_path, capsys):
    index = write_dataset(tmp_path / "nnc")
    out = tmp_path / "cache"
    assert main(["prepare", "--nnc", str(index), "--out", str(out), "--quiet"]) == 0
    assert len(read_cache(out)) == 2
    assert main(["prepare", "--nnc", str(index), "--levels", "x.tsv", "--out", str(tmp_path / "c2")]) == 2
    assert "--levels belongs to --bids" in capsys.readouterr().err
    assert main(["export-nnc", "--data", str(out), "--out", str(tmp_path / "nnc2"), "--quiet"]) == 0
    assert (tmp_path / "nnc2" / "index.csv").is_file()
    with pytest.raises(SystemExit):
        main(["prepare", "--out", str(tmp_path / "c3")])  # neither --bids nor --nnc
