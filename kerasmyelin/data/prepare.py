"""The paper's input preparation: ten 128x128 images per infant, as pure array transforms.

Wada et al. 2019 took, for each infant, the T1w and T2w slice at five levels, "cropped to the
head", resized them to 128x128 greyscale and normalised their intensity. The same functions
prepare synthetic and real scans; only the source of the slice indices differs (ground truth,
a person, or the automatic level finder of
:mod:`kerasmyelin.wholebrain.level_finder`, which ``prepare`` runs without ``--levels``).

Conventions: volumes are (X, Y, Z) arrays with an affine; after ``to_canonical`` axis 0 runs to
the patient's right, axis 1 to anterior, axis 2 up (RAS). Output images are shown the way a
radiologist reads axial images: anterior at the top, patient's right on the image's left.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import nibabel as nib
import numpy as np
from scipy import ndimage

from kerasmyelin.errors import InputError
from kerasmyelin.levels import CONTRASTS, LEVEL_KEYS, input_name

INTENSITY_REFERENCES = ("head", "brain_core")


@dataclass(frozen=True)
class PrepConfig:
    """Parameters of the ten-slice preparation.

    Attributes:
        image_size: side of the square output images in pixels (paper: 128).
        crop_margin: the square crop is the head's largest in-plane extent times this.
        head_threshold: fraction of the volume's 99th percentile above which a voxel is head.
        upper_percentile: intensity percentile of the head (over the whole volume) mapped to 1.
        intensity_reference: which voxels that percentile is taken over. "head" (the paper's
            reading: every head voxel, so on T1w the bright scalp fat sets the scale) or
            "brain_core" (head voxels at least ``core_depth_mm`` inside the head's outline:
            brain in a whole-head scan and in a skull-stripped one alike, so both are scaled
            the same way; see docs/wholebrain.md, "sim-to-real").
        core_depth_mm: depth of the "brain_core" region below the outline, in mm.
    """

    image_size: int = 128
    crop_margin: float = 1.08
    head_threshold: float = 0.08
    upper_percentile: float = 99.5
    intensity_reference: str = "head"
    core_depth_mm: float = 20.0

    def __post_init__(self):
        if self.intensity_reference not in INTENSITY_REFERENCES:
            raise ValueError(f"intensity_reference must be one of {INTENSITY_REFERENCES}, "
                             f"got {self.intensity_reference!r}")

    def as_dict(self) -> dict:
        return asdict(self)


def to_canonical(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reorder and flip axes to the closest RAS orientation (no resampling)."""
    ornt = nib.orientations.io_orientation(affine)
    canonical = nib.orientations.axcodes2ornt(("R", "A", "S"))
    transform = nib.orientations.ornt_transform(ornt, canonical)
    out = nib.orientations.apply_orientation(data, transform)  # a view: flips and transposes
    new_affine = affine @ nib.orientations.inv_ornt_aff(transform, data.shape)
    return out, new_affine


def radiological(slice_xy: np.ndarray) -> np.ndarray:
    """(X, Y) RAS slice -> (rows, cols) image: anterior at top, patient's right on the left."""
    return slice_xy[::-1, ::-1].T


# Background connectivity of scipy's binary_fill_holes (4-connected) within a slice, never across.
_IN_PLANE = np.zeros((3, 3, 3), bool)
_IN_PLANE[:, :, 1] = ndimage.generate_binary_structure(2, 1)


def fill_holes_per_slice(mask: np.ndarray) -> np.ndarray:
    """Fill, slice by slice, the background regions of a (X, Y, Z) mask not reaching the edge."""
    labels, _ = ndimage.label(~mask, structure=_IN_PLANE)
    edge = np.unique(np.concatenate([labels[0].ravel(), labels[-1].ravel(), labels[:, 0].ravel(),
                                     labels[:, -1].ravel()]))
    return mask | ~np.isin(labels, edge)


def head_mask(volume: np.ndarray, threshold: float, step: int = 1) -> np.ndarray:
    """Head voxels of a (X, Y, Z) volume, seen every ``step`` pixels in-plane.

    A voxel is head when brighter than ``threshold`` x the volume's 99th percentile; specks are
    opened away and holes (dark CSF or bone inside the head) filled slice by slice.

    Returns:
        Boolean mask of shape (ceil(X / step), ceil(Y / step), Z).
    """
    small = np.asarray(volume[::step, ::step, :], dtype=np.float32)
    level = threshold * float(np.percentile(small, 99.0))
    # Opening (3 x 3 in-plane) as min- then max-filter on bytes: same result, far cheaper.
    mask = (small > level).view(np.uint8)
    mask = ndimage.maximum_filter(ndimage.minimum_filter(mask, size=(3, 3, 1), mode="constant"),
                                  size=(3, 3, 1), mode="constant").astype(bool)
    return fill_holes_per_slice(mask)


def crop_square(image: np.ndarray, centre: tuple[float, float], side: float) -> np.ndarray:
    """A side x side window (pixels, fractional allowed) centred on ``centre``, zero outside."""
    n = int(np.ceil(side))
    r0 = int(round(centre[0] - n / 2))
    c0 = int(round(centre[1] - n / 2))
    out = np.zeros((n, n), dtype=np.float32)
    rs, cs = max(r0, 0), max(c0, 0)
    re, ce = min(r0 + n, image.shape[0]), min(c0 + n, image.shape[1])
    if re > rs and ce > cs:
        out[rs - r0:re - r0, cs - c0:ce - c0] = image[rs:re, cs:ce]
    return out


