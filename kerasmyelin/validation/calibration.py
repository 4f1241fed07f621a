"""Tissue curves fitted to the real infant templates, and how well they hold on unseen ages.

What is fitted
--------------
The synthetic infant's physics stays as it is: the signal equations of ``synth.sequences``, the
milestone timetable (each white-matter region still crosses the cortex at its Barkovich ages on
the 1.5 T clinical protocol, ``synth.maturation.solve_rates``) and the mono-exponential approach
from neonatal to adult values (``synth.relaxation``). What the fit moves are the numbers in it:
the neonatal and adult T1, T2 and proton density of white and grey matter, the e-folding times
of their maturation and the two clocks' leads before term, 22 parameters in all, each as a
factor on its published value (the same factor at 1.5 and 3 T: the templates are 3 T only).

Target and instrument
---------------------
The templates' white-to-grey ratios at levels b-e, both contrasts, as
``template_ratios.wm_gm_ratios`` measures them (headers corrected), against a typical synthetic
infant of the same age scanned with the 3 T research protocol (3-D MPRAGE and SPACE, the
templates' kind of sequences), skull-stripped and measured with the same instrument
(``synthetic_ratios.instrument_ratios``). The instrument's masks depend only on the brain's
outline, not its intensities, so they are found once per age; after that a ratio for any set of
curves is a median over a few thousand voxels (:class:`AgeVoxels`), and a fit takes seconds.

Objective: sum over cells of ((synthetic - template) / CELL_TOLERANCE)^2 plus a prior on each
log factor, ``(log f / PRIOR_SD)^2``: the published values are priors, not the last word, and
with 32 cells for 20 parameters the prior keeps the fit from bending physics to the noise.

Held out
--------
:func:`leave_one_age_out` refits without each age in turn and measures that age with the curves
that did not see it; those cells, and only those, are what the pass rule of
``validation.compare`` judges. The shipped curves (``synth/data/tissue_curves_calibrated.json``)
are the fit on all five ages; their in-sample cells are shown beside, labelled as such.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from kerasmyelin.levels import CONTRASTS, LEVEL_KEYS
from kerasmyelin.synth import maturation
from kerasmyelin.synth.relaxation import PUBLISHED, TissueCurves, TissueRelaxation, tissue_parameters
from kerasmyelin.validation.template_ratios import MIN_MASK_VOXELS, level_masks

CELL_TOLERANCE = 0.05
FIT_LEVELS = ("b", "c", "d", "e")
RELAXATION_KEYS = ("t1_neonatal", "t1_adult", "t2_neonatal", "t2_adult", "pd_neonatal", "pd_adult")
# (what, key, prior SD of the log factor). Relaxation times vary by ~20% between studies and
# field strengths (myelination.md section 2); water content is known to a few per cent; the time
# constants and leads are ours, so loosely held.
PARAMETERS: tuple[tuple[str, str, float], ...] = (
    *(("wm", k, 0.08 if k.startswith("pd") else 0.25) for k in RELAXATION_KEYS),
    *(("gm", k, 0.08 if k.startswith("pd") else 0.25) for k in RELAXATION_KEYS),
    *(("tau_wm", str(i), 0.5) for i in range(3)),
    *(("tau_gm", str(i), 0.5) for i in range(3)),
    ("lead", "wm", 0.5),
    ("lead", "gm", 0.5),
    # Barkovich read his milestones on 1.5 T spin echo by eye; how fast white matter matures on
    # 3-D research sequences is what the templates show. Both speeds move every region together.
    ("speed", "t1", 0.3),
    ("speed", "t2", 0.3),
)
FD_STEP = 2e-3  # log-factor step of the finite differences
LOG_FACTOR_BOUND = 1.2  # no value moves by more than a factor e^1.2 = 3.3
PD_MAX = 1.0


def curves_from_factors(log_factors: np.ndarray, name: str = "calibrated",
                        base: TissueCurves = PUBLISHED) -> TissueCurves:
    """``base`` with each parameter of :data:`PARAMETERS` multiplied by ``exp(log_factor)``."""
    f = dict(zip(((w, k) for w, k, _ in PARAMETERS), np.exp(np.asarray(log_factors, dtype=np.float64))))

    def table(tissue, rows):
        out = []
        for fs, t in rows:
            values = {k: getattr(t, k) * f[(tissue, k)] for k in RELAXATION_KEYS}
            for k in ("pd_neonatal", "pd_adult"):
                values[k] = min(values[k], PD_MAX)
            out.append((fs, TissueRelaxation(**{k: round(float(v), 4) for k, v in values.items()})))
        return tuple(out)

    return TissueCurves(
        name=name, white=table("wm", base.white), grey=table("gm", base.grey),
        tau_wm=tuple(round(float(base.tau_wm[i] * f[("tau_wm", str(i))]), 4) for i in range(3)),
        tau_gm=tuple(round(float(base.tau_gm[i] * f[("tau_gm", str(i))]), 4) for i in range(3)),
        wm_lead_months=round(float(base.wm_lead_months * f[("lead", "wm")]), 4),
        gm_lead_months=round(float(base.gm_lead_months * f[("lead", "gm")]), 4),
        speed_t1=round(float(base.speed_t1 * f[("speed", "t1")]), 4),
        speed_t2=round(float(base.speed_t2 * f[("speed", "t2")]), 4))


@dataclass
class AgeVoxels:
    """The voxels the instrument measures in a typical synthetic infant of one age.

    Built once (:func:`age_voxels`); :meth:`ratios` then gives the instrument's ratios for any
    tissue curves without rendering or aligning the image again.
    """

    month: float
    scanner: object
    # level -> ("wm" | "gm") -> dict of per-voxel arrays: f_wm, f_gm, const (contrast -> signal
    # of csf/skull/scalp), has_wm, t1_mid, t2_mid (NaN where the voxel holds no white matter),
    # code (the rounded milestone pair, for _SpeedTable).
    voxels: dict

    def ratios(self, curves: TissueCurves, speeds: "_SpeedTable | None" = None) -> dict[tuple[str, str], float]:
        """(contrast, level) -> median WM-mask signal / median GM-mask signal with ``curves``.

        ``speeds`` (for the optimiser) gives the maturation speeds solved once for the voxels'
        milestone ages rounded to 0.1 months; without it they come from the table the
        simulator uses, so the ratios are exactly those of the rendered image.
        """
        scanner = self.scanner
        fs = scanner.field_strength
        m = np.float32(self.month)
        gm_params = tissue_parameters("gm", fs, *maturation.grey_matter_times(m, curves), curves)
        out = {}
        for level, parts in self.voxels.items():
            signals = {}
            for part, v in parts.items():
                has_wm = v["has_wm"]
                if speeds is None:
                    k1, k2 = maturation.rates_for(v["t1_mid"][has_wm], v["t2_mid"][has_wm], curves)
                else:
                    k1, k2 = speeds.lookup(v["code"][has_wm])
                wm_params = tissue_parameters("wm", fs, *maturation.white_matter_times(m, k1, k2, curves), curves)
                for contrast in CONTRASTS:
                    seq = scanner.t1w if contrast == "T1w" else scanner.t2w
                    s = v["f_gm"] * seq.signal(*gm_params) + v["const"][contrast]
                    s[has_wm] += v["f_wm"][has_wm] * seq.signal(*wm_params)
                    signals[(contrast, part)] = s
            for contrast in CONTRASTS:
                wm, gm = signals[(contrast, "wm")], signals[(contrast, "gm")]
                if len(wm) < MIN_MASK_VOXELS or len(gm) < MIN_MASK_VOXELS:
                    out[(contrast, level)] = math.nan  # as the instrument says of a too-small mask
                    continue
                g = float(np.median(gm))
                out[(contrast, level)] = float(np.median(wm)) / g if g > 0 else math.nan
        return out

    def subsample(self, n: int, seed: int = 0) -> "AgeVoxels":
        """The same ages with at most ``n`` voxels per mask (a fixed random choice): medians
        within ~0.005 of the full ones, four times quicker."""
        rng = np.random.default_rng(seed)
        voxels = {}
        for level, parts in self.voxels.items():
            voxels[level] = {}
            for part, v in parts.items():
                size = len(v["f_wm"])
                keep = np.sort(rng.choice(size, n, replace=False)) if size > n else np.arange(size)
                voxels[level][part] = {k: ({c: a[keep] for c, a in x.items()} if isinstance(x, dict) else x[keep])
                                       for k, x in v.items()}
        return AgeVoxels(self.month, self.scanner, voxels)


_QUANTUM_MONTHS = 0.1
FIT_VOXELS = 1500  # per mask and level in the optimiser's loop; every voxel in what is reported


def _code(t1_mid: np.ndarray, t2_mid: np.ndarray) -> np.ndarray:
    """One integer per (T1, T2) milestone pair rounded to 0.1 months."""
    q1 = np.round(np.nan_to_num(t1_mid) / _QUANTUM_MONTHS).astype(np.int64)
    q2 = np.round(np.nan_to_num(t2_mid) / _QUANTUM_MONTHS).astype(np.int64)
    return q1 * 1_000_000 + q2


class _SpeedTable:
    """Maturation speeds of every distinct rounded milestone pair of some ages, solved once per
    set of curves (the optimiser's inner loop)."""

    def __init__(self, ages):
        codes = [v["code"][v["has_wm"]] for a in ages for parts in a.voxels.values() for v in parts.values()]
        self.codes = np.unique(np.concatenate(codes))
        q1, q2 = np.divmod(self.codes, 1_000_000)
        self.c1, self.c2 = q1 * _QUANTUM_MONTHS, q2 * _QUANTUM_MONTHS
        self.k1 = self.k2 = None

    def solve(self, curves: TissueCurves) -> "_SpeedTable":
        k1, k2 = maturation.solve_rates(self.c1, self.c2, alternations=3, curves=curves, iterations=20)
        self.k1, self.k2 = k1 * np.float32(curves.speed_t1), k2 * np.float32(curves.speed_t2)
        return self

    def lookup(self, codes: np.ndarray):
        idx = np.searchsorted(self.codes, codes)
        return self.k1[idx], self.k2[idx]


def age_voxels(month: float, res_mm: float = 1.5, protocol: str = "research3d", anatomy: str = "mni",
               templates: str = "") -> AgeVoxels:
    """Find the instrument's masks in a typical synthetic infant of ``month`` (3 T, ``protocol``:
    by default the templates' kind; built on ``anatomy``, "mni" or a scaffold segmented from the
    templates in ``templates``) and keep what a ratio needs at those voxels."""
    from kerasmyelin.synth.tissue_signal import constant_tissue_volume, subject_tissue_model
    from kerasmyelin.validation.synthetic_ratios import synthetic_brain_image, typical_infant

    spec = typical_infant(month, 3.0, protocol=protocol, anatomy=anatomy, template_root=templates)
    model = subject_tissue_model(spec, res_mm)
    if not np.all(np.diag(model.affine)[:3] > 0) or np.count_nonzero(model.affine[:3, :3]) != 3:
        raise RuntimeError("the tissue model's grid is not RAS-aligned; the instrument's voxels cannot be mapped back")
    masks = level_masks(synthetic_brain_image(spec, "T1w", res_mm))
    scanner = spec.scanner
    const = {c: constant_tissue_volume(res_mm, scanner.field_strength, scanner.t1w if c == "T1w" else scanner.t2w,
                                        spec.anatomy, spec.template_root)
             for c in CONTRASTS}
    f_wm, f_gm = model.fractions["wm"].ravel(), model.fractions["gm"].ravel()
    voxels = {}
    for level in LEVEL_KEYS:  # level a is measured and shown; only FIT_LEVELS are fitted and judged
        lm = masks[level]
        parts = {}
        for part, mask in (("wm", lm.wm), ("gm", lm.gm)):
            i, j, k = np.nonzero(mask)
            flat = np.ravel_multi_index((i + lm.origin[0], j + lm.origin[1], np.asarray(lm.slices)[k]), model.shape)
            pos = np.clip(np.searchsorted(model.wm_index, flat), 0, len(model.wm_index) - 1)
            has = model.wm_index[pos] == flat
            parts[part] = {
                "f_wm": f_wm[flat], "f_gm": f_gm[flat],
                "const": {c: const[c].ravel()[flat] for c in CONTRASTS},
                "has_wm": has,
                "t1_mid": np.where(has, model.t1_mid[pos], np.nan).astype(np.float32),
                "t2_mid": np.where(has, model.t2_mid[pos], np.nan).astype(np.float32),
            }
            parts[part]["code"] = _code(parts[part]["t1_mid"], parts[part]["t2_mid"])
        voxels[level] = parts
    return AgeVoxels(float(month), scanner, voxels)


def scaffold_ages(months: tuple[int, ...], templates: str, res_mm: float = 1.5,
                  protocol: str = "research3d") -> dict[int, AgeVoxels]:
    """:func:`age_voxels` of each template age on that template's own anatomy scaffold: the
    calibration then compares tissue with tissue where the instrument's masks fall on the same
    anatomy as in the template, instead of fitting the adult brain's partial volume into the
    tissue values."""
    from kerasmyelin.synth.scaffolds import anatomy_name

    return {m: age_voxels(m, res_mm, protocol, anatomy_name(m), str(templates)) for m in months}


def held_out_scaffold(month: int, others: tuple[int, ...]) -> int:
    """The scaffold a held-out age is measured on: the nearest of the other ages (the younger on
    a tie), never its own."""
    return min(others, key=lambda m: (abs(m - month), m))


@dataclass
class Fit:
    """One calibration: the curves, the ages it saw, and its in-sample cells."""

    curves: TissueCurves
    log_factors: np.ndarray
    months: tuple[int, ...]
    cost: float
    evaluations: int


def fit_curves(template: dict[tuple[str, str, int], float], ages: dict[int, AgeVoxels],
               months: tuple[int, ...], name: str = "calibrated", max_iterations: int = 60) -> Fit:
    """Fit the curves to the template cells of ``months`` (levels b-e, both contrasts).

    Args:
        template: (contrast, level, month) -> template ratio.
        ages: month -> :class:`AgeVoxels`, for every month in ``months``.
        months: the ages the fit may see.
    """
    from scipy.optimize import least_squares

    cells = [(c, lv, m) for m in months for c in CONTRASTS for lv in FIT_LEVELS
             if math.isfinite(template.get((c, lv, m), math.nan))]
    target = np.array([template[k] for k in cells])
    prior_sd = np.array([sd for _, _, sd in PARAMETERS])

    quick = {m: ages[m].subsample(FIT_VOXELS) for m in months}
    speeds = _SpeedTable(list(quick.values()))

    def residuals(theta):
        curves = curves_from_factors(theta, name)
        speeds.solve(curves)
        measured = {}
        for m in months:
            for (c, lv), v in quick[m].ratios(curves, speeds).items():
                measured[(c, lv, m)] = v
        s = np.array([measured[k] for k in cells])
        s = np.where(np.isfinite(s), s, 10.0)
        return np.concatenate([(s - target) / CELL_TOLERANCE, theta / prior_sd])

    def jacobian(theta):
        # Forward differences with an absolute step: scipy's relative step is 1.5e-8 at 0,
        # below what a median of float32 signals resolves.
        r0 = residuals(theta)
        out = np.empty((len(r0), len(theta)))
        for i in range(len(theta)):
            step = np.zeros_like(theta)
            step[i] = FD_STEP if theta[i] + FD_STEP <= LOG_FACTOR_BOUND else -FD_STEP
            out[:, i] = (residuals(theta + step) - r0) / step[i]
        return out

    bound = np.full(len(PARAMETERS), LOG_FACTOR_BOUND)
    result = least_squares(residuals, np.zeros(len(PARAMETERS)), jac=jacobian, bounds=(-bound, bound),
                           x_scale=prior_sd, max_nfev=max_iterations)
    return Fit(curves_from_factors(result.x, name), result.x, tuple(months), float(result.cost), int(result.nfev))


def synthetic_cells(curves: TissueCurves, ages: dict[int, AgeVoxels],
                    months: tuple[int, ...]) -> dict[tuple[str, str, int], float]:
    """(contrast, level, month) -> the instrument's ratio of a typical infant with ``curves``."""
    out = {}
    for m in months:
        for (c, lv), v in ages[m].ratios(curves).items():
            out[(c, lv, m)] = v
    return out


def leave_one_age_out(template: dict[tuple[str, str, int], float], ages: dict[int, AgeVoxels],
                      months: tuple[int, ...], progress=None, held_out=None) -> tuple[dict, dict[int, Fit]]:
    """Each age measured with curves fitted to the other ages only.

    Args:
        held_out: optional callable month -> :class:`AgeVoxels` the held-out age is measured on
            (default ``ages[month]``). With anatomy scaffolds it must not be that age's own.

    Returns:
        (cells, fits): (contrast, level, month) -> held-out synthetic ratio, and month -> the
        fit that did not see that month.
    """
    cells, fits = {}, {}
    for m in months:
        fit = fit_curves(template, ages, tuple(x for x in months if x != m), name=f"calibrated-without-{m}")
        fits[m] = fit
        cells.update(synthetic_cells(fit.curves, {m: held_out(m)} if held_out else ages, (m,)))
        if progress is not None:
            progress(m, fit)
    return cells, fits


def provenance(fit: Fit, template_root: str, anatomy: str = "mni") -> dict:
    """What a shipped curves file says of where it came from."""
    return {"fitted_to": "BME-X infant templates (3 T, 3-D T1w and T2w), WM/GM ratios at levels "
                         + ", ".join(FIT_LEVELS) + f", months {list(fit.months)}",
            "templates": str(template_root),
            "instrument": "kerasmyelin.validation.template_ratios.wm_gm_ratios (headers corrected)",
            "synthetic": "typical infant, 3 T research protocol (MPRAGE / SPACE), skull-stripped, on "
                         + ("each template's own anatomy scaffold" if anatomy == "templates"
                            else "the scaled adult MNI152 anatomy"),
            "log_factors": {f"{w}.{k}": round(float(v), 4) for (w, k, _), v in zip(PARAMETERS, fit.log_factors)},
            "cost": round(fit.cost, 4), "evaluations": fit.evaluations,
            "command": "kerasmyelin calibrate-synth --templates ../shared/data/infant_templates --out OUT"
                       + (" --anatomy templates" if anatomy == "templates" else "")}
