"""Synthetic cohort against the real infant templates: ratio table, agreement check and figure.

The comparison measures white-to-grey matter ratios with one instrument on both sides
(``template_ratios.wm_gm_ratios``): on each real template, and on a typical synthetic infant of
the same age rendered as a skull-stripped 3-D image (``synthetic_ratios.synthetic_brain_image``).
The synthetic sequences (3 T turbo inversion recovery and turbo spin echo of the paper) are not
the templates' (3-D research sequences), so magnitudes differ; what must agree is which tissue is
brighter and the direction of change with age, within ``TOLERANCE``: a ratio within
1 +/- TOLERANCE is isointense and agrees with anything but a clear opposite (one side with white
matter clearly brighter, the other clearly darker, is a disagreement); a change with age smaller
than TOLERANCE is flat and agrees with any direction.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kerasmyelin.levels import CONTRASTS, LEVEL_KEYS

TOLERANCE = 0.05
# Level a lies below the cut of the cerebrum-only templates (see template_ratios): not compared.
TREND_LEVELS = ("b", "c", "d", "e")
# At b and c only 30-45% of the instrument's white-matter mask lands on white matter in the
# templates (their deep nuclei sit where the adult capsules are), which pulls the template
# ratios towards 1 and makes their side of 1 unreliable: the sign is compared at d and e.
SIGN_LEVELS = ("d", "e")
EARLY, LATE = (0, 6), (12, 24)


def _side(ratio: float) -> int:
    """+1 white matter clearly brighter, -1 clearly darker, 0 isointense (within TOLERANCE)."""
    return 0 if abs(ratio - 1) <= TOLERANCE else (1 if ratio > 1 else -1)


@dataclass
class Comparison:
    """Ratios by (contrast, level, month) for the templates and the synthetic infants."""

    template: dict[tuple[str, str, int], float]
    synthetic: dict[tuple[str, str, int], float]
    months: tuple[int, ...]

    def disagreements(self) -> list[str]:
        """Human-readable list of every sign or trend disagreement beyond the tolerance."""
        out = []
        for contrast in CONTRASTS:
            for level in TREND_LEVELS:
                for month in self.months if level in SIGN_LEVELS else ():
                    t = self.template[(contrast, level, month)]
                    s = self.synthetic[(contrast, level, month)]
                    if math.isnan(t) or math.isnan(s):
                        continue
                    if _side(t) * _side(s) < 0:
                        out.append(f"{contrast} level {level} month {month}: template {t:.3f}, synthetic {s:.3f} "
                                   "(other tissue brighter)")
                t_trend = self._trend(self.template, contrast, level)
                s_trend = self._trend(self.synthetic, contrast, level)
                if abs(t_trend) > TOLERANCE and np.sign(t_trend) != np.sign(s_trend):
                    out.append(f"{contrast} level {level}: template changes by {t_trend:+.3f} from months "
                               f"{EARLY} to {LATE}, synthetic by {s_trend:+.3f}")
        return out

    @staticmethod
    def _trend(table, contrast, level) -> float:
        early = np.nanmean([table[(contrast, level, m)] for m in EARLY])
        late = np.nanmean([table[(contrast, level, m)] for m in LATE])
        return float(late - early)

    def markdown(self) -> str:
        lines = ["| contrast | month | " + " | ".join(f"{k} template / synthetic" for k in LEVEL_KEYS) + " |",
                 "|---|---|" + "---|" * len(LEVEL_KEYS)]
        for contrast in CONTRASTS:
            for month in self.months:
                cells = [f"{self.template[(contrast, k, month)]:.3f} / {self.synthetic[(contrast, k, month)]:.3f}"
                         for k in LEVEL_KEYS]
                lines.append(f"| {contrast} | {month} | " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"


def compare_with_templates(root: str | os.PathLike, field_strength: float = 3.0,
                           protocol: str = "clinical") -> Comparison:
    """Measure templates and typical synthetic infants of the same ages (3 T, like the templates)
    scanned with the ``protocol`` family ("clinical": the paper's; "research3d": MPRAGE/SPACE)."""
    from kerasmyelin.validation.synthetic_ratios import (
        instrument_ratios,
        typical_infant,
    )
    from kerasmyelin.validation.template_ratios import (
        TEMPLATE_MONTHS,
        template_ratio_table,
    )

    table = template_ratio_table(root)
    template = {(c, k, m): float(table[(m, c)][k]) for (m, c) in table for k in LEVEL_KEYS}
    synthetic = {}
    for month in TEMPLATE_MONTHS:
        for (contrast, key), value in instrument_ratios(typical_infant(month, field_strength, protocol=protocol)).items():
            synthetic[(contrast, key, month)] = value
    return Comparison(template, synthetic, tuple(TEMPLATE_MONTHS))


def _template_level_slices(img) -> dict[str, int]:
    from kerasmyelin.validation.template_ratios import level_masks

    out = {}
    for key, masks in level_masks(img).items():
        out[key] = int(np.median(masks.slices)) if len(masks.slices) else 0
    return out


def figure(root: str | os.PathLike, out_png: str | os.PathLike, levels: tuple[str, ...] = ("c", "d"),
           field_strength: float = 3.0, protocol: str = "clinical") -> Path:
    """Synthetic infants (as the model sees them) next to the real templates at the same ages."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import nibabel as nib

    from kerasmyelin.data.prepare import prepare_volume
    from kerasmyelin.io.atomic import write_bytes_atomic
    from kerasmyelin.synth.simulate import simulate_subject
    from kerasmyelin.validation.synthetic_ratios import typical_infant
    from kerasmyelin.validation.template_levels import HEADER_CORRECTION
    from kerasmyelin.validation.template_ratios import TEMPLATE_MONTHS, find_templates

    files = find_templates(root)
    months = tuple(TEMPLATE_MONTHS)
    cols = [(c, lv, src) for c in CONTRASTS for lv in levels for src in ("template", "synthetic")]
    fig, axes = plt.subplots(len(months), len(cols), figsize=(1.9 * len(cols), 2.0 * len(months)))
    for row, month in enumerate(months):
        scan = simulate_subject(typical_infant(month, field_strength, protocol=protocol))
        for contrast in CONTRASTS:
            img = nib.load(str(files[(month, contrast)]))
            data = np.asarray(img.dataobj, dtype=np.float32)
            # The templates' headers reverse front and back (template_levels.HEADER_CORRECTION);
            # the correction turns x and y only, so the level slices keep their index.
            real = prepare_volume(data, HEADER_CORRECTION @ img.affine, _template_level_slices(img))
            synth_vol = scan.t1w if contrast == "T1w" else scan.t2w
            synth = prepare_volume(synth_vol, scan.affine, scan.level_slices)
            for col, (c, lv, src) in enumerate(cols):
                if c != contrast:
                    continue
                ax = axes[row, col]
                ax.imshow((real if src == "template" else synth)[lv], cmap="gray", vmin=0, vmax=1.0)
                ax.set_xticks([])
                ax.set_yticks([])
                if row == 0:
                    ax.set_title(f"{c} level {lv}\n{'real template' if src == 'template' else 'synthetic'}",
                                 fontsize=8)
                if col == 0:
                    ax.set_ylabel(f"{month} months", fontsize=9)
    fig.suptitle("Real infant templates (BME-X, 3T) vs kerasmyelin synthetic infants (3T protocol of "
                 "Wada et al. 2019), as the model sees them (128 x 128)", fontsize=9)
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return write_bytes_atomic(Path(out_png), buf.getvalue())
