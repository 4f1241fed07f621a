"""What the experiment scripts share: running a kerasmyelin command as a logged, timed step, and
scoring estimates of the five real templates.

Each experiment script is run as ``python experiments/NAME.py``, so this folder is on its path.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path


def km(*args: str) -> list[str]:
    """``kerasmyelin ARGS`` with this interpreter (the checkout it runs from, not an installed copy)."""
    return [sys.executable, "-m", "kerasmyelin.cli.main", *args]


def run_step(argv: list[str], log: Path, ok=(0,)) -> None:
    """Run ``argv`` with its output appended to ``log``; stop the experiment, naming the log, on an
    exit code outside ``ok``; print the step and its time."""
    started = time.monotonic()
    with open(log, "a") as fh:
        fh.write("$ " + " ".join(argv) + "\n")
        fh.flush()
        code = subprocess.call(argv, stdout=fh, stderr=subprocess.STDOUT)
    if code not in ok:
        sys.exit(f"failed ({code}): {' '.join(argv)}; see {log}")
    shown = argv[3:5] if argv[:3] == km() else argv[:2]
    print(f"  {' '.join(shown)} ... {time.monotonic() - started:.0f} s", flush=True)


def template_summary(estimates: dict[int, float]) -> dict:
    """Estimates of the templates (age in months -> estimate): each estimate, MAE, Spearman r and
    the slope of estimate against age, as docs/realism.md reports them."""
    import numpy as np
    from scipy import stats

    ages = np.array(sorted(estimates), dtype=float)
    est = np.array([estimates[m] for m in sorted(estimates)])
    return {"estimates": {str(int(m)): round(float(e), 2) for m, e in zip(ages, est)},
            "mae_months": round(float(np.abs(est - ages).mean()), 2),
            "spearman_r": round(float(stats.spearmanr(ages, est).statistic), 2),
            "slope": round(float(np.polyfit(ages, est, 1)[0]), 2)}
