"""NIfTI input and output with the checks and guarantees the rest of the project relies on.

Reading checks what later stages assume (a readable gzip, a 3-D volume, finite voxels, a sane
affine) and names the file in every error. Writing is deterministic (no time stamp in the gzip
header, so the same data gives the same bytes), atomic, and clears the header text fields that
can carry patient information.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import stat
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np

from kerasmyelin.errors import InputError
from kerasmyelin.io.atomic import write_bytes_atomic

try:  # Intel ISA-L gzip is ~6x faster than zlib for the same format; optional.
    from isal import igzip as _gzip
except ImportError:  # pragma: no cover - exercised only where isal is missing
    _gzip = gzip

# Compression level 1: noisy MR images barely compress further at higher levels.
GZIP_LEVEL = 1


def nifti_bytes(data: np.ndarray, affine: np.ndarray, zooms_unit: str = "mm") -> bytes:
    """Encode a volume as NIfTI-1 bytes with qform and sform both set to ``affine`` (scanner)."""
    img = nib.Nifti1Image(np.asarray(data), np.asarray(affine, dtype=np.float64))
    hdr = img.header
    hdr.set_qform(affine, code=1)
    hdr.set_sform(affine, code=1)
    hdr.set_xyzt_units(xyz=zooms_unit)
    for field in ("descrip", "aux_file", "db_name"):
        hdr[field] = b""
    img.header.extensions.clear()
    return img.to_bytes()


def write_nifti(path: str | os.PathLike, data: np.ndarray, affine: np.ndarray) -> tuple[Path, str]:
    """Write ``data`` to ``path`` (.nii or .nii.gz) deterministically and atomically.

    Returns:
        (path, sha256 hex digest of the bytes written).
    """
    path = Path(path)
    raw = nifti_bytes(data, affine)
    if path.name.endswith(".gz"):
        raw = _gzip.compress(raw, compresslevel=GZIP_LEVEL, mtime=0)
    return write_bytes_atomic(path, raw), hashlib.sha256(raw).hexdigest()


# qform and sform both set but placing the head this far apart (mm, anywhere in the volume's
# bounding box) means one of them is wrong, and which one the scanner meant cannot be known.
QFORM_SFORM_TOLERANCE_MM = 1.0


def _check_qform_sform(img, shape, path: Path) -> None:
    hdr = img.header
    try:
        qform, qcode = hdr.get_qform(coded=True)
        sform, scode = hdr.get_sform(coded=True)
    except ValueError as exc:  # e.g. quaternion parameters that make no rotation
        raise InputError(f"the header's qform or sform is unusable ({exc})", path) from None
    if not qcode or not scode or qform is None or sform is None:
        return
    corners = np.array([[i, j, k, 1.0] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1)
                        for k in (0, shape[2] - 1)])
    gap = float(np.max(np.linalg.norm((corners @ qform.T - corners @ sform.T)[:, :3], axis=1)))
    if not np.isfinite(gap) or gap > QFORM_SFORM_TOLERANCE_MM:
        raise InputError(f"qform and sform disagree by up to {gap:.1f} mm over the volume; "
                         "fix the header (e.g. copy the correct one over the other)", path)


def _stored_voxel_sizes(img, path: Path) -> np.ndarray:
    """The voxel sizes as the file stores them: nibabel's loader silently turns negative ones
    positive, which hides a broken header."""
    zooms = np.asarray(img.header.get_zooms()[:3], dtype=np.float64)
    if isinstance(img, nib.Nifti1Pair):  # NIfTI-1 and -2, single file or .hdr/.img pair
        header_file = img.file_map.get("header", img.file_map["image"]).filename or str(path)
        try:
            with nib.openers.ImageOpener(header_file) as f:
                raw = type(img.header).from_fileobj(f, check=False)
            zooms = np.asarray(raw["pixdim"][1:1 + len(zooms)], dtype=np.float64)
        except Exception:  # unreadable here means nibabel already read it; keep its values
            pass
    return zooms


# A header may claim any size; refuse before allocating (4096^3 float32 would be 256 GiB). No
# infant head scan is finer than ~0.5 mm over a field of view wider than ~256 mm, that is 512^3
# voxels (dHCP's 0.5 mm scans are 290 x 290 x 203, a clinical 2-D stack 512 x 512 x 30): the
# reader's output is then at most 512 MiB of float32, and the whole-brain preparation of such a
# pair peaks at ~1.6 GB (benchmarks/bench_nifti_memory.py; docs/reliability.md).
MAX_VOXELS = 512 ** 3
# Deflate cannot shrink data more than 1032:1, so a .gz file of n bytes holds at most 1032 n
# bytes: a header claiming more is refused before anything is inflated or allocated.
MAX_DEFLATE_RATIO = 1032
# Voxel sizes MR scanners use, in mm: 0.1 mm is finer than any in-vivo scan, 10 mm thicker than any
# clinical slice spacing (5-7 mm). Sizes outside come from a header in other units or a broken one.
VOXEL_MM_RANGE = (0.1, 10.0)
# An infant's head spans ~100-200 mm; a volume wider than this on any axis is not a head scan.
MAX_EXTENT_MM = 500.0
# The data are read (and converted) in pieces of this size, so that a scan costs its output array
# and not also a copy of its stored bytes.
READ_CHUNK_BYTES = 16 * 1024 * 1024

_GZIP_MAGIC = b"\x1f\x8b"
_UNIT_WORDS = {"meter": "metres", "micron": "micrometres"}
_UNIT_MM = {"meter": 1000.0, "micron": 0.001}


def _check_file(path: Path) -> None:
    """Refuse what is not a readable file, and a file whose name says the wrong compression,
    before nibabel reads it (its messages for these are misleading)."""
    try:
        mode = path.stat().st_mode
        if stat.S_ISDIR(mode):
            raise InputError("is a folder, not a NIfTI file", path)
        if not stat.S_ISREG(mode):
            raise InputError("is not a regular file (a device, pipe or socket), not a NIfTI file", path)
        with open(path, "rb") as fh:
            start = fh.read(4)
    except FileNotFoundError:
        raise InputError("file not found", path) from None
    except PermissionError:
        raise InputError("cannot be read (permission denied)", path) from None
    except OSError as exc:
        raise InputError(f"cannot be read ({exc.strerror or exc})", path) from None
    name = path.name.lower()
    gzipped = start[:2] == _GZIP_MAGIC
    if name.endswith(".nii") and gzipped:
        raise InputError("the file is gzip-compressed but named .nii; rename it to .nii.gz", path)
    plain_nifti = len(start) == 4 and (int.from_bytes(start, "little") in (348, 540)
                                       or int.from_bytes(start, "big") in (348, 540))
    if name.endswith(".nii.gz") and not gzipped and plain_nifti:
        raise InputError("the file is an uncompressed NIfTI file but named .nii.gz; rename it to .nii", path)


def _check_geometry(img, shape, affine: np.ndarray, path: Path) -> None:
    """Refuse a singular affine, voxel sizes no scanner uses, and a field of view no head has."""
    sizes = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    # Singular: columns (nearly) parallel, whatever the scale of the sizes (metres included).
    if abs(np.linalg.det(affine[:3, :3])) <= 1e-6 * float(np.prod(sizes)):
        raise InputError("affine is singular or not finite", path)
    shown = "x".join(f"{v:.4g}" for v in sizes)
    lo, hi = VOXEL_MM_RANGE
    if np.any(sizes < lo * (1 - 1e-6)) or np.any(sizes > hi * (1 + 1e-6)):
        unit = img.header.get_xyzt_units()[0]
        if unit in _UNIT_WORDS:
            mm = "x".join(f"{v:.4g}" for v in sizes * _UNIT_MM[unit])
            why = (f"; the header gives its sizes in {_UNIT_WORDS[unit]} (xyzt_units), that is {mm} mm, but "
                   "positions are read as mm: convert the file to mm")
        else:
            why = "; are they in other units than mm?"
        raise InputError(f"voxel sizes {shown} mm are outside the {lo:g} to {hi:g} mm that MR scanners use"
                         f"{why}", path)
    extent = sizes * np.asarray(shape, dtype=np.float64)
    if np.any(extent > MAX_EXTENT_MM):
        raise InputError(f"the volume spans {'x'.join(f'{v:.0f}' for v in extent)} mm ({'x'.join(map(str, shape))} "
                         f"voxels of {shown} mm); a head scan spans at most {MAX_EXTENT_MM:.0f} mm on each axis: "
                         "not a head scan, or its voxel sizes are wrong", path)


def _check_voxel_type(img, path: Path) -> None:
    """Only real-valued voxels make an MR magnitude image: not complex, RGB or bit data."""
    stored = img.get_data_dtype()
    if stored.fields is not None or stored.kind not in "iuf":
        label = nib.nifti1.data_type_codes.label.get(int(img.header["datatype"]), str(stored))
        raise InputError(f"voxel type {label!r} is not a real-valued image (complex, RGB and bit data "
                         "cannot be read as MR intensities)", path)


def _check_data_fits(img, shape, path: Path) -> None:
    """Refuse a header whose voxels cannot be in the file: truncated data, or a size bomb."""
    data_file = Path(img.file_map["image"].filename or path)
    stored = img.get_data_dtype()
    offset = int(getattr(img.dataobj, "offset", 0))
    needed = offset + int(np.prod(shape, dtype=np.int64)) * stored.itemsize
    size = data_file.stat().st_size
    name = data_file.name.lower()
    if name.endswith(".gz"):
        capacity = size * MAX_DEFLATE_RATIO
        holds = f"a gzip file of {size} bytes can hold at most {capacity}"
    elif name.endswith((".bz2", ".zst")):
        raise InputError("only uncompressed (.nii) and gzip (.nii.gz) NIfTI files are read", path)
    else:
        capacity, holds = size, f"the file has {size}"
    if needed > capacity:
        raise InputError(f"the header's {'x'.join(map(str, shape))} voxels of {stored} need {needed} bytes but "
                         f"{holds}: the file is truncated or its header claims a size it does not have",
                         data_file)


def _read_into(fh, view: memoryview) -> int:
    """Fill ``view`` from ``fh``; returns the bytes read (fewer only at the end of the file)."""
    done = 0
    while done < len(view):
        n = fh.readinto(view[done:])
        if not n:
            break
        done += n
    return done


def _read_data(img, path: Path, shape, dtype) -> np.ndarray:
    """The voxels of a NIfTI file (.nii, .nii.gz, or the .img[.gz] of a .hdr/.img pair; gzip with
    ISA-L when present, ~4x faster than Python's gzip), read and converted in pieces of
    :data:`READ_CHUNK_BYTES`.

    Called only after the header passed its checks, so the size is bounded by MAX_VOXELS and
    by what the file can hold (``_check_data_fits``). Peak memory is the returned array (at most
    ``MAX_VOXELS`` x 4 bytes of float32) plus one piece: no copy of the stored bytes is held, for
    pairs too (through nibabel, a gzipped pair peaked at 4x its output).

    Returns:
        (X, Y, Z) array in ``dtype``, Fortran-ordered as stored.
    """
    data_file = Path(img.file_map["image"].filename or path)
    offset = int(img.dataobj.offset)
    stored = img.header.get_data_dtype()
    count = int(np.prod(shape, dtype=np.int64))
    needed = offset + count * stored.itemsize
    out = np.empty(shape, dtype=dtype, order="F")
    flat = out.reshape(-1, order="F")  # a view: ``out`` is Fortran-ordered
    per_piece = max(1, READ_CHUNK_BYTES // stored.itemsize)
    buf = bytearray(min(count, per_piece) * stored.itemsize)
    opener = _gzip.open if data_file.name.lower().endswith(".gz") else open
    # Inflate only what the header's (checked) size needs: trailing padding cannot balloon memory.
    with opener(data_file, "rb") as fh:
        skipped = 0
        while skipped < offset:  # the header and its extensions, in pieces too
            piece = _read_into(fh, memoryview(buf)[: min(len(buf), offset - skipped)])
            if not piece:
                raise EOFError(f"the data end after {skipped} bytes; the header needs {needed}")
            skipped += piece
        done = 0
        while done < count:
            n = min(per_piece, count - done)
            got = _read_into(fh, memoryview(buf)[: n * stored.itemsize])
            if got < n * stored.itemsize:
                raise EOFError(f"the data end after {offset + done * stored.itemsize + got} bytes; "
                               f"the header needs {needed}")
            flat[done:done + n] = np.frombuffer(buf, dtype=stored, count=n)
            done += n
    # nibabel moves the header's scl_slope/scl_inter onto the array proxy when loading.
    slope, inter = float(img.dataobj.slope), float(img.dataobj.inter)
    if slope != 1.0:
        out *= slope
    if inter != 0.0:
        out += inter
    return out


def load_volume(path: str | os.PathLike, *, dtype=np.float32,
                keep_integers: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Load a 3-D NIfTI volume and its affine, checking it on the way.

    Args:
        dtype: the floating type of the returned voxels.
        keep_integers: return integer voxels as stored when the header does not scale them
            (most MR files): converting a 512 x 512 x 25 image to float32 costs ~16 ms, and the
            whole-brain pipeline converts only the samples and slices it reads.

    Returns:
        (data, affine): data of shape (X, Y, Z) in ``dtype`` (or the stored integer type);
        affine 4x4 voxel -> mm.

    Raises:
        InputError: naming the file and the problem (missing, not NIfTI, truncated, not 3-D,
            empty or more than MAX_VOXELS, complex or RGB voxels, a header claiming more data than
            the file holds, non-positive voxel sizes or ones outside VOXEL_MM_RANGE, a field of
            view wider than MAX_EXTENT_MM, qform and sform that disagree, non-finite voxels,
            constant image, unusable affine; a folder, an unreadable file, a gzip file named .nii
            or a plain one named .nii.gz). All but the truncation, non-finite and constant checks
            run on the header, before any voxel is read.
    """
    path = Path(path)
    _check_file(path)
    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel raises many types for bad files
        raise InputError(f"not a readable NIfTI file ({exc.__class__.__name__}: {exc})", path) from None
    if not isinstance(img, nib.Nifti1Pair):  # NIfTI-1 and -2; not MGH, MINC, Analyze ...
        raise InputError(f"not a NIfTI file (it reads as {type(img).__name__}); convert it to .nii.gz", path)
    shape = img.shape
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise InputError(f"expected a 3-D volume, got shape {img.shape}", path)
    if min(shape) < 1:
        raise InputError(f"header claims a volume of shape {shape}, with an empty or negative dimension", path)
    if int(np.prod(shape, dtype=np.int64)) > MAX_VOXELS:
        raise InputError(f"header claims {'x'.join(map(str, shape))} = {int(np.prod(shape, dtype=np.int64)):,} "
                         f"voxels, more than this reader accepts ({MAX_VOXELS:,} = 512^3, a 256 mm field of view "
                         "at 0.5 mm: finer and wider than infant head scans are made); its data were not read",
                         path)
    _check_voxel_type(img, path)
    _check_data_fits(img, shape, path)
    zooms = _stored_voxel_sizes(img, path)
    if not np.all(np.isfinite(zooms)) or np.any(zooms <= 0):
        raise InputError(f"voxel sizes must be positive, got {tuple(float(z) for z in zooms)}", path)
    _check_qform_sform(img, shape, path)
    affine = np.asarray(img.affine, dtype=np.float64)
    if not np.all(np.isfinite(affine)):
        raise InputError("affine is singular or not finite", path)
    _check_geometry(img, shape, affine, path)
    slope, inter = float(getattr(img.dataobj, "slope", 1.0)), float(getattr(img.dataobj, "inter", 0.0))
    stored = img.get_data_dtype()
    if keep_integers and np.issubdtype(stored, np.integer) and slope == 1.0 and inter == 0.0:
        dtype = stored.newbyteorder("=")
    try:
        with np.errstate(over="ignore", invalid="ignore"):  # overflow shows as inf, refused below
            data = _read_data(img, path, shape, dtype)
    except (EOFError, OSError, zlib.error, ValueError) as exc:
        raise InputError(f"image data could not be read; the file is truncated or corrupt ({exc})", path) from None
    # Integer voxels (most MR files) cannot be NaN or infinite unless the header's scaling
    # takes them out of the output type's range; only then, or for floats, is the scan needed.
    exact = np.issubdtype(dtype, np.integer)
    if np.issubdtype(stored, np.integer) and np.issubdtype(dtype, np.floating) and np.isfinite(slope + inter):
        largest = max(abs(int(np.iinfo(stored).min)), int(np.iinfo(stored).max))
        exact = abs(slope) * largest + abs(inter) < float(np.finfo(dtype).max)
    # The extremes are NaN or infinite exactly when a voxel is: no (X, Y, Z) mask is made to tell.
    lo, hi = float(data.min()), float(data.max())
    if not exact and not (np.isfinite(lo) and np.isfinite(hi)):
        raise InputError(f"{int(np.size(data) - np.isfinite(data).sum())} voxels are NaN or infinite", path)
    if hi == lo:
        raise InputError(f"image is constant (every voxel is {hi})", path)
    return data, affine
