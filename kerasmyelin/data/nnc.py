"""The paper's original format: a Neural Network Console (NNC) dataset, in and out.

Wada et al. 2019 trained their network in Sony's Neural Network Console, whose datasets are a
CSV file (``index.csv``) with one row per example: image columns hold paths to image files
(relative to the CSV's folder), the label column holds the target. The header follows NNC's
``NAME[__INDEX][:LABEL]`` convention (nnabla ``CsvDataSource``): ``x__0:T1w a`` is element 0
of variable ``x``, labelled "T1w a"; ``y:age`` is the variable ``y``, labelled "age".

Reading (``read_nnc_index`` / ``import_nnc``):

- **Age column**: the column whose label or variable is ``age_months``, ``age``,
  ``corrected_age`` or ``corrected_age_months``, else the one whose variable is ``y`` (NNC's
  default output). Corrected age in months. Without one, ``chronological_age_months`` and
  ``gestational_age_weeks`` columns give it (``io.ages``).
- **Participant id**: a column named ``participant_id``, ``subject``, ``subject_id`` or ``id``
  (label or variable); without one, ids are ``row-001``, ``row-002``, ... in file order.
- **Image columns**: each other column is matched to an input name (``levels.INPUT_NAMES``) by
  its label, else its variable: case, spaces, dots and hyphens do not matter, and ``T1w_a``,
  ``t1_a``, ``T1a``, ``T1 a``, ``T1WI-a``, ``x_t1w_a`` all mean ``t1w_a``. When no column
  matches by name and there are exactly ten other columns, they are taken in the paper's order
  (T1w a-e, then T2w a-e; Figure 2): by ``__INDEX`` when they are the elements of one variable
  (``x__0`` ... ``x__9``), else left to right. Columns that match nothing are ignored (and
  listed in the manifest) when the ten inputs were all found by name.
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
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kerasmyelin import __version__
from kerasmyelin.errors import ConfigError, InputError
from kerasmyelin.io.ages import CHRONOLOGICAL_COLUMN, GESTATIONAL_COLUMN
from kerasmyelin.levels import CONTRASTS, INPUT_NAMES, LEVEL_KEYS, input_name
from kerasmyelin.io.ages import row_age_months

log = logging.getLogger(__name__)

AGE_NAMES = ("age_months", "age", "corrected_age", "corrected_age_months")
ID_NAMES = ("participant_id", "subject", "subject_id", "id")
INTENSITIES = ("image", "head")
# "t1w_a", "t1_a", "t1a", "t1wi_a", "x_t1w_a", "t1_level_a" ... -> ("1", "a")
_INPUT_PATTERN = re.compile(r"^(?:x_?)?t([12])(?:wi|w)?_?(?:level_?)?([a-e])$")
_GREY_TOLERANCE = 2  # of 255: JPEG-style chroma noise on an image that is grey at heart


@dataclass(frozen=True)
class Column:
    """One header cell, parsed as NNC does: ``NAME[__INDEX][:LABEL]``."""

    position: int
    text: str
    variable: str
    index: int | None
    label: str | None

    @classmethod
    def parse(cls, position: int, text: str) -> Column:
        name, _, label = text.partition(":")
        variable, sep, index = name.partition("__")
        return cls(position, text, variable.strip(), int(index) if sep and index.strip().isdigit() else None,
                   label.strip() or None)

    def names(self) -> tuple[str, ...]:
        """Label first, then variable: the names a column may be recognised by."""
        return tuple(n for n in (self.label, self.variable) if n)


def _norm(name: str) -> str:
    return re.sub(r"[\s.\-]+", "_", name.strip().lower())


def input_for(name: str) -> str | None:
    """The input name a header name means ("T1w a" -> "t1w_a"), or None."""
    m = _INPUT_PATTERN.match(_norm(name))
    return input_name(CONTRASTS[int(m.group(1)) - 1], m.group(2)) if m else None


@dataclass
class NncIndex:
    """What ``index.csv`` holds, checked.

    Attributes:
        path: the CSV file.
        columns: input name -> the header cell it is read from.
        mapped_by: "name" or "order" (see module docstring).
        ignored: header cells not used.
        rows: per example: "line" (CSV line number), "participant_id", "age_months" (corrected
            age, months) and "images" (input name -> absolute image path).
    """

    path: Path
    columns: dict[str, str]
    mapped_by: str
    ignored: list[str]
    rows: list[dict] = field(default_factory=list)


def _find(columns: list[Column], names: tuple[str, ...], what: str, path: Path,
          variables: tuple[str, ...] = ()) -> Column | None:
    hits = [c for c in columns if any(_norm(n) in names for n in c.names())]
    if not hits:
        hits = [c for c in columns if c.variable in variables]
    if len(hits) > 1:
        raise InputError(f"more than one {what} column: {', '.join(c.text for c in hits)}", path)
    return hits[0] if hits else None


def _map_images(candidates: list[Column], path: Path) -> tuple[dict[str, Column], str, list[str]]:
    by_name: dict[str, Column] = {}
    unmatched = []
    for col in candidates:
        name = next((m for m in map(input_for, col.names()) if m), None)
        if name is None:
            unmatched.append(col)
        elif name in by_name:
            raise InputError(f"columns {by_name[name].text!r} and {col.text!r} both name input {name}", path)
        else:
            by_name[name] = col
    if by_name:
        missing = [n for n in INPUT_NAMES if n not in by_name]
        if missing:
            raise InputError(f"no image column for input(s) {', '.join(missing)} (columns found by name: "
                             f"{', '.join(f'{c.text}={n}' for n, c in by_name.items())}; unrecognised: "
                             f"{', '.join(c.text for c in unmatched) or 'none'})", path)
        return by_name, "name", [c.text for c in unmatched]
    if len(candidates) != len(INPUT_NAMES):
        raise InputError(f"cannot tell the ten image columns: none is named after an input (T1w_a ... T2w_e, "
                         f"t1_a, T1a, ...) and there are {len(candidates)} columns besides age and id, not ten "
                         f"({', '.join(c.text for c in candidates) or 'none'})", path)
    if len({c.variable for c in candidates}) == 1 and all(c.index is not None for c in candidates):
        candidates = sorted(candidates, key=lambda c: c.index)
    log.warning("%s: image columns taken in the paper's order (T1w a-e, then T2w a-e): %s", path,
                ", ".join(f"{c.text}={n}" for c, n in zip(candidates, INPUT_NAMES)))
    return dict(zip(INPUT_NAMES, candidates)), "order", []


def _image_path(text: str, base: Path) -> Path:
    if os.sep == "/" and "\\" in text:  # written on Windows: ".\images\0001.png"
        text = text.replace("\\", "/")
    p = Path(text)
    return p if p.is_absolute() else base / p


def read_nnc_index(path: str | os.PathLike) -> NncIndex:
    """Parse and check an NNC ``index.csv`` (header, ages, ids, duplicates); images are not read.

    Raises:
        InputError: naming the file (and line) for a missing column, a bad or missing age, an empty
            image cell, duplicate participants or rows, or an image used twice in one row.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("file not found", path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            lines = list(csv.reader(fh))
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8 text (byte {exc.start}: {exc.reason}); save it as UTF-8", path) from None
    except csv.Error as exc:
        raise InputError(f"not a readable CSV ({exc})", path) from None
    if not lines or not any(h.strip() for h in lines[0]):
        raise InputError("file is empty", path)
    columns = [Column.parse(i, h) for i, h in enumerate(lines[0])]
    age = _find(columns, AGE_NAMES, "age", path, variables=("y",))
    ident = _find([c for c in columns if c is not age], ID_NAMES, "participant id", path)
    helpers = {}
    for name in (CHRONOLOGICAL_COLUMN, GESTATIONAL_COLUMN):
        helpers[name] = _find([c for c in columns if c not in (age, ident)], (name,), name, path)
    if age is None and None in helpers.values():
        raise InputError(f"no age column: name it y (NNC's output variable) or age_months, holding the corrected "
                         f"age in months, or give {CHRONOLOGICAL_COLUMN} and {GESTATIONAL_COLUMN} "
                         f"(header: {', '.join(c.text for c in columns)})", path)
    used = {id(c) for c in (age, ident, *helpers.values()) if c is not None}
    images, mapped_by, ignored = _map_images([c for c in columns if id(c) not in used], path)

    table = NncIndex(path, {n: c.text for n, c in images.items()}, mapped_by, ignored)
    seen_ids: dict[str, int] = {}
    seen_rows: dict[tuple, int] = {}
    for lineno, fields in enumerate(lines[1:], start=2):
        if not any(f.strip() for f in fields):
            continue
        if len(fields) != len(columns):
            raise InputError(f"line {lineno} has {len(fields)} fields, the header has {len(columns)}", path)
        cell = {c.position: fields[c.position].strip() for c in columns}
        where = f"line {lineno}"
        age_row = {"age_months": cell[age.position] if age else "",
                   **{k: cell[c.position] for k, c in helpers.items() if c is not None}}
        try:
            months = row_age_months(age_row, where)
        except InputError as exc:
            raise InputError(exc.problem, path) from None
        if months is None:
            raise InputError(f"{where}: no age given (corrected age in months expected)", path)
        pid = cell[ident.position] if ident else f"row-{len(table.rows) + 1:03d}"
        if not pid:
            raise InputError(f"{where}: empty {ident.text} cell", path)
        if pid in seen_ids:
            raise InputError(f"{where}: participant {pid!r} appears twice (also line {seen_ids[pid]})", path)
        seen_ids[pid] = lineno
        files = {}
        for name, col in images.items():
            if not cell[col.position]:
                raise InputError(f"{where}: empty image cell in column {col.text!r} ({name})", path)
            files[name] = _image_path(cell[col.position], path.absolute().parent)
        key = tuple(os.path.normpath(files[n]) for n in INPUT_NAMES)
        if key in seen_rows:
            raise InputError(f"{where} repeats the images of line {seen_rows[key]}", path)
        seen_rows[key] = lineno
        if len(set(key)) < len(key):
            twice = sorted({n for n in INPUT_NAMES if key.count(os.path.normpath(files[n])) > 1})
            raise InputError(f"{where}: the same image file is given for {', '.join(twice)}", path)
        table.rows.append({"line": lineno, "participant_id": pid, "age_months": months, "images": files})
    if not table.rows:
        raise InputError("no examples (the header only)", path)
    return table


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
