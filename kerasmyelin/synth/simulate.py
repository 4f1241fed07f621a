"""Scan one synthetic infant: tissue -> signal -> head pose -> 2D clinical stack -> k-space.

The steps follow a real acquisition: relaxation times of each tissue at the infant's
maturation, the scanner's signal equations, the brain scaled to the infant's size with a smooth
individual deformation, placed in the scanner with its own pose, sampled as thick axial slices
(slice-profile partial volume), Fourier-encoded at the acquired matrix with mild motion ghosting
along the phase-encoding direction, complex Gaussian noise (Rician in the magnitude), zero-filled
to the reconstruction matrix, then a smooth receive-coil bias and the scanner's intensity
scaling.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import scipy.fft
from scipy import ndimage

from kerasmyelin.levels import LEVELS
from kerasmyelin.synth.cohort import SubjectSpec
from kerasmyelin.synth.curves import curves_for
from kerasmyelin.synth.maturation import grey_matter_times, white_matter_times
from kerasmyelin.synth.relaxation import (
    CONSTANT_TISSUES,
    SCALP_FAT_FRACTION,
    tissue_parameters,
)
from kerasmyelin.synth.sequences import PROTOCOLS, Scanner, Sequence
from kerasmyelin.synth.tissue_model import MNI_BRAIN_ML, TissueModel, tissue_model


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


def warm_up(res_mm: float = 1.5, anatomies=(("mni", ""),)) -> None:
    """Load or build the shared tissue models now (before forking workers).

    Args:
        anatomies: (anatomy name, template folder) pairs the cohort uses (``SubjectSpec.anatomy``,
            ``SubjectSpec.template_root``).
    """
    for name, root in anatomies:
        tissue_model(res_mm, name, root)
        for scanner in PROTOCOLS["clinical"].values():
            for seq in (scanner.t1w, scanner.t2w):
                _constant_tissue_signal(res_mm, scanner.field_strength, seq, name, root)
        skull_strip_mask(res_mm, name, root)


def subject_tissue_model(spec: SubjectSpec, res_mm: float = 1.5) -> TissueModel:
    """The tissue model (anatomy) this infant is built on."""
    return tissue_model(res_mm, spec.anatomy, spec.template_root)


def rotation_matrix(pitch_deg: float, roll_deg: float, yaw_deg: float) -> np.ndarray:
    """Rotation about x (nodding), then y (tilting to a shoulder), then z (turning)."""
    a, b, c = np.deg2rad([pitch_deg, roll_deg, yaw_deg])
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


class _Warp:
    """Subject (scanner) space <-> MNI space: pose, size and a smooth individual deformation."""

    def __init__(self, spec: SubjectSpec, centre_mni: np.ndarray, rng: np.random.Generator,
                 brain_ml: float = MNI_BRAIN_ML, proportions=(1.0, 1.0, 1.0)):
        size = (spec.brain_volume_ml / brain_ml) ** (1 / 3)
        # The anatomy's own proportions (an infant scaffold's), then the infant's own.
        self.scale = (size * np.asarray(spec.scale_anisotropy, dtype=np.float64)
                      * np.asarray(proportions, dtype=np.float64))
        self.rotation = rotation_matrix(*spec.rotation_deg)
        self.translation = np.asarray(spec.translation_mm, dtype=np.float64)
        self.centre = centre_mni
        # Three plane waves of displacement, 60-140 mm wavelength, ~2 mm (MNI mm) each.
        k = rng.normal(size=(3, 3))
        k *= (2 * np.pi / rng.uniform(60, 140, 3) / np.linalg.norm(k, axis=1))[:, None]
        self.wave_vectors = k
        self.wave_phase = rng.uniform(0, 2 * np.pi, 3)
        direction = rng.normal(size=(3, 3))
        self.wave_amplitude = direction / np.linalg.norm(direction, axis=1)[:, None] * rng.uniform(1.0, 2.5, 3)[:, None]

    def displacement(self, u: np.ndarray) -> np.ndarray:
        """MNI-mm displacement at body-frame points u of shape (3, ...)."""
        out = np.zeros_like(u)
        for k, phi, amp in zip(self.wave_vectors, self.wave_phase, self.wave_amplitude):
            s = np.sin(np.tensordot(k.astype(u.dtype), u, axes=1) + phi)
            out += amp.astype(u.dtype).reshape((3,) + (1,) * (u.ndim - 1)) * s
        return out

    def grid_to_mni(self, xs: np.ndarray, ys: np.ndarray, zs: np.ndarray) -> np.ndarray:
        """MNI mm (3, X, Y, Z) of the scanner grid spanned by 1-D axes xs, ys, zs (float32).

        Every step is linear in the three axes, so it is done by broadcasting 1-D arrays; only
        the outputs are full grids.
        """
        f32 = np.float32
        axes = (xs[:, None, None] - f32(self.translation[0]), ys[None, :, None] - f32(self.translation[1]),
                zs[None, None, :] - f32(self.translation[2]))

        def linear(coeffs):
            return sum(f32(c) * a for c, a in zip(coeffs, axes))

        rt = self.rotation.T
        out = np.stack([linear(rt[c]) / f32(self.scale[c]) + f32(self.centre[c]) for c in range(3)])
        for k, phi, amp in zip(self.wave_vectors, self.wave_phase, self.wave_amplitude):
            # k . u with u = R^T (w - t) equals (R k) . (w - t).
            s = np.sin(linear(self.rotation @ k) + f32(phi))
            for c in range(3):
                out[c] += f32(amp[c]) * s
        return out

    def to_mni(self, world: np.ndarray) -> np.ndarray:
        """Scanner mm (3, ...) -> MNI mm (3, ...)."""
        shape = world.shape
        w = world.reshape(3, -1) - self.translation[:, None].astype(world.dtype)
        u = (self.rotation.T.astype(world.dtype) @ w).reshape(shape)
        scale = self.scale.astype(world.dtype).reshape((3,) + (1,) * (len(shape) - 1))
        centre = self.centre.astype(world.dtype).reshape(scale.shape)
        return u / scale + centre + self.displacement(u)

    def to_world(self, mni: np.ndarray, iterations: int = 8) -> np.ndarray:
        """MNI mm (3, N) -> scanner mm (3, N), inverting the deformation by fixed point."""
        mni = np.asarray(mni, dtype=np.float64)
        u = self.scale[:, None] * (mni - self.centre[:, None])
        for _ in range(iterations):
            u = self.scale[:, None] * (mni - self.centre[:, None] - self.displacement(u))
        return self.rotation @ u + self.translation[:, None]


def _signal_volumes(anat: TissueModel, spec: SubjectSpec, scanner: Scanner, rng) -> list[np.ndarray]:
    """Noise-free T1w and T2w signal on the anatomy grid for this infant's maturation."""
    curves = curves_for(spec.tissue_curves)
    k1, k2 = anat.speeds(curves)
    coords = anat.wm_coords
    m = np.float32(spec.myelination_age_months)
    # The infant's own smooth regional deviations from the typical timing.
    k = rng.normal(size=(2, 3))
    k *= (2 * np.pi / rng.uniform(50, 120, 2) / np.linalg.norm(k, axis=1))[:, None]
    jitter = sum(np.cos(kk.astype(np.float32) @ coords + rng.uniform(0, 2 * np.pi)) for kk in k)
    jitter = np.float32(spec.regional_jitter_months / np.sqrt(2) * rng.normal(1.0, 0.3)) * jitter
    fs = scanner.field_strength
    wm_params = tissue_parameters("wm", fs, *white_matter_times(m - jitter, k1, k2, curves), curves)
    gm_params = tissue_parameters("gm", fs, *grey_matter_times(m, curves), curves)
    f = anat.fractions
    f_wm = f["wm"].ravel()[anat.wm_index]
    out = []
    for seq in (scanner.t1w, scanner.t2w):
        vol = f["gm"] * seq.signal(*gm_params)
        vol += _constant_tissue_signal(anat.res_mm, fs, seq, spec.anatomy, spec.template_root)
        vol.ravel()[anat.wm_index] += f_wm * seq.signal(*wm_params)
        out.append(vol)
    return out


