"""Pulse sequences of the paper's two scanners, two 3-D research protocols, and their signals.

Clinical scanner settings are those of Wada et al. 2019 (``shared/reference/myelination.md``
section 3). The research protocols are 3-D MPRAGE T1w and 3-D variable-flip TSE (SPACE) T2w as
infant studies such as the Baby Connectome Project acquire them (Howell et al., NeuroImage
2019: 3 T MPRAGE TR/TI/TE 2400/1600/2.2 ms, flip 8 degrees; T2w SPACE TR 3200 ms), read as
5 mm axial reformats, the way the paper's five slices would be taken from them.

The signal equations are the textbook steady-state forms (Haacke et al., "Magnetic Resonance
Imaging: Physical Principles and Sequence Design", ch. 15-18) with perfect refocusing pulses and
no echo-train blurring; they set the contrast between tissues, which is what the model reads.
Two simplifications, both about contrast only:
- MPRAGE is an inversion recovery sampled at TI with a small flip angle; the saturation of the
  gradient-echo readout train, which shortens the apparent T1, is neglected.
- SPACE's variable-flip echo train refocuses stimulated echoes, so its contrast is that of a
  conventional TSE at a much shorter echo time (Busse et al., MRM 2006); it is modelled as a TSE
  at that equivalent echo time (``te``), not at the nominal 400-560 ms.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np


@dataclass(frozen=True)
class Sequence:
    """One acquisition's timing. Times in ms, flip angle in degrees."""

    kind: str  # "spin_echo" | "inversion_recovery" | "turbo_spin_echo" | "mprage" | "spoiled_gradient_echo"
    name: str
    tr: float
    te: float
    ti: float | None = None
    flip_angle: float = 90.0
    echo_train_length: int = 1
    averages: int = 1

    def signal(self, t1: np.ndarray, t2: np.ndarray, pd: np.ndarray) -> np.ndarray:
        """Magnitude signal (arbitrary units) of tissue with T1, T2 in ms and proton density."""
        e_tr = np.exp(-self.tr / t1)
        e_te = np.exp(-self.te / t2)
        if self.kind == "spin_echo":
            alpha = np.deg2rad(self.flip_angle)
            longitudinal = 1.0 - 2.0 * np.exp(-(self.tr - 0.5 * self.te) / t1) + e_tr
            s = pd * np.sin(alpha) * longitudinal / (1.0 + np.cos(alpha) * e_tr) * e_te
        elif self.kind == "inversion_recovery":
            s = pd * np.abs(1.0 - 2.0 * np.exp(-self.ti / t1) + e_tr) * e_te
        elif self.kind == "turbo_spin_echo":
            s = pd * (1.0 - e_tr) * e_te
        elif self.kind == "mprage":
            s = pd * np.sin(np.deg2rad(self.flip_angle)) * np.abs(1.0 - 2.0 * np.exp(-self.ti / t1) + e_tr) * e_te
        elif self.kind == "spoiled_gradient_echo":
            alpha = np.deg2rad(self.flip_angle)
            s = pd * np.sin(alpha) * (1.0 - e_tr) / (1.0 - np.cos(alpha) * e_tr) * e_te
        else:
            raise ValueError(f"unknown sequence kind {self.kind!r}")
        return np.asarray(s, dtype=np.float32)

    def scaled(self, tr: float = 1.0, te: float = 1.0, ti: float = 1.0) -> "Sequence":
        """The same sequence with its repetition, echo and inversion times multiplied."""
        ti_ms = None if self.ti is None else round(self.ti * ti, 1)
        if ti_ms is not None and ti_ms >= self.tr * tr:
            ti_ms = round(0.9 * self.tr * tr, 1)  # an inversion must come before the next one
        return replace(self, tr=round(self.tr * tr, 1), te=round(self.te * te, 2), ti=ti_ms)

    def sidecar(self) -> dict:
        """BIDS sidecar fields (seconds, as BIDS asks)."""
        out = {
            "PulseSequenceType": self.name,
            "RepetitionTime": self.tr / 1000.0,
            "EchoTime": self.te / 1000.0,
            "FlipAngle": self.flip_angle,
            "EchoTrainLength": self.echo_train_length,
            "NumberOfAverages": self.averages,
        }
        if self.ti is not None:
            out["InversionTime"] = self.ti / 1000.0
        return out


@dataclass(frozen=True)
class Scanner:
    """A scanner with its T1w and T2w protocols and its 2D stack geometry."""

    manufacturer: str
    model: str
    field_strength: float
    t1w: Sequence
    t2w: Sequence
    slice_thickness_mm: float
    slice_gap_mm: float
    recon_matrix: int
    acquired_matrix: int
    fov_mm: tuple[float, float]
    # Relative noise (sigma over mean brain signal) and bias-field amplitude: 3 T has more SNR
    # and a stronger receive-coil / B1 inhomogeneity than 1.5 T.
    noise_fraction: tuple[float, float]
    bias_amplitude: float
    acquisition: str = "2D"  # "3D": an isotropic volume, delivered as contiguous axial reformats

    def as_dict(self) -> dict:
        return asdict(self)


