"""Who is in the synthetic cohort: demographics, maturation and head geometry per infant.

The defaults mirror the cohort of Wada et al. 2019 (``shared/reference/myelination.md``
section 3): 119 infants, 40 boys and 79 girls, corrected age -1.71 to 23.54 months, 95 scanned
at 3 T (Philips) and 24 at 1.5 T (Siemens).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from kerasmyelin.io.ages import WEEKS_PER_MONTH
from kerasmyelin.io.infant_templates import TEMPLATE_MONTHS, template_file
from kerasmyelin.synth.growth import LOG_SD, SEX_FACTOR, brain_volume_ml
from kerasmyelin.synth.relaxation import check_field_strength
from kerasmyelin.synth.sequences import Scanner, scanner_for


@dataclass(frozen=True)
class CohortConfig:
    """How to draw a cohort.

    Attributes:
        subjects: number of infants (> 0).
        seed: the one seed everything random derives from.
        age_range_months: lowest and highest corrected age.
        fraction_boys: share of boys (paper: 40 of 119).
        field_strengths: field strengths used, in tesla.
        fraction_low_field: share scanned at the lowest field strength (paper: 24 of 119 at 1.5 T).
        maturation_rate_sd: standard deviation of log maturation rate between infants.
        maturation_offset_sd: months; an age-independent lead or lag of each infant.
        regional_jitter_months: amplitude of each infant's smooth regional timing deviations.
        motion_fraction: share of infants whose scans show mild motion ghosting.
        research_fraction: share of infants scanned with the 3-D research protocol (MPRAGE and
            SPACE, 5 mm reformats) instead of the paper's clinical one. 0 in the paper.
        timing_jitter: standard deviation of the log of each sequence's TR, TE and TI factors,
            drawn per infant and contrast (0.1 is about +/-10%). 0 in the paper.
        skull_stripped_fraction: share of infants whose images arrive skull-stripped (brain
            and ventricles kept, skull, scalp and outer CSF set to 0). 0 in the paper.
        smoothed_fraction: share of infants whose images are smoothed in-plane (Gaussian FWHM
            1-3 mm), like group averages or denoised images. 0 in the paper.
        tissue_curves: how tissue relaxes with age (``synth.curves``): "published" (the
            literature, the paper reproduction's), "calibrated" (fitted to real infant templates,
            docs/realism.md) or a JSON file from ``kerasmyelin calibrate-synth``. It changes no
            random draw: the same seed gives the same infants with other tissue physics.
        acquisition_variety: share of infants scanned with their own geometry and sequences:
            slice thickness 1-5 mm (3-D reformats) or 3-6 mm (2-D stacks, 20% gap), acquired in-plane
            resolution 0.5-1.2 mm, and on the research protocol a 3-D SPGR T1w instead of MPRAGE (half of
            them) and a 2-D TSE T2w instead of SPACE (a third). Drawn from their own random
            stream, after the protocol. 0 in the paper and in ``--varied``.
        template_anatomy_fraction: share of infants built on an infant anatomy scaffold
            segmented from the real infant templates (``synth.scaffolds``) instead of the scaled
            adult MNI152 brain. 0 in the paper.
        templates: the infant template folder the scaffolds are segmented from (needed when
            ``template_anatomy_fraction`` > 0).
        template_months: the template ages whose scaffolds may be used (leave one out to keep a
            template unseen). Each such infant gets the scaffold of one of the two ages that
            bracket its corrected age, the nearer one more often (the chance of the older is how
            far its age lies from the younger); outside their range, the nearest. Scaffolds are
            not blended: two group averages a few months apart do not put the ventricles and
            sulci in the same place, and their mean would show both.

    The last four widen the cohort beyond the paper's two protocols (domain randomisation), so
    a model can meet scans like the real 3-D, skull-stripped, averaged infant templates. Their
    draws come from their own random stream: a cohort with all four at 0 is the paper's,
    identical to one drawn before they existed.
    """

    subjects: int = 119
    seed: int = 0
    age_range_months: tuple[float, float] = (-1.71, 23.54)
    fraction_boys: float = 40 / 119
    field_strengths: tuple[float, ...] = (3.0, 1.5)
    fraction_low_field: float = 24 / 119
    maturation_rate_sd: float = 0.07
    maturation_offset_sd: float = 0.3
    regional_jitter_months: float = 0.5
    motion_fraction: float = 0.1
    research_fraction: float = 0.0
    timing_jitter: float = 0.0
    skull_stripped_fraction: float = 0.0
    smoothed_fraction: float = 0.0
    tissue_curves: str = "published"
    acquisition_variety: float = 0.0
    template_anatomy_fraction: float = 0.0
    templates: str = ""
    template_months: tuple[int, ...] = TEMPLATE_MONTHS

    def __post_init__(self):
        from kerasmyelin.synth.curves import curves_for

        curves_for(self.tissue_curves)  # an unknown name or a bad file fails here, before any work
        if isinstance(self.subjects, bool) or not isinstance(self.subjects, (int, np.integer)) or self.subjects <= 0:
            raise ValueError(f"subjects must be a positive whole number, got {self.subjects!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ValueError(f"seed must be a whole number >= 0, got {self.seed!r}")
        if not self.field_strengths:
            raise ValueError("field_strengths is empty; give at least one of 1.5 and 3")
        for fs in self.field_strengths:
            check_field_strength(fs)
        lo, hi = self.age_range_months
        if not lo < hi:
            raise ValueError(f"age_range_months must be increasing, got {self.age_range_months}")
        for name in ("fraction_boys", "fraction_low_field", "motion_fraction", "research_fraction",
                     "skull_stripped_fraction", "smoothed_fraction", "acquisition_variety"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a share between 0 and 1, got {value!r}")
        if not 0.0 <= self.template_anatomy_fraction <= 1.0:
            raise ValueError(f"template_anatomy_fraction must be a share between 0 and 1, "
                             f"got {self.template_anatomy_fraction!r}")
        unknown = sorted(set(self.template_months) - set(TEMPLATE_MONTHS))
        if unknown or not self.template_months:
            raise ValueError(f"template_months must be some of {list(TEMPLATE_MONTHS)}, got {list(self.template_months)}")
        if self.template_anatomy_fraction > 0:
            if not self.templates:
                raise ValueError("template_anatomy_fraction > 0 needs the infant template folder (templates)")
            for month in self.template_months:  # a missing file is named now, before any work
                for contrast in ("T1w", "T2w"):
                    template_file(self.templates, month, contrast)
        if not 0.0 <= self.timing_jitter <= 0.5:
            raise ValueError(f"timing_jitter must be between 0 and 0.5 (a log standard deviation), "
                             f"got {self.timing_jitter!r}")

    @property
    def varied(self) -> bool:
        """Whether any protocol variety beyond the paper's is switched on."""
        return bool(self.research_fraction or self.timing_jitter or self.skull_stripped_fraction
                    or self.smoothed_fraction)


