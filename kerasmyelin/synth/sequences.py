"""Pulse sequences of the paper's two scanners and their signal equations.

Scanner settings are those of Wada et al. 2019 (``shared/reference/myelination.md`` section 3).
The signal equations are the textbook steady-state forms (Haacke et al., "Magnetic Resonance
Imaging: Physical Principles and Sequence Design", ch. 15-18) with perfect refocusing pulses and
no echo-train blurring; they set the contrast between tissues, which is what the model reads.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Sequence:
    """One acquisition's timing. Times in ms, flip angle in degrees."""

    kind: str  # "spin_echo" | "inversion_recovery" | "turbo_spin_echo"
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
        else:
            raise ValueError(f"unknown sequence kind {self.kind!r}")
        return np.asarray(s, dtype=np.float32)

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
