"""The paper's original format: a Neural Network Console (NNC) dataset, in and out.

Wada et al. 2019 trained their network in Sony's Neural Network Console, whose datasets are a
CSV file (``index.csv``) with one row per example: image columns hold paths to image files
(relative to the CSV's folder), the label column holds the target. The header follows NNC's
``NAME[__INDEX][:LABEL]`` convention (nnabla ``CsvDataSource``): ``x__0:T1w a`` is element 0
of variable ``x``, labelled "T1w a"; ``y:age`` is the variable ``y``, labelled "age".

Reading the index (``read_nnc_index``: which column is the age, the id, each input) is
``data.nnc_index``'s; ``import_nnc`` reads the images it lists:

- **Images**: PNG or BMP (anything Pillow reads), greyscale 8- or 16-bit, square; scaled to
  [0, 1] by the format's full scale (255 or 65535: NNC's own "1/255" normalisation) and resized
  anti-aliased to ``image_size`` when needed. Colour images are converted only when they are
  grey stored as colour (the three channels differ by at most 2/255); a truly coloured image
  (an annotation overlay, a screenshot) is refused, naming the file, since its colours are not
  MR signal. Transparency is refused the same way.
- **Intensity** ``"image"`` (default) keeps that [0, 1] scale, which is what the original NNC
  network saw. ``"head"`` rescales each contrast's five slices together so that the 99.5th
  percentile of head pixels is 1, as ``data.prepare`` scales NIfTI volumes; use it when the model
  will later be served NIfTI scans (``kerasmyelin predict --t1 --t2``).

Writing (``export_nnc``): ``index.csv`` with variables named after the ten inputs
(``t1w_a,...,t2w_e,y:age_months``, each a valid NNC Input layer dataset name) and 8-bit PNGs
under ``images/``; values are clipped to [0, 1] first.
"""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path

import numpy as np

from kerasmyelin import __version__
from kerasmyelin.data.nnc_index import read_nnc_index
from kerasmyelin.errors import ConfigError, InputError
from kerasmyelin.levels import CONTRASTS, INPUT_NAMES, LEVEL_KEYS, input_name

INTENSITIES = ("image", "head")
_GREY_TOLERANCE = 2  # of 255: JPEG-style chroma noise on an image that is grey at heart