def constant_tissue_signals(field_strength: float, seq: Sequence) -> dict[str, float]:
    """Signal of each tissue that does not mature (CSF, skull, fat, muscle, and the scalp's mix)."""
    tissues = CONSTANT_TISSUES[field_strength]
    const = {name: float(seq.signal(*(np.float32(v) for v in tissues[name]))) for name in tissues}
    const["scalp"] = SCALP_FAT_FRACTION * const["fat"] + (1 - SCALP_FAT_FRACTION) * const["muscle"]
    return const


@functools.lru_cache(maxsize=16)
def _constant_tissue_signal(res_mm: float, field_strength: float, seq: Sequence, anatomy: str = "mni",
                            templates: str = "") -> np.ndarray:
    """Signal of the tissues that do not mature (CSF, skull, scalp): the same for every infant
    of one anatomy scanned with the same sequence."""
    anat = tissue_model(res_mm, anatomy, templates)
    const = constant_tissue_signals(field_strength, seq)
    vol = np.zeros(anat.shape, np.float32)
    for name in ("csf", "skull", "scalp"):
        vol += anat.fractions[name] * np.float32(const[name])
    vol.flags.writeable = False
    return vol


@functools.lru_cache(maxsize=8)
def skull_strip_mask(res_mm: float = 1.5, anatomy: str = "mni", templates: str = "") -> np.ndarray:
    """What a skull-stripping tool keeps on the anatomy grid: the brain with its ventricles and
    sulcal CSF, without skull, scalp and most of the CSF outside the brain (float32 0/1)."""
    anat = tissue_model(res_mm, anatomy, templates)
    brain = anat.fractions["wm"] + anat.fractions["gm"] > 0.5
    # Closing over ~6 mm takes in the sulci and the ventricles' openings (the atria reach the
    # surface through the choroidal fissure); filling, in 3-D and slice by slice, the ventricles.
    r = max(1, int(round(6.0 / res_mm)))
    ball = np.sum(np.square(np.mgrid[-r:r + 1, -r:r + 1, -r:r + 1]), axis=0) <= r * r
    brain = ndimage.binary_closing(np.pad(brain, r), ball)[r:-r, r:-r, r:-r]
    brain = ndimage.binary_fill_holes(brain)
    for z in range(brain.shape[2]):
        brain[:, :, z] = ndimage.binary_fill_holes(brain[:, :, z])
    mask = brain.astype(np.float32)
    mask.flags.writeable = False
    return mask