VARIED = {"research_fraction": 0.5, "timing_jitter": 0.1, "skull_stripped_fraction": 0.3, "smoothed_fraction": 0.3}
"""The protocol variety of ``kerasmyelin synth --varied`` (docs/wholebrain.md, sim-to-real)."""


@dataclass(frozen=True)
class SubjectSpec:
    """One synthetic infant. Ages in months after term (corrected) unless named otherwise."""

    participant_id: str
    sex: str
    gestational_age_weeks: float
    chronological_age_months: float
    age_months: float
    myelination_age_months: float
    maturation_rate: float
    field_strength: float
    brain_volume_ml: float
    scale_anisotropy: tuple[float, float, float]
    rotation_deg: tuple[float, float, float]  # pitch (about x), roll (about y), yaw (about z)
    translation_mm: tuple[float, float, float]
    regional_jitter_months: float
    motion: bool
    seed: int
    protocol: str = "clinical"
    t1w_timing: tuple[float, float, float] = (1.0, 1.0, 1.0)  # TR, TE, TI factors
    t2w_timing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    skull_stripped: bool = False
    smoothing_fwhm_mm: float = 0.0
    tissue_curves: str = "published"  # synth.curves: "published", "calibrated" or a JSON path
    t1w_variant: str = ""  # "" for the protocol's own T1w sequence, or "spgr" (sequences.SEQUENCE_VARIANTS)
    t2w_variant: str = ""  # "" or "tse"
    slice_thickness_mm: float = 0.0  # 0: the protocol's
    pixel_mm: float = 0.0  # acquired in-plane resolution; 0: the protocol's
    anatomy: str = "mni"  # "mni" (scaled adult MNI152) or a scaffold, "template-{months}mo"
    template_root: str = ""  # the infant template folder a scaffold was segmented from

    @property
    def scanner(self) -> Scanner:
        """The scanner and sequence timings this infant was scanned with."""
        return scanner_for(self.protocol, self.field_strength, self.t1w_timing, self.t2w_timing, self.t1w_variant,
                           self.t2w_variant, self.slice_thickness_mm, self.pixel_mm)

    @property
    def manufacturer(self) -> str:
        return self.scanner.manufacturer