def load_grey_image(path: str | os.PathLike) -> tuple[np.ndarray, list[str]]:
    """One greyscale image in [0, 1], and notes on any conversion.

    Returns:
        ((rows, cols) float32 in [0, 1], notes).

    Raises:
        InputError: naming the file for a missing, unreadable, coloured, transparent or
            floating-point image.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise InputError("image not found", path)
    try:
        with Image.open(path) as img:
            img.load()
            mode, fmt = img.mode, img.format
            if mode == "P":
                img, mode = img.convert("RGBA"), "RGBA"
            elif mode == "CMYK":
                img, mode = img.convert("RGB"), "RGB"
            arr = np.asarray(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise InputError(f"not a readable image ({exc})", path) from None
    notes = []
    if mode in ("RGBA", "LA"):
        if (arr[..., -1] < 255).any():
            raise InputError(f"{int((arr[..., -1] < 255).sum())} pixels are transparent; save the slice as an "
                             "opaque greyscale image", path)
        arr = arr[..., :-1] if mode == "RGBA" else arr[..., 0]
        mode = mode[:-1] or "L"
    if mode == "RGB":
        spread = arr.max(axis=-1).astype(np.int16) - arr.min(axis=-1)
        if spread.max() > _GREY_TOLERANCE:
            raise InputError(f"a colour image ({int((spread > _GREY_TOLERANCE).sum())} pixels have unequal red, "
                             "green and blue); the ten slices must be greyscale MR images: save it as greyscale "
                             "(an overlay or annotation would be read as signal)", path)
        notes.append(f"{fmt} stored as RGB with grey content: channels averaged")
        return arr.astype(np.float32).mean(axis=-1) / 255.0, notes
    if mode == "1":
        return arr.astype(np.float32), notes
    if mode == "L":
        return arr.astype(np.float32) / 255.0, notes
    if mode.startswith("I"):  # "I;16", "I;16B", "I" (16-bit PNG, TIFF)
        if arr.min() < 0 or arr.max() > 65535:
            raise InputError(f"integer image with values {arr.min()} to {arr.max()}, outside 16 bits", path)
        if arr.max() < 4096:
            notes.append(f"16-bit image using only values up to {arr.max()} of 65535: it reads dark unless "
                         "imported with intensity 'head'")
        return arr.astype(np.float32) / 65535.0, notes
    raise InputError(f"image mode {mode!r} is not supported (8- or 16-bit greyscale expected)", path)


def _head_scale(stack: np.ndarray) -> np.ndarray:
    """Five (size, size) slices of one contrast scaled as ``data.prepare`` scales a volume."""
    from kerasmyelin.data.prepare import PrepConfig, head_mask

    config = PrepConfig()
    volume = np.moveaxis(stack, 0, -1)  # (rows, cols, 5): slices along the last axis
    mask = head_mask(volume, config.head_threshold)
    values = volume[mask] if mask.any() else volume.ravel()
    upper = float(np.percentile(values, config.upper_percentile))
    return np.clip(stack / max(upper, 1e-6), 0.0, 1.5).astype(np.float32)


def import_nnc(index: str | os.PathLike, out: str | os.PathLike, *, image_size: int = 128,
               intensity: str = "image", overwrite: bool = False, progress: bool = True) -> Path:
    """Read an NNC dataset (``index.csv`` and its images) into a ten-slice cache at ``out``.

    Args:
        index: the dataset's CSV file.
        out: output folder (tenslice.npz + manifest.json), written atomically.
        image_size: side of the cache's square images in pixels (paper: 128).
        intensity: "image" (format full scale -> 1) or "head" (see module docstring).
        overwrite: replace an earlier kerasmyelin output folder.
        progress: show a progress bar.

    Returns:
        The absolute output folder.
    """
    from tqdm.auto import tqdm

    from kerasmyelin.data.cache import write_cache
    from kerasmyelin.data.prepare import resize
    from kerasmyelin.io.atomic import sha256_file
    from kerasmyelin.io.output_dir import OutputFolder, check_output

    if intensity not in INTENSITIES:
        raise ConfigError(f"intensity must be one of {INTENSITIES}, got {intensity!r}")
    if not 16 <= image_size <= 1024:
        raise ConfigError(f"image size must be 16 to 1024 pixels, got {image_size}")
    inputs = [("--nnc", index), ("--nnc's folder", Path(index).expanduser().absolute().parent)]
    check_output(out, "cache", overwrite=overwrite, inputs=inputs)  # before reading hundreds of images
    table = read_nnc_index(index)
    images = {n: [] for n in INPUT_NAMES}
    subjects = []
    for row in tqdm(table.rows, desc="import NNC", unit="infant", disable=not progress):
        files, notes, loaded = {}, [], {}
        for name in INPUT_NAMES:
            path = row["images"][name]
            img, img_notes = load_grey_image(path)
            if img.shape[0] != img.shape[1]:
                raise InputError(f"image is {img.shape[1]}x{img.shape[0]} pixels, not square (line {row['line']}, "
                                 f"{name}); crop it to the head as a square first", path)
            if img.shape[0] != image_size:
                img_notes.append(f"resized from {img.shape[0]} to {image_size} pixels")
                img = resize(img, image_size)
            loaded[name] = img
            notes += [f"{name}: {n}" for n in img_notes]
            # Hashes, not paths: exported file and folder names can carry a patient's name.
            files[name] = {"sha256": sha256_file(path)}
        if intensity == "head":
            for contrast in CONTRASTS:
                names = [input_name(contrast, k) for k in LEVEL_KEYS]
                for name, img in zip(names, _head_scale(np.stack([loaded[n] for n in names]))):
                    loaded[name] = img
        for name in INPUT_NAMES:
            images[name].append(loaded[name])
        subjects.append({"participant_id": row["participant_id"], "age_months": row["age_months"],
                         "line": row["line"], "files": files, **({"notes": notes} if notes else {})})
    manifest = {"created_by": f"kerasmyelin {__version__} prepare --nnc",
                "nnc": {"index_sha256": sha256_file(table.path),
                        "columns": table.columns, "mapped_by": table.mapped_by, "ignored_columns": table.ignored,
                        "intensity": intensity, "image_size": image_size},
                "subjects": subjects}
    with OutputFolder(out, "cache", overwrite=overwrite, inputs=inputs, what="kerasmyelin prepare --nnc") as folder:
        tmp = folder.work
        write_cache(tmp, {n: np.stack(v) for n, v in images.items()},
                    [r["participant_id"] for r in table.rows], [r["age_months"] for r in table.rows], manifest)
    return Path(out).expanduser().absolute()


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def export_nnc(cache: str | os.PathLike, out: str | os.PathLike, *, overwrite: bool = False,
               progress: bool = True) -> Path:
    """Write a ten-slice cache as an NNC dataset: ``out/index.csv`` and 8-bit PNGs in ``out/images``.

    Each infant's images go to ``images/NNNN_<participant_id>/<input name>.png`` (values clipped
    to [0, 1], times 255). The header names each image variable after its input
    (``t1w_a``, ...) and the label ``y:age_months`` (corrected age, months). A
    ``manifest.json`` records the source cache.

    Returns:
        The absolute output folder.
    """
    import json

    from PIL import Image
    from tqdm.auto import tqdm

    from kerasmyelin.data.cache import CACHE_FILE, read_cache
    from kerasmyelin.io.atomic import sha256_file
    from kerasmyelin.io.output_dir import OutputFolder

    folder = OutputFolder(out, "nnc", overwrite=overwrite, inputs=[("--data", cache)], what="kerasmyelin export-nnc")
    data = read_cache(cache)
    with folder:
        tmp = folder.work
        rows = []
        for i in tqdm(range(len(data)), desc="export NNC", unit="infant", disable=not progress):
            pid = str(data.participant_id[i])
            folder = Path("images") / f"{i + 1:04d}_{_UNSAFE.sub('_', pid)[:64]}"
            (tmp / folder).mkdir(parents=True)
            cells = []
            for name in INPUT_NAMES:
                pixels = np.round(np.clip(data.images[name][i], 0.0, 1.0) * 255.0).astype(np.uint8)
                Image.fromarray(pixels).save(tmp / folder / f"{name}.png")  # (rows, cols) uint8: mode "L"
                cells.append((folder / f"{name}.png").as_posix())
            rows.append(cells + [f"{float(data.age_months[i]):.4f}"])
        with open(tmp / "index.csv", "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(list(INPUT_NAMES) + ["y:age_months"])
            writer.writerows(rows)
        manifest = {"created_by": f"kerasmyelin {__version__} export-nnc", "source": str(Path(cache).absolute()),
                    "source_sha256": sha256_file(Path(cache) / CACHE_FILE),
                    "participant_id": [str(p) for p in data.participant_id]}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return Path(out).expanduser().absolute()
