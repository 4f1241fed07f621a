"""The ICBM 2009a symmetric MNI152 template and tissue maps bundled in the nilearn wheel.

One loader for both users: the synthetic anatomy (``synth.anatomy``) and the template
instrument and the level finder (``atlas.priors``). Nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from kerasmyelin.errors import InputError

MNI_NAMES = ("t1", "gm", "wm")


def mni_file(name: str) -> Path:
    """Path of the bundled ``mni_icbm152_{name}_tal_nlin_sym_09a_converted.nii.gz`` (t1, gm or wm)."""
    # find_spec locates the wheel without importing nilearn (which pulls in pandas and sklearn).
    spec = importlib.util.find_spec("nilearn")
    if spec is None or spec.origin is None:
        raise InputError("nilearn is not installed; it bundles the MNI152 template kerasmyelin "
                         "uses (pip install nilearn)")
    path = Path(spec.origin).parent / "datasets" / "data" / f"mni_icbm152_{name}_tal_nlin_sym_09a_converted.nii.gz"
    if not path.is_file():
        raise InputError("the MNI152 template that nilearn bundles is missing; reinstall nilearn", path)
    return path


def load_mni(name: str) -> tuple[np.ndarray, np.ndarray]:
    """(data as float32 in [0, 1], affine voxel -> MNI mm) of one bundled map; 1 mm, 197x233x189."""
    import nibabel as nib

    img = nib.load(mni_file(name))
    return np.asarray(img.dataobj, dtype=np.float32) / 255.0, img.affine.copy()