def _slab_kernel(width_vox: float) -> np.ndarray:
    """A box of fractional width (in voxels) with its ends weighted by the part they cover."""
    half = width_vox / 2.0
    n = int(np.ceil(half - 0.5))
    x = np.arange(-n, n + 1, dtype=np.float64)
    w = np.clip(np.minimum(x + 0.5, half) - np.maximum(x - 0.5, -half), 0, 1)
    return (w / w.sum()).astype(np.float32)


def _zero_fill(k: np.ndarray, size: int) -> np.ndarray:
    """Centre an (n, n, ...) unshifted k-space in a (size, size, ...) one (n even, size >= n)."""
    n = k.shape[0]
    if n == size:
        return k
    big = np.zeros((size, size) + k.shape[2:], dtype=k.dtype)
    h = n // 2
    big[:h, :h], big[:h, -h:], big[-h:, :h], big[-h:, -h:] = k[:h, :h], k[:h, -h:], k[-h:, :h], k[-h:, -h:]
    return big


def _zero_filled_ifft2(k: np.ndarray, size: int) -> np.ndarray:
    """``ifft2(_zero_fill(k, size))`` (orthonormal) without transforming the rows known to be zero.

    The first pass runs only over the n columns that hold data, a quarter less work than the
    full 2-D transform of the zero-filled matrix.
    """
    n = k.shape[0]
    h = n // 2
    a = np.zeros((size, n) + k.shape[2:], dtype=k.dtype)
    a[:h], a[-h:] = k[:h], k[-h:]
    a = scipy.fft.ifft(a, axis=0, norm="ortho", overwrite_x=True)
    b = np.zeros((size, size) + k.shape[2:], dtype=k.dtype)
    b[:, :h], b[:, -h:] = a[:, :h], a[:, -h:]
    return scipy.fft.ifft(b, axis=1, norm="ortho", overwrite_x=True)