def _gestational_age(rng: np.random.Generator, corrected: float) -> float:
    """Weeks of gestation at birth, consistent with being born before the scan."""
    # Being born needs chronological age >= ~1 week: GA <= 40 + 4.35 * corrected - 1.
    latest = min(42.0, 40.0 + WEEKS_PER_MONTH * corrected - 1.0)
    if latest < 37.0 or rng.random() < 0.25:  # a quarter preterm, as in clinical cohorts
        return float(rng.uniform(max(24.0, min(latest, 36.9) - 8.0), min(latest, 36.9)))
    return float(rng.uniform(37.0, latest))


def draw_cohort(config: CohortConfig) -> list[SubjectSpec]:
    """Draw every infant of a cohort; the same config always gives the same infants."""
    n = int(config.subjects)
    root = np.random.SeedSequence(config.seed)
    rng = np.random.default_rng(root.spawn(1)[0])
    lo, hi = config.age_range_months
    # Stratified ages fill the range evenly; the extremes are those of the paper's cohort.
    ages = lo + (hi - lo) * (np.arange(n) + rng.uniform(0.1, 0.9, n)) / n
    if n >= 2:
        ages[0], ages[-1] = lo, hi
    ages = rng.permutation(ages)
    n_boys = int(round(n * config.fraction_boys))
    sexes = rng.permutation(["M"] * n_boys + ["F"] * (n - n_boys))
    low = min(config.field_strengths)
    n_low = int(round(n * config.fraction_low_field)) if len(config.field_strengths) > 1 else 0
    high = max(config.field_strengths)
    fields = rng.permutation([low] * n_low + [high] * (n - n_low))
    seeds = [int(s.generate_state(1)[0]) for s in root.spawn(n + 1)[1:]]

    cohort = []
    width = max(3, len(str(n)))  # zero-padded ids sort in order (sub-001 ... sub-119, sub-00001 ...)
    for i in range(n):
        srng = np.random.default_rng(seeds[i])
        age = float(round(ages[i], 2))
        ga = round(_gestational_age(srng, age), 1)
        chronological = round(age + (40.0 - ga) / WEEKS_PER_MONTH, 2)
        rate = float(np.exp(srng.normal(0.0, config.maturation_rate_sd)))
        # Myelination age: the age a typical infant's brain would look this one's.
        myelination_age = age * rate + srng.normal(0.0, config.maturation_offset_sd)
        volume = float(brain_volume_ml(age) * SEX_FACTOR[sexes[i]] * np.exp(srng.normal(0.0, 0.8 * LOG_SD)))
        aniso = np.exp(srng.normal(0.0, 0.03, 3))
        aniso = aniso / np.prod(aniso) ** (1 / 3)
        rotation = (np.clip(srng.normal(0, 5), -12, 12), np.clip(srng.normal(0, 3), -8, 8),
                    np.clip(srng.normal(0, 3), -8, 8))
        cohort.append(SubjectSpec(
            participant_id=f"sub-{i + 1:0{width}d}",
            sex=str(sexes[i]),
            gestational_age_weeks=ga,
            chronological_age_months=chronological,
            age_months=age,
            myelination_age_months=round(float(myelination_age), 3),
            maturation_rate=round(rate, 4),
            field_strength=float(fields[i]),
            brain_volume_ml=round(volume, 1),
            scale_anisotropy=tuple(round(float(a), 4) for a in aniso),
            rotation_deg=tuple(round(float(r), 2) for r in rotation),
            translation_mm=tuple(round(float(t), 2) for t in srng.normal(0, 4, 3)),
            regional_jitter_months=config.regional_jitter_months,
            motion=bool(srng.random() < config.motion_fraction),
            seed=int(srng.integers(2**31)),
            tissue_curves=config.tissue_curves,
            **(_variety(np.random.default_rng([seeds[i], 1]), config) if config.varied else {}),
            **(_anatomy(np.random.default_rng([seeds[i], 2]), config, age) if config.template_anatomy_fraction else {}),
        ))
        if config.acquisition_variety:
            cohort[-1] = replace(cohort[-1], **_acquisition(np.random.default_rng([seeds[i], 3]), config,
                                                            cohort[-1].protocol))
    return cohort


