"""Scan one synthetic infant: tissue -> signal -> head pose -> 2D clinical stack -> k-space.

The steps follow a real acquisition: relaxation times of each tissue at the infant's
maturation, the scanner's signal equations, the brain scaled to the infant's size with a smooth
individual deformation, placed in the scanner with its own pose, sampled as thick axial slices
(slice-profile partial volume), Fourier-encoded at the acquired matrix with mild motion ghosting
along the phase-encoding direction, complex Gaussian noise (Rician in the magnitude), zero-filled
to the reconstruction matrix, then a smooth receive-coil bias and the scanner's intensity
scaling. The signal is ``synth.tissue_signal``'s, the pose ``synth.head_warp``'s and the encoding
``synth.acquisition``'s; this module plans the stack and assembles the infant's scan.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from kerasmyelin.levels import LEVELS
from kerasmyelin.synth.acquisition import band_limited_resample, kspace_reconstruct, slab_kernel
from kerasmyelin.synth.cohort import SubjectSpec
from kerasmyelin.synth.head_warp import Warp
from kerasmyelin.synth.tissue_signal import signal_volumes, skull_strip_mask, subject_tissue_model


@dataclass
class Scan:
    """One simulated acquisition of both contrasts on one grid.

    Attributes:
        t1w, t2w: (X, Y, Z) int16 magnitude images; axis 2 is the slice axis.
        affine: 4x4 voxel -> scanner RAS mm (shared by both contrasts).
        level_slices: level key -> index of the slice through that level's landmark.
        nuisance: the random acquisition effects that were drawn (recorded as ground truth).
        truth: only with ``with_truth``: noise-free signals and tissue fractions on the
            sampling grid (before k-space zero-filling), keyed "t1w", "t2w", "wm", "gm", "csf".
    """

    t1w: np.ndarray
    t2w: np.ndarray
    affine: np.ndarray
    level_slices: dict[str, int]
    nuisance: dict
    truth: dict | None = None


def _sample_percentile(a: np.ndarray, q: float) -> float:
    """Percentile of a strided subsample: the same answer to a fraction of a per cent, faster."""
    return float(np.percentile(a.ravel()[::7], q))


def simulate_subject(spec: SubjectSpec, *, res_mm: float = 1.5, with_truth: bool = False) -> Scan:
    """Simulate the T1w and T2w clinical stacks of one infant.

    Args:
        spec: the infant (from ``cohort.draw_cohort``).
        res_mm: resolution of the reference anatomy in adult-MNI mm.
        with_truth: also return noise-free signals and tissue fractions (for validation).

    Returns:
        A ``Scan``: int16 volumes of shape (recon, recon, slices) in RAS voxel order.
    """
    anat = subject_tissue_model(spec, res_mm)
    scanner = spec.scanner
    rng = np.random.default_rng(spec.seed)
    bbox = anat.head_bbox_mm
    warp = Warp(spec, centre_mni=bbox.mean(axis=0), rng=rng, brain_ml=anat.brain_ml, proportions=anat.proportions)
    signals = signal_volumes(anat, spec, scanner, rng)
    if spec.skull_stripped:
        # Stripped after reconstruction, like a real tool; the mask is resampled with the signal.
        signals.append(skull_strip_mask(res_mm, spec.anatomy, spec.template_root))

    # Stack planning, as a technologist would: cover the head, field of view to fit.
    corners = np.array(np.meshgrid(*bbox.T, indexing="ij")).reshape(3, -1)
    corners_world = warp.to_world(corners)
    lo, hi = corners_world.min(axis=1), corners_world.max(axis=1)
    # The bounding box of a rotated box overstates the head; the head is ~85% of it.
    extent = 0.85 * (hi - lo)
    centre = 0.5 * (lo + hi)
    spacing = scanner.slice_thickness_mm + scanner.slice_gap_mm
    n_slices = int(np.ceil((extent[2] + 6.0) / spacing))
    z0 = centre[2] - 0.5 * (n_slices - 1) * spacing
    fov_lo, fov_hi = scanner.fov_mm
    fov = float(np.clip(max(extent[0], extent[1]) * rng.uniform(1.1, 1.3), fov_lo, fov_hi))
    fov = round(fov / 5.0) * 5.0
    xc, yc = centre[0] + rng.normal(0, 3), centre[1] + rng.normal(0, 3)

    # Thick-slice partial volume: average through the slice profile before sampling. The
    # stack is within ~15 degrees of the template's axial plane, so the profile is applied
    # along the template's z axis, in template voxels.
    width_vox = scanner.slice_thickness_mm / (warp.scale[2] * anat.res_mm)
    kernel = slab_kernel(width_vox)
    signals = [ndimage.convolve1d(s, kernel, axis=2, mode="constant") for s in signals]

    # The object holds no detail finer than the anatomy grid (res_mm x the infant's size), so it
    # is sampled no finer than that; k-space zero-filling brings it to the acquired matrix,
    # where the noise is added, exactly as sampling finer would (band-limited object).
    voxel_mm = anat.res_mm * float(warp.scale.min())
    n_sample = min(scanner.acquired_matrix, 2 * int(np.ceil(fov / voxel_mm / 2)))
    step = fov / n_sample
    xs = (xc - fov / 2 + (np.arange(n_sample) + 0.5) * step).astype(np.float32)
    ys = (yc - fov / 2 + (np.arange(n_sample) + 0.5) * step).astype(np.float32)
    zs = (z0 + np.arange(n_slices) * spacing).astype(np.float32)
    mni = warp.grid_to_mni(xs, ys, zs)
    vox = (mni - anat.affine[:3, 3].astype(np.float32).reshape(3, 1, 1, 1)) / np.float32(anat.res_mm)
    # Only the in-plane rectangle whose points fall on the head needs interpolating.
    lo_vox = (bbox[0] - anat.affine[:3, 3]) / anat.res_mm
    hi_vox = (bbox[1] - anat.affine[:3, 3]) / anat.res_mm
    inside = np.all((vox >= lo_vox.reshape(3, 1, 1, 1)) & (vox <= hi_vox.reshape(3, 1, 1, 1)), axis=0)
    head = inside.any(axis=2)
    rows, cols = np.nonzero(head.any(axis=1))[0], np.nonzero(head.any(axis=0))[0]
    window = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    images = []
    for s in signals:
        img = np.zeros(vox.shape[1:], np.float32)
        img[window] = ndimage.map_coordinates(s, vox[(slice(None),) + window], order=1, prefilter=False)
        images.append(img)
    strip = images.pop() if spec.skull_stripped else None

    # Receive-coil bias: smooth, a few per cent at 1.5 T, up to ~20% at 3 T.
    kb = rng.normal(size=(2, 3))
    kb *= (2 * np.pi / rng.uniform(200, 400, 2) / np.linalg.norm(kb, axis=1))[:, None]
    bias_shape = sum(np.cos(kk[0] * xs[:, None, None] + kk[1] * ys[None, :, None] + kk[2] * zs[None, None, :]
                            + np.float32(rng.uniform(0, 2 * np.pi))) for kk in kb.astype(np.float32)) / 2.0
    bias = np.exp(np.float32(scanner.bias_amplitude * rng.uniform(0.5, 1.0)) * bias_shape)

    brain = None
    recon = []
    noise_fraction = float(rng.uniform(*scanner.noise_fraction))
    ghost = float(rng.uniform(0.15, 0.35)) if spec.motion else 0.0
    for img in images:
        img = img * bias
        if brain is None:
            brain = img > _sample_percentile(img, 60)
        sigma = noise_fraction * float(img[brain].mean())
        recon.append(kspace_reconstruct(img, scanner.acquired_matrix, scanner.recon_matrix, sigma, ghost, rng))
    if spec.smoothing_fwhm_mm:
        sigma_px = spec.smoothing_fwhm_mm / np.sqrt(8 * np.log(2)) / (fov / scanner.recon_matrix)
        recon = [ndimage.gaussian_filter(img, (sigma_px, sigma_px, 0)) for img in recon]
    if strip is not None:
        keep = band_limited_resample(strip, scanner.acquired_matrix, scanner.recon_matrix) > 0.5
        for img in recon:
            img *= keep
    volumes = []
    gains = []
    for img in recon:
        # Scanner-dependent integer scaling of the stored magnitude image.
        target = rng.uniform(1500, 4000) if scanner.manufacturer == "Philips" else rng.uniform(400, 1200)
        gain = target / max(_sample_percentile(img, 99.9), 1e-6)
        img *= np.float32(gain)
        np.rint(img, out=img)
        np.clip(img, 0, 32767, out=img)
        # Fortran order is NIfTI's on-disk order: the writer then needs no transposing copy.
        stored = np.empty(img.shape, dtype=np.int16, order="F")
        stored[...] = img
        volumes.append(stored)
        gains.append(round(gain, 6))

    pixel = fov / scanner.recon_matrix
    affine = np.diag([pixel, pixel, spacing, 1.0])
    # Zero-filling keeps the first sample's position: it is the origin of the finer grid too.
    affine[:3, 3] = [xs[0], ys[0], z0]

    landmarks = warp.to_world(np.array([lv.mni_landmark for lv in LEVELS]).T)
    level_slices = {lv.key: int(np.clip(np.rint((landmarks[2, i] - z0) / spacing), 0, n_slices - 1))
                    for i, lv in enumerate(LEVELS)}
    nuisance = {
        "field_of_view_mm": fov,
        "slices": n_slices,
        "scale": [round(float(s), 4) for s in warp.scale],
        "noise_fraction": round(noise_fraction, 4),
        "ghost_phase_rad": round(ghost, 4),
        "intensity_gain": gains,
        "level_landmark_z_mm": {lv.key: round(float(landmarks[2, i]), 2) for i, lv in enumerate(LEVELS)},
    }
    truth = None
    if with_truth:
        truth = {"t1w": images[0], "t2w": images[1]}
        for name in ("wm", "gm", "csf"):
            blurred = ndimage.convolve1d(anat.fractions[name], kernel, axis=2, mode="constant")
            truth[name] = np.zeros(vox.shape[1:], np.float32)
            truth[name][window] = ndimage.map_coordinates(blurred, vox[(slice(None),) + window], order=1,
                                                          prefilter=False)
    return Scan(volumes[0], volumes[1], affine, level_slices, nuisance, truth)