PHILIPS_ACHIEVA_3T = Scanner(
    manufacturer="Philips",
    model="Achieva",
    field_strength=3.0,
    t1w=Sequence("inversion_recovery", "turbo inversion recovery", tr=2155, te=10, ti=1000,
                 flip_angle=90, echo_train_length=4),
    t2w=Sequence("turbo_spin_echo", "turbo spin echo", tr=4000, te=80, echo_train_length=11, averages=2),
    slice_thickness_mm=5.0,
    slice_gap_mm=1.0,
    recon_matrix=512,
    acquired_matrix=256,
    fov_mm=(180.0, 230.0),
    noise_fraction=(0.025, 0.05),
    bias_amplitude=0.18,
)

SIEMENS_AVANTO_15T = Scanner(
    manufacturer="Siemens",
    model="Magnetom Avanto",
    field_strength=1.5,
    t1w=Sequence("spin_echo", "spin echo", tr=530, te=11, flip_angle=80),
    t2w=Sequence("turbo_spin_echo", "turbo spin echo", tr=4100, te=94, echo_train_length=9, averages=2),
    slice_thickness_mm=5.5,
    slice_gap_mm=1.1,
    recon_matrix=256,
    acquired_matrix=192,
    fov_mm=(200.0, 260.0),
    noise_fraction=(0.035, 0.06),
    bias_amplitude=0.08,
)

SCANNERS: dict[float, Scanner] = {3.0: PHILIPS_ACHIEVA_3T, 1.5: SIEMENS_AVANTO_15T}
"""The paper's clinical protocol at each field strength."""

# 3-D research protocols, reformatted to contiguous 5 mm axial slabs (no gap); lower noise than
# the 2-D stacks because each slab averages several 1 mm partitions.
SIEMENS_PRISMA_3T_RESEARCH = Scanner(
    manufacturer="Siemens",
    model="Prisma (3-D research protocol)",
    field_strength=3.0,
    t1w=Sequence("mprage", "MPRAGE", tr=2400, te=2.2, ti=1600, flip_angle=8),
    t2w=Sequence("turbo_spin_echo", "SPACE (TSE-equivalent echo time)", tr=3200, te=120, echo_train_length=250),
    slice_thickness_mm=5.0,
    slice_gap_mm=0.0,
    recon_matrix=256,
    acquired_matrix=256,
    fov_mm=(200.0, 256.0),
    noise_fraction=(0.01, 0.03),
    bias_amplitude=0.15,
    acquisition="3D",
)

SIEMENS_AVANTO_15T_RESEARCH = Scanner(
    manufacturer="Siemens",
    model="Magnetom Avanto (3-D research protocol)",
    field_strength=1.5,
    t1w=Sequence("mprage", "MPRAGE", tr=1900, te=3.0, ti=1100, flip_angle=15),
    t2w=Sequence("turbo_spin_echo", "SPACE (TSE-equivalent echo time)", tr=3500, te=140, echo_train_length=140),
    slice_thickness_mm=5.0,
    slice_gap_mm=0.0,
    recon_matrix=256,
    acquired_matrix=256,
    fov_mm=(200.0, 256.0),
    noise_fraction=(0.015, 0.04),
    bias_amplitude=0.08,
    acquisition="3D",
)

PROTOCOLS: dict[str, dict[float, Scanner]] = {
    "clinical": SCANNERS,
    "research3d": {3.0: SIEMENS_PRISMA_3T_RESEARCH, 1.5: SIEMENS_AVANTO_15T_RESEARCH},
}
"""Protocol family -> field strength -> scanner. "clinical" is the paper's."""


SEQUENCE_VARIANTS: dict[str, dict[str, dict[float, Sequence]]] = {
    # 3-D spoiled gradient echo T1w (IR-free SPGR/FLASH, as many infant studies and GE scanners
    # acquire it): flip above the Ernst angle of white matter, so T1 weighting without inversion.
    "spgr": {3.0: Sequence("spoiled_gradient_echo", "3-D SPGR", tr=9.0, te=3.5, flip_angle=12),
             1.5: Sequence("spoiled_gradient_echo", "3-D SPGR", tr=11.0, te=4.2, flip_angle=15)},
    # A conventional 2-D turbo spin echo T2w in a research session.
    "tse": {3.0: Sequence("turbo_spin_echo", "turbo spin echo", tr=6000, te=100, echo_train_length=15),
            1.5: Sequence("turbo_spin_echo", "turbo spin echo", tr=5000, te=100, echo_train_length=13)},
}
"""Alternative sequences of the research protocols: T1w "spgr" (for MPRAGE), T2w "tse" (for SPACE)."""
VARIANT_CONTRAST = {"spgr": "T1w", "tse": "T2w"}
SLICE_THICKNESS_RANGE_MM = (0.5, 8.0)
PIXEL_RANGE_MM = (0.3, 2.0)