def _acquisition(rng: np.random.Generator, config: CohortConfig, protocol: str) -> dict:
    """Slice thickness, in-plane pixel and sequence variants of one infant (its own stream)."""
    use, thick, pixel, t1, t2 = rng.random(5)
    if use >= config.acquisition_variety:
        return {}
    research = protocol == "research3d"
    lo, hi = (1.0, 5.0) if research else (3.0, 6.0)
    return {"slice_thickness_mm": round(float(lo + (hi - lo) * thick), 2),
            "pixel_mm": round(float(0.5 + 0.7 * pixel), 3),
            "t1w_variant": "spgr" if research and t1 < 0.5 else "",
            "t2w_variant": "tse" if research and t2 < 1 / 3 else ""}


def scaffold_for_age(age_months: float, months, u: float) -> int:
    """The template age whose scaffold an infant of ``age_months`` gets, for a uniform draw ``u``.

    Between two available ages lo < hi the older is chosen when ``u`` < (age - lo) / (hi - lo);
    below or above them all, the nearest.
    """
    months = sorted(int(m) for m in months)
    if age_months <= months[0]:
        return months[0]
    if age_months >= months[-1]:
        return months[-1]
    hi = next(m for m in months if m >= age_months)
    lo = max(m for m in months if m < hi)
    return hi if u < (age_months - lo) / (hi - lo) else lo


def _anatomy(rng: np.random.Generator, config: CohortConfig, age: float) -> dict:
    """Which anatomy one infant is built on (its own random stream)."""
    from pathlib import Path

    from kerasmyelin.synth.scaffolds import anatomy_name

    use, u = rng.random(), rng.random()
    if use >= config.template_anatomy_fraction:
        return {}
    return {"anatomy": anatomy_name(scaffold_for_age(age, config.template_months, u)),
            "template_root": str(Path(config.templates).resolve())}


def _variety(rng: np.random.Generator, config: CohortConfig) -> dict:
    """Protocol, timings, skull-stripping and smoothing of one infant (its own random stream)."""
    def timing():
        return tuple(round(float(f), 4) for f in np.exp(rng.normal(0.0, config.timing_jitter, 3)))

    protocol = "research3d" if rng.random() < config.research_fraction else "clinical"
    t1w, t2w = timing(), timing()
    stripped = bool(rng.random() < config.skull_stripped_fraction)
    fwhm = round(float(rng.uniform(1.0, 3.0)), 2) if rng.random() < config.smoothed_fraction else 0.0
    return {"protocol": protocol, "t1w_timing": t1w, "t2w_timing": t2w, "skull_stripped": stripped,
            "smoothing_fwhm_mm": fwhm}
