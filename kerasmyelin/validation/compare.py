"""Synthetic infants against the real infant templates: ratio table, pass rule, figure.

The comparison measures white-to-grey matter ratios with one instrument on both sides
(``template_ratios.wm_gm_ratios``): on each real template (headers corrected), and on a typical
synthetic infant of the same age rendered as a skull-stripped 3-D image and measured at the same
voxels (``calibration.AgeVoxels``, equal to measuring the rendered image).

The pass rule
-------------
A *cell* is one contrast at one level (b-e; level a lies below the templates' cut) at one
template age: 2 x 4 x 5 = 40 cells. A cell agrees when the synthetic ratio is within
``TOLERANCE`` (0.05) of the template's. The synthetic infants pass when at least ``PASS_SHARE``
(90%) of the cells agree, measured on cells the tissue curves did not see: the published curves
saw no template; calibrated curves are judged by leave-one-age-out (each age measured with
curves refitted without that age's templates, ``calibration.leave_one_age_out``). The rule
applies to the 3 T research protocol (MPRAGE / SPACE), the templates' kind of acquisition; the
paper's clinical sequences are other physics and are shown for reference only.

Sign and trend (which tissue is brighter; which way the ratio moves from 0-6 to 12-24 months)
are kept as a secondary, coarser reading: they cannot tell a realistic contrast from one that is
off by half, so they never decide the verdict.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kerasmyelin.levels import CONTRASTS, LEVEL_KEYS

TOLERANCE = 0.05
PASS_SHARE = 0.90
RULE_LEVELS = ("b", "c", "d", "e")
RULE_PROTOCOL = "research3d"
TREND_LEVELS = RULE_LEVELS
SIGN_LEVELS = ("d", "e")
EARLY, LATE = (0, 6), (12, 24)


def _side(ratio: float) -> int:
    """+1 white matter clearly brighter, -1 clearly darker, 0 isointense (within TOLERANCE)."""
    return 0 if abs(ratio - 1) <= TOLERANCE else (1 if ratio > 1 else -1)


@dataclass(frozen=True)
class Cell:
    contrast: str
    level: str
    month: int
    template: float
    synthetic: float

    @property
    def difference(self) -> float:
        return self.synthetic - self.template

    @property
    def agrees(self) -> bool:
        return math.isfinite(self.difference) and abs(self.difference) <= TOLERANCE

    def describe(self) -> str:
        return (f"{self.contrast} level {self.level}, {self.month} months: template {self.template:.3f}, "
                f"synthetic {self.synthetic:.3f} ({self.difference:+.3f})")


@dataclass
class Verdict:
    applies: bool
    agreeing: int
    judged: int
    failing: list[Cell]
    excluded: list[str]

    @property
    def share(self) -> float:
        return self.agreeing / self.judged if self.judged else 0.0

    @property
    def needed(self) -> int:
        return math.ceil(PASS_SHARE * self.judged - 1e-9)

    @property
    def passed(self) -> bool:
        return self.applies and self.judged > 0 and self.agreeing >= self.needed

    def line(self) -> str:
        if not self.applies:
            return (f"No verdict: the templates were not acquired with this protocol; the pass rule applies to "
                    f"the {RULE_PROTOCOL} protocol.")
        word = "PASS" if self.passed else "FAIL"
        return (f"{word}: {self.agreeing} of {self.judged} cells ({100 * self.share:.0f}%) within {TOLERANCE} of "
                f"the template; the rule needs {self.needed} ({100 * PASS_SHARE:.0f}%).")


@dataclass
class Comparison:
    """Ratios by (contrast, level, month) for the templates and the synthetic infants.

    Attributes:
        template, synthetic: (contrast, level, month) -> ratio. ``synthetic`` holds the cells
            that are judged (held out where curves were calibrated).
        months: the template ages.
        protocol: the synthetic protocol family.
        curves: the tissue curves' name.
        provenance: how ``synthetic`` relates to the templates, in words.
        in_sample: for calibrated curves, the cells of the curves as shipped (fitted to every
            age: shown, never judged).
    """

    template: dict[tuple[str, str, int], float]
    synthetic: dict[tuple[str, str, int], float]
    months: tuple[int, ...]
    protocol: str = RULE_PROTOCOL
    curves: str = "published"
    provenance: str = "published tissue curves: no template was used to make them"
    in_sample: dict[tuple[str, str, int], float] | None = field(default=None)

    def cells(self) -> list[Cell]:
        return [Cell(c, lv, m, self.template[(c, lv, m)], self.synthetic[(c, lv, m)])
                for c in CONTRASTS for lv in RULE_LEVELS for m in self.months]

    def verdict(self) -> Verdict:
        judged, excluded = [], []
        for cell in self.cells():
            if math.isfinite(cell.template):
                judged.append(cell)
            else:
                excluded.append(f"{cell.contrast} level {cell.level}, {cell.month} months: no template ratio")
        failing = [c for c in judged if not c.agrees]
        return Verdict(self.protocol == RULE_PROTOCOL, len(judged) - len(failing), len(judged), failing, excluded)

    def disagreements(self) -> list[str]:
        """Secondary reading: every sign or trend disagreement beyond the tolerance."""
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

    def table_markdown(self, synthetic: dict | None = None) -> str:
        """Template / synthetic per cell; a cell outside the tolerance at levels b-e is marked **x**."""
        synthetic = self.synthetic if synthetic is None else synthetic
        lines = ["| contrast | month | " + " | ".join(f"{k} template / synthetic" for k in LEVEL_KEYS) + " |",
                 "|---|---|" + "---|" * len(LEVEL_KEYS)]
        for contrast in CONTRASTS:
            for month in self.months:
                cells = []
                for k in LEVEL_KEYS:
                    t, s = self.template[(contrast, k, month)], synthetic[(contrast, k, month)]
                    mark = " **x**" if k in RULE_LEVELS and math.isfinite(t) and not abs(s - t) <= TOLERANCE else ""
                    cells.append(f"{t:.3f} / {s:.3f}{mark}")
                lines.append(f"| {contrast} | {month} | " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"

    def markdown(self) -> str:
        v = self.verdict()
        out = [f"# Synthetic infants against the real infant templates ({self.protocol} protocol, "
               f"{self.curves} tissue curves)", "",
               "WM/GM median intensity ratio, measured with one instrument on the templates (headers corrected) "
               "and on a typical synthetic infant of each age (3 T, skull-stripped, noise-free).", "",
               f"**Pass rule:** a cell (contrast x level b-e x age) agrees when |synthetic - template| <= {TOLERANCE}; "
               f"the synthetic infants pass when at least {100 * PASS_SHARE:.0f}% of the cells agree, on cells the "
               f"curves did not see. Synthetic cells here: {self.provenance}.", "",
               f"**Verdict: {v.line()}**", "",
               "Cells outside the tolerance are marked **x** (level a is shown, not judged: it lies below the "
               "templates' cut).", "",
               self.table_markdown()]
        if v.applies and v.failing:
            out += ["Failing cells:", ""] + [f"- {c.describe()}" for c in v.failing] + [""]
        out += [f"- excluded: {e}" for e in v.excluded]
        if self.in_sample is not None:
            ins = Comparison(self.template, self.in_sample, self.months, self.protocol, self.curves).verdict()
            out += [f"In sample (the curves as shipped, fitted to all five ages; shown, not judged): "
                    f"{ins.agreeing} of {ins.judged} cells within {TOLERANCE}.", "", self.table_markdown(self.in_sample)]
        problems = self.disagreements()
        out += ["Secondary reading, sign and trend (cannot decide the verdict): "
                + ("; ".join(problems) if problems else "no disagreement in sign or trend."), ""]
        return "\n".join(out)

    def as_json(self) -> dict:
        v = self.verdict()

        def keyed(d):
            return None if d is None else {"|".join(map(str, k)): v for k, v in d.items()}

        return {"tolerance": TOLERANCE, "pass_share": PASS_SHARE, "rule_levels": list(RULE_LEVELS),
                "protocol": self.protocol, "curves": self.curves, "provenance": self.provenance,
                "months": list(self.months), "rule_applies": v.applies, "passed": v.passed,
                "agreeing": v.agreeing, "judged": v.judged,
                "failing": [c.describe() for c in v.failing], "excluded": v.excluded,
                "template": keyed(self.template), "synthetic": keyed(self.synthetic),
                "in_sample": keyed(self.in_sample), "sign_and_trend_disagreements": self.disagreements()}


def template_cells(root: str | os.PathLike) -> dict[tuple[str, str, int], float]:
    """(contrast, level, month) -> the templates' ratio (headers corrected)."""
    from kerasmyelin.validation.template_ratios import template_ratio_table

    table = template_ratio_table(root)
    return {(c, k, m): float(table[(m, c)][k]) for (m, c) in table for k in LEVEL_KEYS}