def _regrid(scanner: Scanner, slice_thickness_mm: float, pixel_mm: float) -> Scanner:
    """The scanner with another slice thickness and in-plane pixel; noise follows the voxel.

    Thermal noise relative to signal grows as the voxel shrinks: with the square root of the
    slice thickness, and linearly with the acquired pixel's side (the same acquisition time).
    The change is capped at 3x either way, as sites trade time for SNR at the extremes.
    """
    lo, hi = SLICE_THICKNESS_RANGE_MM
    if slice_thickness_mm and not lo <= slice_thickness_mm <= hi:
        raise ValueError(f"slice thickness {slice_thickness_mm} mm is outside {lo}-{hi} mm")
    lo, hi = PIXEL_RANGE_MM
    if pixel_mm and not lo <= pixel_mm <= hi:
        raise ValueError(f"in-plane pixel {pixel_mm} mm is outside {lo}-{hi} mm")
    changes, noise = {}, 1.0
    if slice_thickness_mm:
        changes["slice_thickness_mm"] = float(slice_thickness_mm)
        changes["slice_gap_mm"] = 0.0 if scanner.acquisition == "3D" else round(0.2 * slice_thickness_mm, 2)
        noise *= np.sqrt(scanner.slice_thickness_mm / slice_thickness_mm)
    if pixel_mm:
        # pixel_mm is the acquired resolution; the reconstruction zero-fills as the scanner does
        # (Philips 2x), up to 512.
        fov = float(np.mean(scanner.fov_mm))
        acquired = 2 * max(32, int(round(fov / pixel_mm / 2)))
        recon = max(acquired, min(512, 2 * int(round(acquired * scanner.recon_matrix / scanner.acquired_matrix / 2))))
        changes["recon_matrix"], changes["acquired_matrix"] = recon, acquired
        noise *= acquired / scanner.acquired_matrix
    noise = float(np.clip(noise, 1 / 3, 3.0))
    if changes:
        changes["noise_fraction"] = tuple(round(n * noise, 4) for n in scanner.noise_fraction)
    return replace(scanner, **changes)


def scanner_for(protocol: str, field_strength: float, t1w_timing: tuple[float, float, float] = (1.0, 1.0, 1.0),
                t2w_timing: tuple[float, float, float] = (1.0, 1.0, 1.0), t1w_variant: str = "",
                t2w_variant: str = "", slice_thickness_mm: float = 0.0, pixel_mm: float = 0.0) -> Scanner:
    """The scanner of a protocol family at a field strength, its timings scaled (TR, TE, TI factors).

    Args:
        t1w_variant, t2w_variant: "" for the protocol's own sequence, or a name in
            :data:`SEQUENCE_VARIANTS` ("spgr" for T1w, "tse" for T2w); research protocols only.
        slice_thickness_mm, pixel_mm: 0 for the protocol's geometry, else the slice thickness
            (2-D stacks keep a 20% gap, 3-D reformats none) and the acquired in-plane resolution.
    """
    try:
        scanner = PROTOCOLS[protocol][float(field_strength)]
    except KeyError:
        raise ValueError(f"no {protocol!r} protocol at {field_strength} T; protocols: {sorted(PROTOCOLS)}") from None
    for contrast, variant in (("T1w", t1w_variant), ("T2w", t2w_variant)):
        if not variant:
            continue
        if VARIANT_CONTRAST.get(variant) != contrast:
            names = [n for n, c in VARIANT_CONTRAST.items() if c == contrast]
            raise ValueError(f"unknown {contrast} sequence variant {variant!r}; known: {names}")
        if protocol != "research3d":
            raise ValueError(f"sequence variants apply to the research3d protocol, not {protocol!r}")
        scanner = replace(scanner, **{contrast.lower(): SEQUENCE_VARIANTS[variant][float(field_strength)]})
    if slice_thickness_mm or pixel_mm:
        scanner = _regrid(scanner, slice_thickness_mm, pixel_mm)
    if tuple(t1w_timing) == (1.0, 1.0, 1.0) and tuple(t2w_timing) == (1.0, 1.0, 1.0):
        return scanner
    return replace(scanner, t1w=scanner.t1w.scaled(*t1w_timing), t2w=scanner.t2w.scaled(*t2w_timing))
