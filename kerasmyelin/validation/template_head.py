"""The real infant templates with a simulated head around them.

The templates are skull-stripped; most clinical scans are not. To see what a model does with a
real brain inside a head, the brain is kept exactly as it is and the layers the synthetic infants
have (``synth.anatomy``: extra-axial CSF, skull, scalp, at the same adult-scale radii shrunk to
the template's size) are added outside it, each with the intensity the simulator gives that
tissue relative to cortex (3 T research protocol, the template's age, the given tissue curves)
times the template's own cortex intensity. No noise is added: the templates are averages.

Units: mm; intensities in the template's own units.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from scipy import ndimage

PAD_MM = 16.0


def _layer_signals(months: float, curves: str, protocol: str) -> dict[str, dict[str, float]]:
    """contrast -> tissue ("csf", "skull", "scalp") -> signal relative to cortex."""
    from kerasmyelin.synth.curves import curves_for
    from kerasmyelin.synth.maturation import grey_matter_times
    from kerasmyelin.synth.relaxation import tissue_parameters
    from kerasmyelin.synth.sequences import scanner_for
    from kerasmyelin.synth.tissue_signal import constant_tissue_signals

    tc = curves_for(curves)
    scanner = scanner_for(protocol, 3.0)
    gm = tissue_parameters("gm", 3.0, *grey_matter_times(np.float32(months), tc), tc)
    out = {}
    for contrast, seq in (("T1w", scanner.t1w), ("T2w", scanner.t2w)):
        s = constant_tissue_signals(3.0, seq)
        cortex = float(seq.signal(*gm))
        out[contrast] = {k: s[k] / cortex for k in ("csf", "skull", "scalp")}
    return out


def with_simulated_head(t1w: np.ndarray, t2w: np.ndarray, affine: np.ndarray, months: float,
                        curves: str = "calibrated", protocol: str = "research3d"):
    """(t1w, t2w, affine) of the brain inside a simulated head, padded by :data:`PAD_MM`.

    Args:
        t1w, t2w: a skull-stripped brain (background 0), on one grid.
        affine: 4x4 voxel -> world mm (RAS, corrected).
        months: the brain's age, for the layers' contrast relative to cortex.
    """
    from kerasmyelin.synth import anatomy
    from kerasmyelin.synth.scaffolds import segment

    seg = segment(t1w, t2w, affine)
    voxel = np.linalg.norm(affine[:3, :3], axis=0)
    pad = [int(np.ceil(PAD_MM / v)) for v in voxel]
    pads = [(p, p) for p in pad]
    brain = np.pad(seg.brain, pads)
    shift = np.eye(4)
    shift[:3, 3] = [-p for p in pad]
    new_affine = affine @ shift
    # Template mm per adult MNI mm: the layers shrink with the brain.
    size = float(np.mean(1.0 / np.diag(seg.to_mni)[:3]))
    outside = ndimage.distance_transform_edt(~brain, sampling=voxel).astype(np.float32)
    step = float(np.mean(voxel))

    # Only where the stripped image is empty: voxels the mask's opening dropped stay as they are.
    empty = ~brain & np.pad((np.asarray(t1w) == 0) & (np.asarray(t2w) == 0), pads, constant_values=True)
    csf, skull, scalp = (layer * empty for layer in anatomy.head_layers(outside, step, size))
    signals = _layer_signals(months, curves, protocol)
    out = []
    for contrast, data in (("T1w", t1w), ("T2w", t2w)):
        cortex = float(np.median(data[seg.fractions["gm"] > 0.5]))
        s = signals[contrast]
        head = np.pad(np.asarray(data, np.float32), pads)
        head += cortex * (s["csf"] * csf + s["skull"] * skull + s["scalp"] * scalp)
        out.append(head.astype(np.float32))
    return out[0], out[1], new_affine


def headed_template_files(folder: str | os.PathLike, months: int, out: str | os.PathLike,
                          curves: str = "calibrated") -> tuple[Path, Path]:
    """(T1w, T2w) NIfTI files in ``out`` of a template (headers corrected) inside a simulated head."""
    from kerasmyelin.io.infant_templates import corrected_image, template_file
    from kerasmyelin.io.nifti import write_nifti

    t1 = corrected_image(template_file(folder, months, "T1w"))
    t2 = corrected_image(template_file(folder, months, "T2w"))
    h1, h2, affine = with_simulated_head(np.asarray(t1.dataobj), np.asarray(t2.dataobj), t1.affine, months, curves)
    files = []
    for contrast, data in (("T1w", h1), ("T2w", h2)):
        path, _ = write_nifti(Path(out) / f"Template-Month{months}-head-{contrast}.nii.gz", data, affine)
        files.append(path)
    return files[0], files[1]