def compare_with_templates(root: str | os.PathLike, protocol: str = RULE_PROTOCOL, curves: str = "published",
                           progress=None, anatomy: str = "mni") -> Comparison:
    """Measure the templates and typical synthetic infants of the same ages (3 T).

    Args:
        root: the templates' folder.
        protocol: "research3d" (MPRAGE/SPACE, the templates' kind; judged) or "clinical" (the
            paper's; shown only).
        curves: "published", "calibrated" or a curves JSON file (``synth.curves``). For any but
            "published" on the research protocol, the judged cells are leave-one-age-out.
        progress: optional callable(str), told what is being done.
        anatomy: "mni" (every typical infant on the scaled adult MNI152 brain) or "templates"
            (each age on the anatomy scaffold of its own template, ``synth.scaffolds``; a
            held-out age is measured on the scaffold of the nearest other age, so neither its
            cells nor its anatomy were seen).
    """
    from kerasmyelin.synth.curves import curves_for
    from kerasmyelin.synth.relaxation import PUBLISHED
    from kerasmyelin.validation import calibration as cal
    from kerasmyelin.io.infant_templates import TEMPLATE_MONTHS

    say = progress or (lambda text: None)
    shipped = curves_for(curves)
    months = tuple(TEMPLATE_MONTHS)
    say("measuring the ten templates")
    template = template_cells(root)
    say("finding the instrument's voxels in typical synthetic infants")
    if anatomy not in ("mni", "templates"):
        raise ValueError(f"anatomy must be 'mni' or 'templates', got {anatomy!r}")
    if anatomy == "mni":
        ages = {m: cal.age_voxels(m, protocol=protocol) for m in months}
        held = None
    else:
        from kerasmyelin.synth.scaffolds import anatomy_name

        ages = cal.scaffold_ages(months, str(root), protocol=protocol)

        def held(m):
            other = cal.held_out_scaffold(m, tuple(x for x in months if x != m))
            return cal.age_voxels(m, protocol=protocol, anatomy=anatomy_name(other), templates=str(root))
    full = {(c, lv, m): v for m in months for (c, lv), v in ages[m].ratios(shipped).items()}
    if shipped is PUBLISHED or protocol != RULE_PROTOCOL:
        provenance = ("published tissue curves: no template was used to make them" if shipped is PUBLISHED else
                      f"the {shipped.name} curves as they are (no verdict on this protocol)")
        if anatomy == "templates":
            provenance += "; each age on its own template's anatomy scaffold (the anatomy is not held out)"
        return Comparison(template, full, months, protocol, shipped.name, provenance)
    held_out, _ = cal.leave_one_age_out(template, ages, months,
                                         progress=lambda m, fit: say(f"refitted without {m} months"), held_out=held)
    what = ("held out: each age measured with curves refitted (kerasmyelin's calibration) to the other four ages' "
            "templates only")
    if anatomy == "templates":
        what += (", fitted on the other ages' own anatomy scaffolds and measured on the scaffold of the nearest "
                 "other age")
    return Comparison(template, {**full, **held_out}, months, protocol, shipped.name, what, full)