def resize(image: np.ndarray, size: int) -> np.ndarray:
    """Anti-aliased resize of a square image to size x size.

    Shrinking by a factor f first averages k x k blocks (k = floor(f), exact area averaging),
    then low-passes what is left of the factor before linear interpolation.
    """
    k = int(image.shape[0] / size)
    if k >= 2:
        n = (image.shape[0] // k) * k
        image = image[:n, :n].reshape(n // k, k, n // k, k).mean(axis=(1, 3))
    factor = image.shape[0] / size
    if factor > 1:
        image = ndimage.gaussian_filter(image, sigma=0.45 * factor, truncate=2.5)
    zoom = size / image.shape[0]
    out = ndimage.zoom(image, (zoom, size / image.shape[1]), order=1, prefilter=False, grid_mode=True,
                       mode="grid-constant")
    return out[:size, :size].astype(np.float32)


def outline_step(shape) -> int:
    """In-plane stride of the coarse head outline: a grid of at most ~128 pixels a side."""
    return max(1, int(np.ceil(max(shape[:2]) / 128)))


def prepare_volume(volume: np.ndarray, affine: np.ndarray, slices: dict[str, int],
                   config: PrepConfig = PrepConfig(), source: str | None = None,
                   mask: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The five level images of one contrast.

    Args:
        volume: (X, Y, Z) image, any orientation given by ``affine``; axial slices after
            reorientation to RAS.
        affine: 4x4 voxel -> mm.
        slices: level key -> axial slice index in the RAS-reoriented volume.
        config: preparation parameters.
        source: file name used in error messages.
        mask: the volume's ``head_mask`` at ``outline_step``, if the caller already has it (a
            volume already in RAS order only; computed here otherwise).

    Returns:
        level key -> (size, size) float32 image, head intensities mostly within [0, 1].
    """
    missing = [k for k in LEVEL_KEYS if k not in slices]
    if missing:
        raise InputError(f"no slice index for level(s) {', '.join(missing)}", source)
    # Reoriented as a view: only the strided outline and the five slices are ever converted.
    vol, aff = to_canonical(np.asarray(volume), affine)
    for key in LEVEL_KEYS:
        if not 0 <= int(slices[key]) < vol.shape[2]:
            raise InputError(f"level {key} slice {slices[key]} is outside the {vol.shape[2]} axial slices", source)
    # The crop and the intensity scale need only a coarse head outline: find it on a grid of
    # at most ~128 pixels a side, which is ~16x cheaper than at a 512 matrix.
    step = outline_step(vol.shape)
    if mask is None or not np.array_equal(aff, np.asarray(affine, dtype=np.float64)):  # given for RAS order
        mask = head_mask(vol, config.head_threshold, step)
    reference = mask
    if config.intensity_reference == "brain_core":
        voxel_mm = np.sqrt((np.asarray(aff)[:3, :3] ** 2).sum(axis=0)) * np.array([step, step, 1])
        reference = ndimage.distance_transform_edt(mask, sampling=voxel_mm) >= config.core_depth_mm
        if not reference.any():  # a head thinner than twice the depth: fall back to the whole head
            reference = mask
    head_values = np.asarray(vol[::step, ::step, :][reference], dtype=np.float32)
    if head_values.size == 0:
        raise InputError("no head found: the image is empty or nearly constant", source)
    upper = float(np.percentile(head_values, config.upper_percentile))
    # One crop size (in pixels) for the whole volume, so the five levels share a scale.
    extents = []
    for k in range(vol.shape[2]):
        rows = np.nonzero(mask[..., k].any(axis=1))[0]
        cols = np.nonzero(mask[..., k].any(axis=0))[0]
        if rows.size:
            extents.append(max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1)
    side = config.crop_margin * step * max(extents)
    out = {}
    for key in LEVEL_KEYS:
        k = int(slices[key])
        img = radiological(np.asarray(vol[..., k], dtype=np.float32))
        m = radiological(mask[..., k])
        if m.any():
            centre = tuple(step * c + (step - 1) / 2 for c in ndimage.center_of_mass(m))
        else:
            centre = (img.shape[0] / 2, img.shape[1] / 2)
        crop = crop_square(img, centre, side)
        out[key] = np.clip(resize(crop, config.image_size) / max(upper, 1e-6), 0.0, 1.5)
    return out


def prepare_subject(volumes: dict[str, tuple[np.ndarray, np.ndarray]], slices: dict[str, dict[str, int]],
                    config: PrepConfig = PrepConfig(), sources: dict[str, str] | None = None
                    ) -> dict[str, np.ndarray]:
    """The ten input images of one infant.

    Args:
        volumes: contrast ("T1w", "T2w") -> (data, affine).
        slices: contrast -> level key -> axial slice index in that contrast's RAS volume.
        config: preparation parameters.
        sources: contrast -> file name, for error messages.

    Returns:
        input name (``levels.INPUT_NAMES``) -> (size, size) float32 image.
    """
    sources = sources or {}
    out = {}
    for contrast in CONTRASTS:
        if contrast not in volumes:
            raise InputError(f"no {contrast} image given", sources.get(contrast))
        data, affine = volumes[contrast]
        images = prepare_volume(data, affine, slices[contrast], config, sources.get(contrast))
        for key, img in images.items():
            out[input_name(contrast, key)] = img
    return out
