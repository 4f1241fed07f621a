"""What the simulator needs from the reference anatomy, built once and cached on disk.

Building the anatomy (template loading, resampling, distance maps, milestone fields, speed
solving) takes several seconds; every synthetic infant then reuses it. The result is stored in
the user's cache folder (``$KERASMYELIN_CACHE_DIR``, default ``~/.cache/kerasmyelin``) under a
key that changes whenever the code or the template it derives from changes, so a stale cache
is never used. Fractions are rounded to float16 whether or not they come from the cache, so a
cohort is byte-identical either way.
"""

from __future__ import annotations

import functools
import hashlib
import io
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kerasmyelin import __version__
from kerasmyelin.io.mni import mni_file
from kerasmyelin.synth import anatomy, maturation, milestones, relaxation, scaffolds, sequences
from kerasmyelin.synth.scaffolds import MNI_ANATOMY

log = logging.getLogger(__name__)
_FRACTIONS = anatomy.TISSUES

MNI_BRAIN_ML = 1886.5
"""The MNI152 brain-mask volume (mL) the infant volume is scaled against (measured on the
template nilearn bundles, CSF included, like the infant brain masks of growth.py)."""


@dataclass
class TissueModel:
    """Tissue fractions on the anatomy grid and the white-matter maturation speeds.

    Attributes:
        affine: 4x4 voxel -> MNI mm of the grid.
        res_mm: grid spacing.
        fractions: tissue -> (X, Y, Z) float32.
        wm_index: flat indices of white-matter voxels.
        t1_mid, t2_mid: the ages (months) at which white matter at those voxels turns T1-bright
            and T2-dark in a typical infant (its milestones); :meth:`speeds` turns them into the
            speeds of its maturation for a set of tissue curves.
        wm_coords: (3, N) MNI mm of those voxels.
        head_bbox_mm: (2, 3) lowest and highest MNI corner of the head.
        anatomy: "mni" (the scaled adult MNI152 brain) or an infant scaffold's name
            (``scaffolds.anatomy_name``).
        brain_ml: the brain's volume on the grid (mL, CSF inside it included), which an infant's
            brain volume is scaled against.
        proportions: (3,) per-axis factor (geometric mean 1) giving the infant the anatomy's
            proportions; ones for MNI.
    """

    affine: np.ndarray
    res_mm: float
    fractions: dict[str, np.ndarray]
    wm_index: np.ndarray
    t1_mid: np.ndarray
    t2_mid: np.ndarray
    wm_coords: np.ndarray
    head_bbox_mm: np.ndarray
    anatomy: str = "mni"
    brain_ml: float = MNI_BRAIN_ML
    proportions: np.ndarray = field(default_factory=lambda: np.ones(3))

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.fractions["wm"].shape

    def speeds(self, curves: relaxation.TissueCurves = relaxation.PUBLISHED) -> tuple[np.ndarray, np.ndarray]:
        """(k1, k2) at the white-matter voxels: the speeds at which, with these tissue curves,
        each voxel crosses the cortex at its milestone ages (``maturation.rates_for``); cached
        per curves, as every infant of a cohort needs them."""
        key = curves
        cache = self.__dict__.setdefault("_speeds", {})
        if key not in cache:
            if len(cache) >= 4:
                cache.clear()
            cache[key] = maturation.rates_for(self.t1_mid, self.t2_mid, curves)
        return cache[key]


def _from_anatomy(anat: anatomy.Anatomy, name: str, brain_ml: float, proportions) -> TissueModel:
    t1_mid = anat.t1_mid.ravel()[anat.wm_index].astype(np.float32)
    t2_mid = anat.t2_mid.ravel()[anat.wm_index].astype(np.float32)
    ijk = np.unravel_index(anat.wm_index, anat.shape)
    axes = anat.world_coordinates()
    coords = np.stack([axes[i][ijk[i]] for i in range(3)]).astype(np.float32)
    fractions = {k: v.astype(np.float16).astype(np.float32) for k, v in anat.fractions.items()}
    return TissueModel(anat.affine, anat.res_mm, fractions, anat.wm_index, t1_mid, t2_mid, coords,
                       anat.head_bounding_box_mm(), name, float(brain_ml),
                       np.asarray(proportions, dtype=np.float64))


