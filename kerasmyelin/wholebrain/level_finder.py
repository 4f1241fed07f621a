"""Find the paper's five axial levels in a whole-brain scan by registration to MNI152.

Method
------
The five levels are defined once, as MNI152 landmarks (:data:`kerasmyelin.levels.LEVELS`).
To find them in a scan we align the scan's outline to the same outline in MNI space and carry
the landmarks back:

1. *Outline.* Whole-head scans: the head mask of :func:`kerasmyelin.data.prepare.head_mask`
   (bright voxels, specks opened away, holes filled slice by slice), which needs no tissue
   contrast and so works the same for T1w and T2w at any age, including the newborn's inverted
   contrast. Skull-stripped scans: the non-zero voxels. The reference is the head of the
   project's anatomy (MNI152 brain + extra-axial CSF + skull + scalp,
   :mod:`kerasmyelin.synth.anatomy`) or the MNI brain.
2. *Alignment.* A 9-parameter transform ``mni = S R (p - g) + q`` (three scales, three
   rotations, three translations; subject world mm -> MNI mm): first guess from moments
   (centroids, per-axis spread), then a coordinate search maximising the Dice overlap of the
   two outlines, sampled at the subject's own voxels (every ~4 mm), so a field of view that
   cuts the head off is compared only where it was imaged.
3. *Levels.* Each landmark is mapped back to the subject's world and its z read off; the
   slice is the nearest axial slice, as a radiographer would pick it.

Why registration rather than a learned slice finder: it needs no annotated training scans
(we have none that are real), it is contrast- and age-agnostic because it uses outlines only,
and its failure is visible (a low Dice, reported as ``fit.dice``). Its limit is anatomy that
differs from MNI's in shape, not just size and pose; docs/wholebrain.md measures that on the
real infant templates.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from kerasmyelin.atlas.alignment import coordinate_search
from kerasmyelin.errors import InputError
from kerasmyelin.levels import LEVELS
from kerasmyelin.synth.head_warp import rotation_matrix

REFERENCES = ("head", "cerebrum")
SWEEPS = 10  # coordinate-search sweeps per stage at most
REVERSAL_MARGIN = 0.03  # overlap gained by turning the outline that flags a reversed header


@dataclass(frozen=True)
class FinderConfig:
    """Level finder settings.

    Attributes:
        grid_mm: spacing of the subject points the overlap is measured on.
        rotate: fit rotations as well as scales and translations.
        head_threshold: head-mask threshold as a fraction of the 99th percentile.
        reversal_check_below: when the outline overlap is below this, the outline is also fitted
            turned 180 degrees about the vertical, to catch headers that reverse front and back
            (synthetic infants: median 0.957, lowest 0.917; the real templates as stored,
            whose headers do: 0.87-0.89).
    """

    grid_mm: float = 4.0
    rotate: bool = True
    head_threshold: float = 0.08
    reversal_check_below: float = 0.93


@dataclass
class LevelFit:
    """Where the five levels lie in one scan.

    Attributes:
        subject_to_mni: 4x4, subject world mm (RAS) -> MNI mm.
        z_mm: level key -> world z (mm) of the level's landmark in the subject.
        dice: overlap of the subject's outline with the aligned reference (0-1).
        reference: "head" or "cerebrum".
        rotation_deg: fitted rotations about x, y, z (degrees).
        scale: fitted scales (MNI mm per subject mm) along x, y, z.
        reversed_dice: the overlap with the outline turned 180 degrees about the vertical, where
            ``dice`` was low enough to check (``FinderConfig.reversal_check_below``); else None.
        reversed_to_mni: 4x4, subject world mm -> MNI mm as that turned fit reads it (None where
            not checked); :attr:`mni_alignment` picks the better of the two.
    """

    subject_to_mni: np.ndarray
    z_mm: dict[str, float]
    dice: float
    reference: str
    rotation_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)
    scale: tuple[float, float, float] = (1.0, 1.0, 1.0)
    landmarks_mm: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    reversed_dice: float | None = None
    reversed_to_mni: np.ndarray | None = None

    @property
    def looks_reversed(self) -> bool:
        """The outline fits clearly better turned front to back: the header likely reverses them."""
        return self.reversed_dice is not None and self.reversed_dice > self.dice + REVERSAL_MARGIN

    @property
    def mni_alignment(self) -> np.ndarray:
        """Subject world mm -> MNI mm as the anatomy lies: the turned fit where the header looks
        reversed. The levels keep ``subject_to_mni`` (their z barely differs: the turn is about
        the vertical); what lies in front of what, the ventricles' horns say, needs the turn."""
        return self.reversed_to_mni if self.looks_reversed else self.subject_to_mni

    def slices(self, affine: np.ndarray, n_slices: int, source=None) -> dict[str, int]:
        """Level key -> nearest axial slice of a volume whose axis 2 runs up (RAS canonical).

        Raises:
            InputError: a level more than half a slice outside the imaged slices, with how far.
        """
        inv = np.linalg.inv(np.asarray(affine, np.float64))
        out = {}
        for lv in LEVELS:
            k = float((inv @ np.array([*self.landmarks_mm[lv.key], 1.0]))[2])
            if k < -0.5 or k > n_slices - 0.5:
                side = "below" if k < 0 else "above"
                gap_mm = (-k if k < 0 else k - (n_slices - 1)) * abs(affine[2, 2])
                raise InputError(f"level {lv.key} ({lv.name}) lies {gap_mm:.0f} mm {side} the imaged slices: "
                                 f"the field of view misses it (or the level finder failed: outline overlap "
                                 f"{self.dice:.2f})", source)
            out[lv.key] = int(np.rint(k))
        return out

    def as_dict(self) -> dict:
        return {"reference": self.reference, "dice": round(float(self.dice), 4),
                "rotation_deg": [round(float(v), 2) for v in self.rotation_deg],
                "scale": [round(float(v), 4) for v in self.scale],
                "z_mm": {k: round(float(v), 2) for k, v in self.z_mm.items()},
                "reversed_dice": None if self.reversed_dice is None else round(float(self.reversed_dice), 4)}


