"""The real infant templates (BME-X, 3 T, T1w and T2w at 0, 6, 9, 12 and 24 months): where they
are and how to read them.

Their headers reverse front and back (the usual RAS/LPS mix-up: +y points to the back), so
they are always read through :func:`corrected_image`. Read as stored, the MNI priors land
mirrored and every measurement at levels b and c is wrong (docs/wholebrain.md,
docs/realism.md). The level finder, the sim-to-real check and the anatomy scaffolds all read
them here.
"""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np

from kerasmyelin.errors import InputError
from kerasmyelin.levels import CONTRASTS

TEMPLATE_MONTHS: tuple[int, ...] = (0, 6, 9, 12, 24)
"""Ages (months) of the infant templates, ``Template-Month{m}-{contrast}.nii.gz``."""

# World -> corrected world: 180 degrees about the vertical axis (the headers' +y is posterior).
HEADER_CORRECTION = np.diag([-1.0, -1.0, 1.0, 1.0])


def parse_months(text: str) -> tuple[int, ...]:
    """Template ages from a comma-separated list ("0,6,12"), sorted; a ValueError naming the text
    when a value is not a whole month or not a template age."""
    try:
        months = tuple(sorted({int(x) for x in text.split(",") if x.strip()}))
    except ValueError:
        raise ValueError(f"expected comma-separated whole months, got {text!r}") from None
    if not months or any(m not in TEMPLATE_MONTHS for m in months):
        raise ValueError(f"expected some of the template ages {list(TEMPLATE_MONTHS)}, got {text!r}")
    return months


def template_file(folder: str | os.PathLike, months: int, contrast: str) -> Path:
    """The file of one template; an InputError naming it when it is not there."""
    path = Path(folder) / f"Template-Month{months}-{contrast}.nii.gz"
    if not path.is_file():
        raise InputError("infant template not found", path)
    return path


def find_templates(root: str | os.PathLike) -> dict[tuple[int, str], Path]:
    """The infant template files in ``root``.

    Args:
        root: folder holding ``Template-Month{0,6,9,12,24}-{T1w,T2w}.nii.gz``.

    Returns:
        ``{(month, contrast): path}`` for all 10 templates.

    Raises:
        InputError: naming the folder when it is missing or lacks any of the files.
    """
    folder = Path(root)
    if not folder.is_dir():
        raise InputError("infant template folder not found", folder)
    found: dict[tuple[int, str], Path] = {}
    missing: list[str] = []
    for month in TEMPLATE_MONTHS:
        for contrast in CONTRASTS:
            path = folder / f"Template-Month{month}-{contrast}.nii.gz"
            if path.is_file():
                found[(month, contrast)] = path
            else:
                missing.append(path.name)
    if missing:
        raise InputError(f"missing infant template files: {', '.join(missing)}", folder)
    return found


def corrected_image(path: str | os.PathLike) -> nib.Nifti1Image:
    """A template read with its header corrected (:data:`HEADER_CORRECTION`). Read as stored,
    the MNI priors land mirrored front to back: at levels b and c the white-matter mask then
    falls on the thalami and basal ganglia and the ratios come out near 1 at every age (T2w 24
    months, level c: 0.83 as stored, 0.59 corrected; docs/realism.md)."""
    from kerasmyelin.io.nifti import load_volume

    data, affine = load_volume(path)  # a corrupt or truncated template is an InputError naming it
    img = nib.Nifti1Image(data, HEADER_CORRECTION @ affine)
    img.set_filename(str(path))
    return img
