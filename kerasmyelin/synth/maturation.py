"""From a region's milestone ages to the relaxation times of its white matter at any age.

Each white-matter voxel has two delays (months): ``d1`` for its T1 process and ``d2`` for its T2
process (water loss). At maturation age ``m`` the tissue has matured for ``m - d1`` and
``m - d2`` months (``relaxation.tissue_parameters``). The delays are solved so that a typical
infant's white matter there crosses the cortex's signal -- turns "T1-bright" and "T2-dark" as a
radiologist reads it -- at the milestone ages of ``milestones.py``. The crossing is solved on the
1.5 T protocol because Barkovich's table was read at 1.5 T; at 3 T the same tissue crosses at
slightly different ages, as it does in practice.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy.interpolate import RegularGridInterpolator

from kerasmyelin.synth.relaxation import tissue_parameters
from kerasmyelin.synth.sequences import SIEMENS_AVANTO_15T, Sequence

# Cortex began maturing before term; its clock runs from this many months before term.
GREY_MATTER_LEAD_MONTHS = 2.0

_C1_GRID = np.arange(-3.0, 14.01, 0.25)
_C2_GRID = np.arange(-3.0, 42.01, 0.5)


def grey_matter_times(maturation_age: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """The (T1, T2) maturation times of cortex at a maturation age in months."""
    t = np.asarray(maturation_age, dtype=np.float32) + GREY_MATTER_LEAD_MONTHS
    return t, t


def wm_gm_signal_ratio(sequence: Sequence, field_strength: float, maturation_age, d1, d2) -> np.ndarray:
    """White-to-grey signal ratio of white matter with delays d1, d2 at a maturation age."""
    m = np.asarray(maturation_age, dtype=np.float32)
    wm = sequence.signal(*tissue_parameters("wm", field_strength, m - d1, m - d2))
    gm = sequence.signal(*tissue_parameters("gm", field_strength, *grey_matter_times(m)))
    return wm / gm


def _bisect(fn, lo: np.ndarray, hi: np.ndarray, increasing: bool, iterations: int = 40) -> np.ndarray:
    """Vectorised bisection for fn(x) == 1 with fn monotone in x on [lo, hi]."""
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        above = fn(mid) > 1.0
        go_down = above if increasing else ~above
        hi = np.where(go_down, mid, hi)
        lo = np.where(go_down, lo, mid)
    return 0.5 * (lo + hi)


def solve_delays(c1: np.ndarray, c2: np.ndarray, alternations: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Delays (d1, d2) at which white matter crosses cortex on T1w at c1 and on T2w at c2.

    Args:
        c1, c2: milestone ages in months (same shape).

    Returns:
        (d1, d2) in months, same shape. The T1w crossing also depends a little on T2 and water
        content, hence the alternation.
    """
    scanner = SIEMENS_AVANTO_15T
    fs = scanner.field_strength
    c1 = np.asarray(c1, dtype=np.float64)
    c2 = np.asarray(c2, dtype=np.float64)
    d1 = np.zeros_like(c1)
    d2 = np.zeros_like(c2)
    lo, hi = np.full_like(c1, -60.0), np.full_like(c1, 60.0)
    for _ in range(alternations):
        # Later delay -> less mature -> darker on T1w, brighter on T2w.
        d1 = _bisect(lambda d: wm_gm_signal_ratio(scanner.t1w, fs, c1, d, d2), lo, hi, increasing=False)
        d2 = _bisect(lambda d: wm_gm_signal_ratio(scanner.t2w, fs, c2, d1, d), lo, hi, increasing=True)
    return d1.astype(np.float32), d2.astype(np.float32)


@functools.lru_cache(maxsize=1)
def _delay_tables() -> tuple[RegularGridInterpolator, RegularGridInterpolator]:
    g1, g2 = np.meshgrid(_C1_GRID, _C2_GRID, indexing="ij")
    d1, d2 = solve_delays(g1, g2)
    kw = dict(bounds_error=False, fill_value=None)
    return (RegularGridInterpolator((_C1_GRID, _C2_GRID), d1, **kw),
            RegularGridInterpolator((_C1_GRID, _C2_GRID), d2, **kw))


def delays_for(t1_mid: np.ndarray, t2_mid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Delays for many voxels at once, interpolated from a solved table (fast)."""
    f1, f2 = _delay_tables()
    pts = np.stack([np.clip(t1_mid, _C1_GRID[0], _C1_GRID[-1]),
                    np.clip(t2_mid, _C2_GRID[0], _C2_GRID[-1])], axis=-1)
    return f1(pts).astype(np.float32), f2(pts).astype(np.float32)
