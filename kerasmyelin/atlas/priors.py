"""The MNI152 tissue priors bundled with nilearn, and the MNI cerebrum reference mask.

:mod:`kerasmyelin.validation.template_ratios` marks white and grey matter in a brain without
segmenting it, from adult MNI152 grey- and white-matter priors, and
:mod:`kerasmyelin.atlas.alignment` aligns the brain to MNI against a reference brain
mask. Both come from the ICBM 2009a symmetric files that ship with nilearn (nothing to
download), loaded once per process by :func:`load_mni_priors`. The reference is the cerebrum
only (:func:`mni_cerebrum_mask`) because the infant templates are cut below the midbrain;
:mod:`kerasmyelin.atlas.alignment` gives the measurements behind that choice.
:func:`ventricle_and_white_matter_points` marks where CSF and white matter lie, for the
whole-brain pipeline's check of which image is the T1w (``wholebrain.contrast_order``).

Units: world coordinates in mm (MNI, RAS); priors are probabilities in [0, 1].
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from kerasmyelin.io.mni import load_mni

_BRAINSTEM_CUT_Z_MM = -20.0


@dataclass(frozen=True)
class MniPriors:
    """The ICBM 2009a symmetric priors bundled with nilearn, 1 mm, shape (197, 233, 189).

    Attributes:
        gm: grey-matter probability, float32 in [0, 1].
        wm: white-matter probability, float32 in [0, 1].
        brain: whole-brain mask (``t1 > 0``), bool; includes cerebellum and brainstem.
        cerebrum: ``brain`` without cerebellum and brainstem below the midbrain, bool.
        affine: 4x4 voxel -> MNI mm.
    """

    gm: np.ndarray
    wm: np.ndarray
    brain: np.ndarray
    cerebrum: np.ndarray
    affine: np.ndarray


def _largest_component(mask: np.ndarray) -> np.ndarray:
    lab, n = ndi.label(mask)
    if n <= 1:
        return lab > 0
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return lab == int(np.argmax(sizes))


def mni_cerebrum_mask(brain: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Remove cerebellum and lower brainstem from an MNI152 brain mask by a geometric model.

    The tentorium is modelled as the surface ``z = -3 - 0.45*|x| + 0.33*(y + 60)`` (mm),
    fitted by eye on sagittal slices of the ICBM 2009a T1 (cerebellar top at z ~ -5 at the
    vermis, ~ -27 at |x| = 50, for y = -60, rising anteriorly); everything below it and
    behind ``y = -44 + 0.2*|x|`` is cerebellum. The brainstem (-52 < y < -12) is cut at
    z = -20 mm for |x| < 16 and at z = -26 mm for |x| < 27 (pons and middle cerebellar
    peduncles; roughly the pontomesencephalic junction, where the infant templates are
    cut). What is left is opened once and its largest connected component kept
    (1639 mL of the 1887 mL brain).

    Args:
        brain: bool array (X, Y, Z), the MNI brain mask.
        affine: 4x4 voxel -> MNI mm of ``brain``.

    Returns:
        bool array of the same shape.
    """
    i, j, k = np.ogrid[tuple(slice(0, n) for n in brain.shape)]
    aff = np.asarray(affine, dtype=np.float32)
    x, y, z = (aff[r, 0] * i + aff[r, 1] * j + aff[r, 2] * k + aff[r, 3] for r in range(3))
    ax = np.abs(x)
    tentorium = -3.0 - 0.45 * ax + 0.33 * (y + 60.0)
    cerebellum = (y < -44.0 + 0.2 * ax) & (z < tentorium)
    below_cut = ((ax < 16.0) & (z < _BRAINSTEM_CUT_Z_MM)) | ((ax < 27.0) & (z < -26.0))
    brainstem = below_cut & (y > -52.0) & (y < -12.0)
    cerebrum = brain & ~cerebellum & ~brainstem
    return _largest_component(ndi.binary_opening(cerebrum))


@functools.lru_cache(maxsize=1)
def load_mni_priors() -> MniPriors:
    """Load (once per process) the MNI152 ICBM 2009a GM/WM priors bundled with nilearn.

    Returns:
        A :class:`MniPriors`; its arrays are read-only and shared between calls.

    Raises:
        InputError: when a bundled file is missing (names the file).
    """
    t1, affine = load_mni("t1")
    gm, _ = load_mni("gm")
    wm, _ = load_mni("wm")
    brain = t1 > 0
    cerebrum = mni_cerebrum_mask(brain, affine)
    for a in (gm, wm, brain, cerebrum, affine):
        a.setflags(write=False)
    return MniPriors(gm=gm, wm=wm, brain=brain, cerebrum=cerebrum, affine=affine)