def _template_level_slices(img) -> dict[str, int]:
    from kerasmyelin.validation.template_ratios import level_masks

    out = {}
    for key, masks in level_masks(img).items():
        out[key] = int(np.median(masks.slices)) if len(masks.slices) else 0
    return out


def figure(root: str | os.PathLike, out_png: str | os.PathLike, levels: tuple[str, ...] = ("c", "d"),
           field_strength: float = 3.0, protocol: str = "clinical", curves: str = "published",
           anatomy: str = "mni") -> Path:
    """Synthetic infants (as the model sees them) next to the real templates at the same ages.

    With ``anatomy="templates"`` each synthetic infant is built on the scaffold of the nearest
    other template age, as the held-out cells are measured."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from kerasmyelin.data.prepare import prepare_volume
    from kerasmyelin.io.atomic import write_bytes_atomic
    from kerasmyelin.synth.simulate import simulate_subject
    from kerasmyelin.validation.synthetic_ratios import typical_infant
    from kerasmyelin.io.infant_templates import TEMPLATE_MONTHS, corrected_image, find_templates

    files = find_templates(root)
    months = tuple(TEMPLATE_MONTHS)
    cols = [(c, lv, src) for c in CONTRASTS for lv in levels for src in ("template", "synthetic")]
    fig, axes = plt.subplots(len(months), len(cols), figsize=(1.9 * len(cols), 2.0 * len(months)))
    for row, month in enumerate(months):
        where = {}
        if anatomy == "templates":
            from kerasmyelin.synth.scaffolds import anatomy_name
            from kerasmyelin.validation.calibration import held_out_scaffold

            other = held_out_scaffold(month, tuple(m for m in months if m != month))
            where = {"anatomy": anatomy_name(other), "template_root": str(root)}
        scan = simulate_subject(typical_infant(month, field_strength, protocol=protocol, tissue_curves=curves,
                                               **where))
        for contrast in CONTRASTS:
            # The templates' headers reverse front and back (template_levels.HEADER_CORRECTION);
            # the correction turns x and y only, so the level slices keep their index.
            img = corrected_image(files[(month, contrast)])
            data = np.asarray(img.dataobj, dtype=np.float32)
            real = prepare_volume(data, img.affine, _template_level_slices(img))
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
    what = "3T protocol of Wada et al. 2019" if protocol == "clinical" else "3T MPRAGE / SPACE"
    fig.suptitle(f"Real infant templates (BME-X, 3T) vs kerasmyelin synthetic infants ({what}, {curves} tissue "
                 "curves), as the model sees them (128 x 128)", fontsize=9)
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return write_bytes_atomic(Path(out_png), buf.getvalue())
