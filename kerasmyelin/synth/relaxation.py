"""Relaxation times and proton density of infant brain tissue as they change with age.

Neonatal and adult values are those of ``shared/reference/myelination.md`` section 2 (FaBiAN
tables after Hagmann 2009, Nossin-Manor 2013, Yarnykh 2018; adult white matter Breger 1989 at
1.5 T, Wansapura 1999 at 3 T). Between the two, each quantity follows a mono-exponential in the
tissue's own maturation time (Leppert, JMRI 2009; Deoni, NeuroImage 2012). The time constants
are ours: T1 falls faster than T2, and T2 keeps falling for years.

Proton density follows water content: about 88% in neonatal white matter, 71% in adult white
matter, 89% and 83% in cortex (Dobbing & Sands 1973, Barkovich 2000).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FIELD_STRENGTHS: tuple[float, ...] = (1.5, 3.0)


@dataclass(frozen=True)
class TissueRelaxation:
    """Neonatal and adult values of one tissue at one field strength (times in ms)."""

    t1_neonatal: float
    t1_adult: float
    t2_neonatal: float
    t2_adult: float
    pd_neonatal: float
    pd_adult: float


# Months: the e-folding times of the approach from neonatal to adult values, (T1, T2, PD).
# Cortex changes less and more slowly than white matter (Deoni 2012; Leppert 2009).
TAU_MONTHS = {"wm": (5.0, 9.0, 9.0), "gm": (12.0, 15.0, 15.0)}
# Smoothing width (months) of the onset of a region's maturation (a softplus knee).
ONSET_WIDTH_MONTHS = 1.0

_WHITE = {
    1.5: TissueRelaxation(3000, 650, 232, 90, 0.88, 0.71),
    3.0: TissueRelaxation(3300, 830, 232, 80, 0.88, 0.71),
}
_GREY = {
    1.5: TissueRelaxation(2000, 900, 162, 110, 0.89, 0.83),
    3.0: TissueRelaxation(2500, 1330, 162, 90, 0.89, 0.83),
}
# Constant tissues: (T1, T2, PD). Skull: thin infant bone with red marrow, a short-T2, low
# proton density tissue. Scalp: subcutaneous fat and skin/muscle (fat and muscle values after
# Gold et al., AJR 2004;183:343, and de Bazelaire et al., Radiology 2004;230:652).
CONSTANT_TISSUES = {
    1.5: {"csf": (4000.0, 2000.0, 1.0), "skull": (600.0, 25.0, 0.25),
          "fat": (290.0, 80.0, 0.9), "muscle": (1000.0, 44.0, 0.75)},
    3.0: {"csf": (4400.0, 2000.0, 1.0), "skull": (750.0, 22.0, 0.25),
          "fat": (380.0, 70.0, 0.9), "muscle": (1400.0, 40.0, 0.75)},
}
# Share of the scalp layer that is fat (the rest is skin and muscle).
SCALP_FAT_FRACTION = 0.4


def check_field_strength(field_strength: float) -> float:
    """Return the field strength as a float, or raise ValueError naming the accepted ones."""
    fs = float(field_strength)
    if fs not in FIELD_STRENGTHS:
        raise ValueError(f"unknown field strength {field_strength!r} T; expected one of {FIELD_STRENGTHS}")
    return fs


def softplus(x: np.ndarray, width: float = ONSET_WIDTH_MONTHS) -> np.ndarray:
    """A smooth max(x, 0) with a knee ``width`` wide; overflow-safe."""
    x = np.asarray(x, dtype=np.float32)
    return (width * np.logaddexp(0.0, x / width)).astype(np.float32)


def _approach(neonatal: float, adult: float, maturity: np.ndarray, tau: float) -> np.ndarray:
    return (adult + (neonatal - adult) * np.exp(-maturity / tau)).astype(np.float32)


@dataclass(frozen=True)
class TissueCurves:
    """Everything that sets how white and grey matter relax with age: one set of tissue curves.

    ``PUBLISHED`` holds the literature values above. ``synth.curves`` reads a calibrated set (fitted
    to real infant templates by ``validation.calibration``) from a JSON file. Frozen and hashable,
    so that the maturation speeds solved for a set are cached per set.

    Attributes:
        name: what the set is called in truth files ("published", "calibrated", a file's stem).
        white, grey: field strength (T) -> neonatal and adult values, as ``((fs, TissueRelaxation), ...)``.
        tau_wm, tau_gm: (T1, T2, PD) e-folding times in months of each tissue's maturation.
        wm_lead_months: white-matter clocks start this many months before term.
        gm_lead_months: the cortex's clock runs from this many months before term.
        speed_t1, speed_t2: factors on the white matter's maturation speeds after they are
            solved from the milestones (1 keeps each region's crossing at its Barkovich age on
            the 1.5 T clinical protocol; other values move every region's timing together and
            keep their order).
    """

    name: str
    white: tuple[tuple[float, TissueRelaxation], ...]
    grey: tuple[tuple[float, TissueRelaxation], ...]
    tau_wm: tuple[float, float, float]
    tau_gm: tuple[float, float, float]
    wm_lead_months: float
    gm_lead_months: float
    speed_t1: float = 1.0
    speed_t2: float = 1.0

    def table(self, tissue: str, field_strength: float) -> TissueRelaxation:
        fs = check_field_strength(field_strength)
        return dict({"wm": self.white, "gm": self.grey}[tissue])[fs]

    def tau(self, tissue: str) -> tuple[float, float, float]:
        return {"wm": self.tau_wm, "gm": self.tau_gm}[tissue]

    def as_dict(self) -> dict:
        """JSON-ready form (``synth.curves.curves_from_dict`` reads it back)."""
        from dataclasses import asdict

        return {"name": self.name,
                "white": {str(fs): asdict(v) for fs, v in self.white},
                "grey": {str(fs): asdict(v) for fs, v in self.grey},
                "tau_wm": list(self.tau_wm), "tau_gm": list(self.tau_gm),
                "wm_lead_months": self.wm_lead_months, "gm_lead_months": self.gm_lead_months,
                "speed_t1": self.speed_t1, "speed_t2": self.speed_t2}


# White-matter maturation clocks start this many months before term, when hemispheric
# myelination begins; the cortex began maturing before term too.
MATURATION_LEAD_MONTHS = 3.0
GREY_MATTER_LEAD_MONTHS = 2.0

PUBLISHED = TissueCurves(
    name="published",
    white=tuple(sorted(_WHITE.items())),
    grey=tuple(sorted(_GREY.items())),
    tau_wm=TAU_MONTHS["wm"],
    tau_gm=TAU_MONTHS["gm"],
    wm_lead_months=MATURATION_LEAD_MONTHS,
    gm_lead_months=GREY_MATTER_LEAD_MONTHS,
)
"""The literature values of this module's docstring: the priors of any calibration."""


def tissue_parameters(
    tissue: str, field_strength: float, t1_time: np.ndarray, t2_time: np.ndarray,
    curves: TissueCurves = PUBLISHED,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """T1 (ms), T2 (ms) and proton density of maturing white or grey matter.

    Args:
        tissue: "wm" or "gm".
        field_strength: 1.5 or 3.0 tesla.
        t1_time: months since the tissue's T1 maturation began (any shape; negative means not
            yet begun). Drives T1.
        t2_time: the same for the T2 process (it starts later). Drives T2 and water content.
        curves: the tissue curves (default: the published values).

    Returns:
        (t1, t2, pd) arrays of the broadcast shape, float32.
    """
    table = curves.table(tissue, field_strength)
    m1 = softplus(t1_time)
    m2 = softplus(t2_time)
    tau_t1, tau_t2, tau_pd = curves.tau(tissue)
    t1 = _approach(table.t1_neonatal, table.t1_adult, m1, tau_t1)
    t2 = _approach(table.t2_neonatal, table.t2_adult, m2, tau_t2)
    pd = _approach(table.pd_neonatal, table.pd_adult, m2, tau_pd)
    return t1, t2, pd