def _build(res_mm: float, name: str = MNI_ANATOMY, templates: str = "") -> TissueModel:
    if name == MNI_ANATOMY:
        return _from_anatomy(anatomy.build_anatomy(res_mm), name, MNI_BRAIN_ML, np.ones(3))
    sc = scaffolds.build_scaffold(templates, scaffolds.scaffold_months(name), res_mm)
    return _from_anatomy(sc.anatomy, name, sc.brain_ml, sc.proportions)


def _cache_key(res_mm: float, name: str = MNI_ANATOMY, templates: str = "") -> str:
    h = hashlib.sha256(f"{__version__}|{res_mm}|{np.__version__}|{name}".encode())
    for module in (anatomy, maturation, milestones, relaxation, sequences, scaffolds):
        h.update(Path(module.__file__).read_bytes())
    h.update(Path(__file__).read_bytes())
    for mni_name in ("t1", "gm", "wm"):
        h.update(str(os.path.getsize(mni_file(mni_name))).encode())
    if name != MNI_ANATOMY:
        for path in scaffolds.template_pair(templates, scaffolds.scaffold_months(name)):
            h.update(hashlib.sha256(path.read_bytes()).digest())  # the same files, wherever they are
    return h.hexdigest()[:20]


def cache_dir() -> Path:
    return Path(os.environ.get("KERASMYELIN_CACHE_DIR", Path.home() / ".cache" / "kerasmyelin"))


def _save(model: TissueModel, path: Path) -> None:
    from kerasmyelin.io.atomic import write_bytes_atomic

    buf = io.BytesIO()
    np.savez(buf, affine=model.affine, res_mm=model.res_mm, wm_index=model.wm_index, t1_mid=model.t1_mid, t2_mid=model.t2_mid,
             wm_coords=model.wm_coords, head_bbox_mm=model.head_bbox_mm, anatomy=model.anatomy,
             brain_ml=model.brain_ml, proportions=model.proportions,
             **{f"fraction_{k}": v.astype(np.float16) for k, v in model.fractions.items()})
    write_bytes_atomic(path, buf.getvalue())


def _load(path: Path) -> TissueModel:
    with np.load(path, allow_pickle=False) as z:
        return TissueModel(z["affine"], float(z["res_mm"]),
                           {k: z[f"fraction_{k}"].astype(np.float32) for k in _FRACTIONS},
                           z["wm_index"], z["t1_mid"], z["t2_mid"], z["wm_coords"], z["head_bbox_mm"],
                           str(z["anatomy"]), float(z["brain_ml"]), z["proportions"])


def tissue_model(res_mm: float = 1.5, anatomy_name: str = MNI_ANATOMY, templates: str | os.PathLike = "") -> TissueModel:
    """The tissue model at ``res_mm``: from memory, else the disk cache, else built (and cached).

    Args:
        res_mm: grid spacing in MNI mm.
        anatomy_name: "mni" or an infant scaffold (``scaffolds.anatomy_name(months)``).
        templates: the infant template folder a scaffold is segmented from (unused for "mni").

    Raises:
        ValueError: for an unknown anatomy name.
        InputError: naming a template file that is missing or corrupt.
    """
    if anatomy_name != MNI_ANATOMY:
        scaffolds.scaffold_months(anatomy_name)  # an unknown name fails before any work
        if not templates:
            raise ValueError(f"anatomy {anatomy_name!r} needs the infant template folder it is built from")
        templates = str(Path(templates).resolve())
    return _tissue_model(float(res_mm), anatomy_name, str(templates) if anatomy_name != MNI_ANATOMY else "")


@functools.lru_cache(maxsize=8)
def _tissue_model(res_mm: float, name: str, templates: str) -> TissueModel:
    path = cache_dir() / f"tissue-model-{_cache_key(res_mm, name, templates)}.npz"
    if path.exists():
        try:
            return _load(path)
        except (OSError, ValueError, KeyError) as exc:
            log.warning("ignoring unreadable tissue-model cache %s (%s); rebuilding", path, exc)
    model = _build(res_mm, name, templates)
    try:
        _save(model, path)
    except OSError as exc:
        log.warning("could not cache the tissue model at %s (%s); it will be rebuilt next time", path, exc)
    return model