_REFERENCES: dict[str, tuple[np.ndarray, np.ndarray]] = {}


def reference_mask(kind: str) -> tuple[np.ndarray, np.ndarray]:
    """(bool mask, diagonal 4x4 voxel -> MNI mm) of the ``"head"`` or ``"cerebrum"`` reference.

    Built once per process (the head takes ~4 s: it is the synthetic anatomy's); worker
    processes get the parent's copies through :func:`install_references`.
    """
    if kind not in REFERENCES:
        raise ValueError(f"reference must be one of {REFERENCES}, got {kind!r}")
    if kind not in _REFERENCES:
        if kind == "head":
            from kerasmyelin.synth.anatomy import build_anatomy

            anat = build_anatomy()
            total = sum(anat.fractions[t] for t in anat.fractions)
            mask, affine = total > 0.5, anat.affine
        else:
            from kerasmyelin.atlas.priors import load_mni_priors

            priors = load_mni_priors()
            mask, affine = priors.cerebrum, priors.affine
        mask = np.array(mask, bool)
        mask.setflags(write=False)
        _REFERENCES[kind] = (mask, np.asarray(affine, np.float64))
    return _REFERENCES[kind]


def install_references(references: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """Use reference masks built elsewhere (a worker process's initializer)."""
    for kind, (mask, affine) in references.items():
        mask = np.asarray(mask, bool)
        mask.setflags(write=False)
        _REFERENCES[kind] = (mask, np.asarray(affine, np.float64))


def looks_skull_stripped(volume: np.ndarray) -> bool:
    """True when at least 30% of the voxels are exactly the minimum: background set to zero.

    Magnitude images of a whole head have noise in the background; skull-stripped images (and
    templates) have an exact constant there.
    """
    v = np.asarray(volume)
    sample = v[::2, ::2, ::2] if v.size > 4_000_000 else v
    return bool(np.mean(sample == sample.min()) >= 0.30)


@dataclass
class Outline:
    """A scan's outline sampled every ~grid_mm.

    Attributes:
        points: (N, 3) world mm of the sample points (a regular grid, C order).
        inside: (N,) bool, inside the outline.
        shape: the sample grid's shape.
        spacing: the sample grid's spacing in mm per axis.
        skull_stripped: how the outline was made.
        step: voxel stride per axis of the sample grid (``volume[::step[0], ::step[1], ::step[2]]``).
    """

    points: np.ndarray
    inside: np.ndarray
    shape: tuple[int, int, int]
    spacing: np.ndarray
    skull_stripped: bool
    step: tuple[int, int, int] = (1, 1, 1)
    _distance: np.ndarray | None = field(default=None, repr=False, compare=False)

    def distance(self) -> np.ndarray:
        """(N,) distance (mm) of each point to the outline's boundary (computed once: the level
        finder and the input checks all ask for it). Read-only."""
        from scipy import ndimage

        if self._distance is None:
            sub = self.inside.reshape(self.shape)
            out = np.where(sub, ndimage.distance_transform_edt(sub, sampling=self.spacing),
                           ndimage.distance_transform_edt(~sub, sampling=self.spacing)).reshape(-1)
            out.setflags(write=False)
            self._distance = out
        return self._distance


def subject_outline(volume: np.ndarray, affine: np.ndarray, skull_stripped: bool,
                    config: FinderConfig = FinderConfig(), source=None) -> Outline:
    """The head (or, skull-stripped, the non-background) outline sampled every ~grid_mm."""
    from scipy import ndimage

    from kerasmyelin.data.prepare import fill_holes_per_slice, head_mask

    vox_mm = np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))
    step = np.maximum(1, np.round(config.grid_mm / vox_mm).astype(int))
    if skull_stripped:
        sub = np.asarray(volume[::step[0], ::step[1], ::step[2]]) > np.asarray(volume).min()
        sub = fill_holes_per_slice(ndimage.binary_opening(sub) if sub.sum() > 1000 else sub)
    else:
        # head_mask strides in-plane itself; thin slices are strided here.
        sub = head_mask(np.asarray(volume[:, :, ::step[2]]), config.head_threshold, int(step[0]))
        sub = sub[:, :: max(1, int(step[1] // step[0])) if step[1] > step[0] else 1, :]
    if sub.sum() < 50:
        raise InputError("no head found to align (the image is empty or nearly constant)", source)
    if skull_stripped:
        strides = tuple(int(v) for v in step)
    else:  # head_mask's in-plane stride, and the extra one taken along y above
        strides = (int(step[0]), int(step[0]) * (max(1, int(step[1] // step[0])) if step[1] > step[0] else 1),
                   int(step[2]))
    ijk = np.stack(np.meshgrid(*[np.arange(n) * s for n, s in zip(sub.shape, strides)], indexing="ij"), -1)
    world = ijk.reshape(-1, 3).astype(np.float64) @ np.asarray(affine, np.float64)[:3, :3].T + affine[:3, 3]
    return Outline(world, sub.reshape(-1), sub.shape, vox_mm * np.array(strides), bool(skull_stripped), strides)


def _matrix(params: np.ndarray, g: np.ndarray) -> np.ndarray:
    """params = (3 scales, 3 angles in degrees, 3 translations q) -> 4x4 world -> MNI."""
    # The simulator's pose convention (x, then y, then z), so fitted angles read like drawn ones.
    lin = np.diag(params[:3]) @ rotation_matrix(*params[3:6])
    out = np.eye(4)
    out[:3, :3] = lin
    out[:3, 3] = params[6:] - lin @ g
    return out


@dataclass(frozen=True)
class _Lookup:
    """A reference mask ready for the search: padded, flat, with its moments (built once)."""

    flat: np.ndarray
    limit: np.ndarray
    strides: np.ndarray
    rdiag: np.ndarray
    roff: np.ndarray
    mean: np.ndarray
    var: np.ndarray


_LOOKUPS: dict[str, _Lookup] = {}


def _lookup(kind: str) -> _Lookup:
    if kind not in _LOOKUPS:
        ref, raff = reference_mask(kind)
        rdiag, roff = np.diag(raff)[:3], raff[:3, 3]
        pts = np.argwhere(ref[::2, ::2, ::2]).astype(np.float64) * 2 * rdiag + roff
        # Padded with a False border so points mapped outside land on it.
        padded = np.pad(ref, 1)
        if padded.size >= 2 ** 24:  # _dice_function's float32 linear index would not be exact
            raise ValueError(f"reference mask {kind!r} too large: {padded.shape}")
        _LOOKUPS[kind] = _Lookup(padded.ravel(), np.array(padded.shape, np.int32) - 1,
                                 np.array([padded.shape[1] * padded.shape[2], padded.shape[2], 1], np.int32),
                                 rdiag, roff, pts.mean(axis=0), pts.var(axis=0))
    return _LOOKUPS[kind]


def _dice_function(ref: _Lookup, centred: np.ndarray, a: np.ndarray, deep: int):
    """Dice of the points ``centred`` (inside flags ``a``) plus ``deep`` points counted as overlapping."""
    n_a = int(a.sum()) + deep
    # Coordinates as (3, N) rows: each step below is one long contiguous loop (an (N, 3) layout
    # made the broadcast add and the 3x3 product the slowest steps), and the clip and the
    # linear index stay in float32, exact for indices below 2**24 (checked in _lookup).
    cols = np.ascontiguousarray(np.asarray(centred, np.float32).T)
    buf = np.empty_like(cols)
    hi = ref.limit.astype(np.float32)[:, None]
    strides = ref.strides.astype(np.float32)

    def dice(p: np.ndarray) -> float:
        m = _matrix(p, np.zeros(3))
        # Reference voxel (+1 for the padding) of every point, rounded as floor(x + 0.5).
        np.matmul((m[:3, :3] / ref.rdiag[:, None]).astype(np.float32), cols, out=buf)
        np.add(buf, ((m[:3, 3] - ref.roff) / ref.rdiag + 1.5).astype(np.float32)[:, None], out=buf)
        np.floor(buf, out=buf)
        np.maximum(buf, 0, out=buf)
        np.minimum(buf, hi, out=buf)
        b = ref.flat[(strides @ buf).astype(np.int32)]
        return 2.0 * (np.count_nonzero(b & a) + deep) / max(n_a + np.count_nonzero(b) + deep, 1)

    return dice


def align(points: np.ndarray, inside: np.ndarray, distance: np.ndarray, kind: str,
          config: FinderConfig = FinderConfig()) -> tuple[np.ndarray, float, np.ndarray]:
    """Fit ``mni = S R (p - g) + q`` by moments, then Dice coordinate search.

    Each search step only moves the outline by millimetres, so the overlap is counted in a
    band around the subject's boundary (``band_mm``, re-centred at every stage); points deeper
    inside count as overlapping and points farther out as outside, whatever the step. The Dice
    returned is recomputed exactly, on every point, at the final transform.

    Returns:
        (4x4 subject world -> MNI, final Dice, parameters: scales, angles in degrees, q).
    """
    ref = _lookup(kind)
    subj = points[inside]
    g = subj.mean(axis=0)
    scale = np.sqrt(ref.var / np.maximum(subj.var(axis=0), 1e-9))
    params = np.array([*scale, 0.0, 0.0, 0.0, *ref.mean])
    centred_all = (points - g).astype(np.float32)
    free = list(range(9)) if config.rotate else [0, 1, 2, 6, 7, 8]
    # Coarse stages see every 4th point and the last every 2nd (regular subsamples); a fourth,
    # finer stage at full density changed no level by a slice on the synthetic cohort
    # (benchmarks/bench_level_finder.py before and after) and cost a third more time.
    stages = ((0.04, 4.0, 4.0, 4, 40.0), (0.02, 2.0, 2.0, 4, 20.0), (0.01, 1.0, 1.0, 2, 10.0))
    for rel, deg, mm, stride, band_mm in stages:
        near = distance <= band_mm
        dice = _dice_function(ref, centred_all[near][::stride], inside[near][::stride],
                              int(np.count_nonzero(inside & ~near)) // stride)
        steps = np.array([rel * params[0], rel * params[1], rel * params[2], deg, deg, deg, mm, mm, mm])
        params, _ = coordinate_search(dice, params, dice(params), steps, free, SWEEPS)
    exact = _dice_function(ref, centred_all, inside, 0)(params)
    return _matrix(params, g), exact, params


def find_levels(volume: np.ndarray, affine: np.ndarray, *, skull_stripped: bool | None = None,
                config: FinderConfig = FinderConfig(), source=None, outline: Outline | None = None) -> LevelFit:
    """Locate levels a-e in one RAS-canonical volume (see the module docstring).

    Args:
        volume: (X, Y, Z) intensities, axis 2 up (``data.prepare.to_canonical``).
        affine: 4x4 voxel -> world mm.
        skull_stripped: None to decide from the background (:func:`looks_skull_stripped`).
        config: finder settings.
        source: file name for error messages.
        outline: the volume's :func:`subject_outline` if already made (with the same settings).
    """
    if outline is None or (skull_stripped is not None and outline.skull_stripped != skull_stripped):
        if skull_stripped is None:
            skull_stripped = looks_skull_stripped(volume)
        outline = subject_outline(volume, affine, skull_stripped, config, source)
    kind = "cerebrum" if outline.skull_stripped else "head"
    distance = outline.distance()
    matrix, dice, params = align(outline.points, outline.inside, distance, kind, config)
    reversed_dice = reversed_to_mni = None
    if dice < config.reversal_check_below:
        turn = np.diag([-1.0, -1.0, 1.0, 1.0])
        turned_to_mni, reversed_dice, _ = align(outline.points @ turn[:3, :3], outline.inside, distance, kind, config)
        reversed_to_mni = turned_to_mni @ turn
    inv = np.linalg.inv(matrix)
    landmarks = {lv.key: tuple(float(v) for v in (inv @ np.array([*lv.mni_landmark, 1.0]))[:3]) for lv in LEVELS}
    return LevelFit(subject_to_mni=matrix, z_mm={k: p[2] for k, p in landmarks.items()}, dice=dice,
                    reference=kind, rotation_deg=tuple(float(v) for v in params[3:6]),
                    scale=tuple(float(v) for v in params[:3]), landmarks_mm=landmarks,
                    reversed_dice=reversed_dice, reversed_to_mni=reversed_to_mni)
