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


# A header may claim any size; refuse before allocating (4096^3 float32 would be 256 GiB).
MAX_VOXELS = 512 * 1024 * 1024
# Deflate cannot shrink data more than 1032:1, so a .gz file of n bytes holds at most 1032 n
# bytes: a header claiming more is refused before anything is inflated or allocated.
MAX_DEFLATE_RATIO = 1032


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


def _read_data(img, path: Path, shape, dtype) -> np.ndarray:
    """The voxels, decompressing a .gz with ISA-L when present (~4x faster than Python's gzip).

    Called only after the header passed its checks, so the size is bounded by MAX_VOXELS and
    by what the file can hold (``_check_data_fits``).
    """
    if _gzip is gzip or path.suffix != ".gz":
        return np.asarray(img.dataobj, dtype=dtype).reshape(shape)
    offset = int(img.dataobj.offset)
    stored = img.header.get_data_dtype()
    count = int(np.prod(shape, dtype=np.int64))
    needed = offset + count * stored.itemsize
    # Inflate only what the header's (checked) size needs: trailing padding cannot balloon memory.
    with _gzip.open(path, "rb") as fh:
        raw = fh.read(needed)
    if len(raw) < needed:
        raise EOFError(f"the data end after {len(raw)} bytes; the header needs {needed}")
    arr = np.frombuffer(raw, dtype=stored, count=count, offset=offset).reshape(shape, order="F")
    # nibabel moves the header's scl_slope/scl_inter onto the array proxy when loading.
    slope, inter = float(img.dataobj.slope), float(img.dataobj.inter)
    out = arr.astype(dtype)
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
            empty or too large, complex or RGB voxels, a header claiming more data than the file
            holds, non-positive voxel sizes, qform and sform that disagree, non-finite voxels,
            constant image, unusable affine).
    """
    path = Path(path)
    if not path.exists():
        raise InputError("file not found", path)
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
        raise InputError(f"header claims {shape} voxels, more than this reader accepts", path)
    _check_voxel_type(img, path)
    _check_data_fits(img, shape, path)
    zooms = _stored_voxel_sizes(img, path)
    if not np.all(np.isfinite(zooms)) or np.any(zooms <= 0):
        raise InputError(f"voxel sizes must be positive, got {tuple(float(z) for z in zooms)}", path)
    _check_qform_sform(img, shape, path)
    affine = np.asarray(img.affine, dtype=np.float64)
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise InputError("affine is singular or not finite", path)
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
    if not exact and not np.all(np.isfinite(data)):
        raise InputError(f"{int(np.size(data) - np.isfinite(data).sum())} voxels are NaN or infinite", path)
    if float(data.max()) == float(data.min()):
        raise InputError(f"image is constant (every voxel is {float(data.max())})", path)
    return data, affine