def _kspace_reconstruct(image: np.ndarray, acquired: int, recon: int, noise_sigma: float, ghost_phase: float,
                        rng: np.random.Generator) -> np.ndarray:
    """Encode (n, n, Z) slices, bring them to the acquired matrix, corrupt, zero-fill, magnitude.

    Args:
        image: noise-free slices sampled on an n x n grid over the field of view.
        acquired: the acquired matrix (k-space lines actually measured).
        recon: the reconstruction matrix (zero-filled).
        noise_sigma: standard deviation of the complex noise, in image units at ``acquired``.
        ghost_phase: phase error (radians) of every other phase-encoding line; 0 for none.
    """
    n = image.shape[0]
    k = scipy.fft.fft2(image, axes=(0, 1), norm="ortho")  # float32 in, complex64 out
    k = _zero_fill(k, acquired)
    k *= np.float32(acquired / n)  # the orthonormal transform's scale for the larger matrix
    if ghost_phase:
        # Periodic motion: alternate phase-encoding lines (axis 1, antero-posterior) carry a
        # phase error, which puts a faint copy of the head half a field of view away.
        k[:, 1::2, :] *= np.complex64(np.exp(1j * ghost_phase))
    # Thermal noise. Each image pixel sums every k-space sample, so its noise is Gaussian
    # whatever the per-sample distribution (central limit over n^2 samples); uniform samples
    # of the same variance are 4x cheaper to draw than normal ones.
    noise = rng.random(2 * k.size, dtype=np.float32).view(np.complex64).reshape(k.shape)
    noise -= np.complex64(0.5 + 0.5j)
    noise *= np.float32(noise_sigma * np.sqrt(12.0))
    k += noise
    out = np.abs(_zero_filled_ifft2(k, recon))
    out *= np.float32(recon / acquired)
    return out


def _band_limited_resample(image: np.ndarray, acquired: int, recon: int) -> np.ndarray:
    """``image`` brought to the reconstruction grid the way ``_kspace_reconstruct`` brings the
    signal there (same zero-filling, so the same positions), without noise or ghosting."""
    n = image.shape[0]
    k = _zero_fill(scipy.fft.fft2(image, axes=(0, 1), norm="ortho"), acquired)
    return np.real(_zero_filled_ifft2(k, recon)) * np.float32(recon / n)


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
    warp = _Warp(spec, centre_mni=bbox.mean(axis=0), rng=rng, brain_ml=anat.brain_ml, proportions=anat.proportions)
    signals = _signal_volumes(anat, spec, scanner, rng)
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
    kernel = _slab_kernel(width_vox)
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
        recon.append(_kspace_reconstruct(img, scanner.acquired_matrix, scanner.recon_matrix, sigma, ghost, rng))
    if spec.smoothing_fwhm_mm:
        sigma_px = spec.smoothing_fwhm_mm / np.sqrt(8 * np.log(2)) / (fov / scanner.recon_matrix)
        recon = [ndimage.gaussian_filter(img, (sigma_px, sigma_px, 0)) for img in recon]
    if strip is not None:
        keep = _band_limited_resample(strip, scanner.acquired_matrix, scanner.recon_matrix) > 0.5
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