# Deep CSF: brain voxels this deep (mm) whose grey + white matter prior is below the cut-off (as in
# experiments/probe_template_ventricles.py). Its pieces off the midline are the two lateral
# ventricles (7.1 mL each in MNI); the largest piece, on the midline, is the fourth ventricle with
# the cisterns around the brainstem (11.3 mL), which the infant templates cut off.
VENTRICLE_DEPTH_MM = 12.0
VENTRICLE_MAX_TISSUE = 0.3
VENTRICLE_OFF_MIDLINE_MM = 5.0
# Deep white matter: this sure, this deep, and this far from the ventricles (~300 mL in MNI).
WHITE_MATTER_MIN_PRIOR = 0.9
WHITE_MATTER_DEPTH_MM = 8.0
WHITE_MATTER_VENTRICLE_GAP_MM = 4.0


_CSF_POINTS: list[tuple[np.ndarray, np.ndarray]] = []


def ventricle_and_white_matter_points() -> tuple[np.ndarray, np.ndarray]:
    """MNI mm of the lateral ventricles and of deep white matter away from them.

    The ventricles are the two largest connected pieces of deep, tissue-free brain whose centre
    lies off the midline (14.3 mL); the white matter keeps every second voxel along each axis
    (~37,000 points). Built once per process (~1.6 s, ~90 MB while it runs); worker processes
    get the parent's through :func:`install_ventricle_and_white_matter_points`.

    Returns:
        (ventricles (N, 3), white matter (M, 3)) float32 MNI mm, read-only.
    """
    if not _CSF_POINTS:
        install_ventricle_and_white_matter_points(_build_csf_points())
    return _CSF_POINTS[0]


def install_ventricle_and_white_matter_points(points: tuple[np.ndarray, np.ndarray]) -> None:
    """Use points built elsewhere (a worker process's initializer)."""
    kept = []
    for p in points:
        p = np.asarray(p, np.float32)
        p.setflags(write=False)
        kept.append(p)
    _CSF_POINTS[:] = [(kept[0], kept[1])]


def _build_csf_points() -> tuple[np.ndarray, np.ndarray]:
    # From the bundled maps directly, not load_mni_priors: its cerebrum mask's temporaries cost
    # ~300 MB, which the whole-brain pipeline (its only user) would add to a scan's peak memory.
    t1, affine = load_mni("t1")
    brain = t1 > 0
    del t1
    gm, _ = load_mni("gm")
    wm, _ = load_mni("wm")
    fluid = (gm + wm) < VENTRICLE_MAX_TISSUE
    sure_white = wm > WHITE_MATTER_MIN_PRIOR
    del gm, wm
    # Depth on a 2 mm grid: eight times cheaper than at 1 mm, and 2 mm is finer than the cut-offs need.
    coarse = ndi.distance_transform_edt(brain[::2, ::2, ::2], sampling=2.0)

    def deeper_than(mm: float) -> np.ndarray:
        full = np.repeat(np.repeat(np.repeat(coarse >= mm, 2, 0), 2, 1), 2, 2)
        return full[tuple(slice(0, n) for n in brain.shape)]

    csf = brain & fluid & deeper_than(VENTRICLE_DEPTH_MM)
    labels, n = ndi.label(csf)
    i, _, _ = np.nonzero(labels)
    piece = labels[labels > 0]
    sizes = np.bincount(piece, minlength=n + 1).astype(np.float64)
    centre_x = np.bincount(piece, weights=i * affine[0, 0] + affine[0, 3], minlength=n + 1)
    centre_x /= np.maximum(sizes, 1.0)
    sizes[np.abs(centre_x) < VENTRICLE_OFF_MIDLINE_MM] = 0  # the midline piece, and the background (0)
    largest = np.argsort(sizes)[::-1][:2]
    ventricles = np.isin(labels, largest[sizes[largest] > 0])
    del labels
    near = ndi.binary_dilation(ventricles, iterations=int(WHITE_MATTER_VENTRICLE_GAP_MM))
    white = sure_white & deeper_than(WHITE_MATTER_DEPTH_MM) & ~near & brain
    sparse = np.zeros_like(white)
    sparse[::2, ::2, ::2] = white[::2, ::2, ::2]
    ventricle_points, white_points = ((np.argwhere(m) @ affine[:3, :3].T + affine[:3, 3]).astype(np.float32)
                                      for m in (ventricles, sparse))
    return ventricle_points, white_points
