"""From a region's milestone ages to the relaxation times of its white matter at any age.

Relaxometry shows white-matter T1 and T2 falling from birth everywhere, faster where
myelination is early (Leppert, JMRI 2009; Deoni, NeuroImage 2012). So each white-matter voxel
gets two *speeds*, ``k1`` for its T1 process and ``k2`` for its T2 process (water loss, which
also lowers proton density); both clocks start ``MATURATION_LEAD_MONTHS`` before term, when
hemispheric myelination begins. At maturation age ``m`` the tissue has matured for
``k * (m + lead)`` months (``relaxation.tissue_parameters``).

The speeds are solved so that a typical infant's white matter crosses the cortex's signal --
turns "T1-bright" and "T2-dark" as a radiologist reads it -- at the milestone ages of
``milestones.py``. The crossing is solved on the 1.5 T protocol because Barkovich's table was
read at 1.5 T; at 3 T the same tissue crosses at other ages (inversion recovery shows T1
change earlier, a TR of 4 s at 3 T shows T2 darkening later), as it does in practice.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy.interpolate import RegularGridInterpolator

from kerasmyelin.synth.relaxation import PUBLISHED, TissueCurves, tissue_parameters
from kerasmyelin.synth.sequences import SIEMENS_AVANTO_15T, Sequence

_C1_GRID = np.arange(-2.0, 14.01, 0.25)
_C2_GRID = np.arange(-2.0, 42.01, 0.5)
_LOG_K_RANGE = (-6.0, 4.0)


def grey_matter_times(maturation_age: np.ndarray | float,
                      curves: TissueCurves = PUBLISHED) -> tuple[np.ndarray, np.ndarray]:
    """The (T1, T2) maturation times of cortex at a maturation age in months."""
    t = np.asarray(maturation_age, dtype=np.float32) + np.float32(curves.gm_lead_months)
    return t, t


def white_matter_times(maturation_age, k1, k2, curves: TissueCurves = PUBLISHED) -> tuple[np.ndarray, np.ndarray]:
    """The (T1, T2) maturation times of white matter with speeds k1, k2 at a maturation age."""
    clock = np.asarray(maturation_age, dtype=np.float32) + np.float32(curves.wm_lead_months)
    return k1 * clock, k2 * clock


def wm_gm_signal_ratio(sequence: Sequence, field_strength: float, maturation_age, k1, k2,
                       curves: TissueCurves = PUBLISHED) -> np.ndarray:
    """White-to-grey signal ratio of white matter with speeds k1, k2 at a maturation age."""
    m = np.asarray(maturation_age, dtype=np.float32)
    wm = sequence.signal(*tissue_parameters("wm", field_strength, *white_matter_times(m, k1, k2, curves), curves))
    gm = sequence.signal(*tissue_parameters("gm", field_strength, *grey_matter_times(m, curves), curves))
    return wm / gm


def _bisect_log(fn, shape, increasing: bool, iterations: int = 32) -> np.ndarray:
    """Vectorised bisection in log space for fn(k) == 1, fn monotone in k (32 halvings of a
    range of 10 in log k: a relative error of 2e-9)."""
    lo, hi = np.full(shape, _LOG_K_RANGE[0]), np.full(shape, _LOG_K_RANGE[1])
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        above = fn(np.exp(mid)) > 1.0
        go_down = above if increasing else ~above
        hi = np.where(go_down, mid, hi)
        lo = np.where(go_down, lo, mid)
    return np.exp(0.5 * (lo + hi))


def solve_rates(c1: np.ndarray, c2: np.ndarray, alternations: int = 4,
                curves: TissueCurves = PUBLISHED, iterations: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Speeds (k1, k2) at which white matter crosses cortex on T1w at c1 and on T2w at c2.

    Args:
        c1, c2: milestone ages in months (same shape), above ``-curves.wm_lead_months``.
        curves: the tissue curves whose white matter is to cross the cortex at those ages.
        alternations, iterations: of the T1/T2 alternation and of each bisection (fewer for a
            quicker, coarser answer: 20 halvings leave a relative error of 1e-5).

    Returns:
        (k1, k2), dimensionless, same shape. The T1w crossing also depends a little on T2 and
        water content, hence the alternation.
    """
    scanner = SIEMENS_AVANTO_15T
    fs = scanner.field_strength
    c1 = np.asarray(c1, dtype=np.float64)
    c2 = np.asarray(c2, dtype=np.float64)
    k1 = np.ones_like(c1)
    k2 = np.ones_like(c2)
    for _ in range(alternations):
        # Faster T1 process -> brighter on T1w; faster T2 process -> darker on T2w.
        k1 = _bisect_log(lambda k: wm_gm_signal_ratio(scanner.t1w, fs, c1, k, k2, curves), c1.shape,
                         increasing=True, iterations=iterations)
        k2 = _bisect_log(lambda k: wm_gm_signal_ratio(scanner.t2w, fs, c2, k1, k, curves), c2.shape,
                         increasing=False, iterations=iterations)
    return k1.astype(np.float32), k2.astype(np.float32)


@functools.lru_cache(maxsize=4)
def _rate_tables(curves: TissueCurves) -> tuple[RegularGridInterpolator, RegularGridInterpolator]:
    g1, g2 = np.meshgrid(_C1_GRID, _C2_GRID, indexing="ij")
    k1, k2 = solve_rates(g1, g2, curves=curves)
    kw = dict(bounds_error=False, fill_value=None)
    # Interpolate log speeds: they vary smoothly with the milestone ages.
    return (RegularGridInterpolator((_C1_GRID, _C2_GRID), np.log(k1), **kw),
            RegularGridInterpolator((_C1_GRID, _C2_GRID), np.log(k2), **kw))


def rates_for(t1_mid: np.ndarray, t2_mid: np.ndarray,
              curves: TissueCurves = PUBLISHED) -> tuple[np.ndarray, np.ndarray]:
    """Speeds for many voxels at once, interpolated from a table solved for ``curves`` (fast)."""
    f1, f2 = _rate_tables(curves)
    pts = np.stack([np.clip(t1_mid, _C1_GRID[0], _C1_GRID[-1]),
                    np.clip(t2_mid, _C2_GRID[0], _C2_GRID[-1])], axis=-1)
    return ((curves.speed_t1 * np.exp(f1(pts))).astype(np.float32),
            (curves.speed_t2 * np.exp(f2(pts))).astype(np.float32))
