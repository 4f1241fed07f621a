"""Calibration of the whole-brain input checks (docs/inputs.md, "What predict refuses or flags").

Usage: python experiments/calibrate_input_checks.py [--subjects 100] [--templates DIR] [--seed 5]

Measures, with the pipeline's own functions and without refusing anything:

* the contrast-order score (``wholebrain.contrast_order``) of each pair the right way round and
  swapped (aligned on the given T1w, and on the given T2w as the check does below its bar);
* each image's neighbour correlation (``plausibility.neighbour_correlation``), and the same for
  blocks of uniform noise;
* the brain volume from the level finder's scales against the synthetic infants' true volume
  (whose ratio calibrates ``plausibility.REFERENCE_BRAIN_ML``), and for an adult-sized head.

on the five infant templates (headers corrected, and as stored) and on synthetic infants drawn
from four cohorts: the paper's protocol, ``--varied`` with published and with calibrated
tissue curves, and template anatomy with acquisition variety (3-D and 2-D, skull-stripped,
smoothed, 1.5 and 3 T, SPGR/TSE, slices 1-6 mm). Takes ~3 minutes for 100 infants on 2 cores.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def _pair(t1, t2, affine):
    from kerasmyelin.wholebrain.volumes import make_pair

    return make_pair((t1, affine), (t2, affine), check=False)


def _verdict(pair) -> tuple[float, float, object, object]:
    """The contrast score as ``check_contrast_order`` sees it: aligned on the given T1w, and on the
    given T2w (its refit below the bar). Returns (score, refit score, the first order, the fit)."""
    from kerasmyelin.wholebrain.contrast_order import contrast_order
    from kerasmyelin.wholebrain.level_finder import find_levels
    from kerasmyelin.wholebrain.volumes import pair_outlines

    outline = pair_outlines(pair)[0]
    fits = [find_levels(v, pair.affine, skull_stripped=pair.skull_stripped, outline=o)
            for v, o in ((pair.t1, outline), (pair.t2, None))]
    orders = [contrast_order(pair.t1, pair.t2, pair.affine, f.mni_alignment, outline) for f in fits]
    return orders[0].score, orders[1].score, orders[0], fits[0]


def _measure(t1, t2, affine) -> dict:
    """Every measure of one pair, as given and swapped."""
    from kerasmyelin.wholebrain.plausibility import (
        brain_volume_ml,
        neighbour_correlation,
    )
    from kerasmyelin.wholebrain.volumes import pair_outlines

    pair = _pair(t1, t2, affine)
    score, refit, order, fit = _verdict(pair)
    swapped, swapped_refit, _, _ = _verdict(_pair(t2, t1, affine))
    outlines = pair_outlines(pair)
    return {"score": score, "refit": refit, "csf": np.nan if order.csf is None else order.csf,
            "fat": np.nan if order.fat is None else order.fat, "swapped": swapped, "swapped_refit": swapped_refit,
            "r_t1": neighbour_correlation(pair.t1, outlines[0]), "r_t2": neighbour_correlation(pair.t2, outlines[1]),
            "brain_ml": brain_volume_ml(fit), "dice": fit.dice, "reference": fit.reference,
            "reversed": fit.looks_reversed}


def _cohorts(n: int, seed: int, templates: str):
    from kerasmyelin.synth.cohort import VARIED, CohortConfig

    share = max(1, n // 4)
    yield "paper", CohortConfig(subjects=share, seed=seed)
    yield "varied", CohortConfig(subjects=share, seed=seed + 1, **VARIED)
    yield "varied-calibrated", CohortConfig(subjects=share, seed=seed + 2, tissue_curves="calibrated", **VARIED)
    if Path(templates).is_dir():
        yield "template-anatomy", CohortConfig(subjects=share, seed=seed + 3, tissue_curves="calibrated",
                                               acquisition_variety=1.0, research_fraction=0.5,
                                               skull_stripped_fraction=0.3, template_anatomy_fraction=1.0,
                                               templates=str(Path(templates).resolve()))


def _summary(label: str, rows: list[dict]) -> None:
    print(f"\n{label} ({len(rows)} pairs)")
    for key in ("score", "csf", "fat", "r_t1", "r_t2"):  # the right way round, aligned on the T1w
        print(f"  {key:14s} {span_of([r[key] for r in rows])}")
    # The check accepts from +MIN_SCORE (aligned on the given T1w) and calls a pair swapped at -MIN_SCORE
    # or less, on that alignment or, when it is undecided, on the given T2w's.
    print(f"  swapped        {span_of([r['swapped'] for r in rows])} (aligned on the given T1w, the T2w)")
    print(f"  swapped, lower {span_of([min(r['swapped'], r['swapped_refit']) for r in rows])} (of its two alignments)")
    ratio = [r["brain_ml"] / r["true_ml"] for r in rows if r.get("true_ml")]
    if ratio:
        q = np.percentile(ratio, [0, 5, 50, 95, 100])
        print(f"  brain estimate / truth: min {q[0]:.3f}, 5% {q[1]:.3f}, median {q[2]:.3f}, 95% {q[3]:.3f}, "
              f"max {q[4]:.3f}")
        for kind in ("head", "cerebrum"):
            # true volume x det(scales) = true volume x reference brain / estimate
            k = [r["true_ml"] * r["reference_ml"] / r["brain_ml"] for r in rows if r["reference"] == kind]
            if k:
                print(f"  {kind}: median true volume x det(scales) = {np.median(k):.0f} mL ({len(k)} infants)")
    print(f"  brain estimate: {span_of([r['brain_ml'] for r in rows])} mL")


def span_of(values) -> str:
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if not v.size:
        return "not measured"
    return f"{v.min():+.2f} to {v.max():+.2f} (median {np.median(v):+.2f}, {v.size} measured)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subjects", type=int, default=100)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--templates", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" /
                                                   "infant_templates"))
    args = parser.parse_args()

    from dataclasses import replace

    from kerasmyelin.synth.cohort import draw_cohort
    from kerasmyelin.synth.simulate import simulate_subject
    from kerasmyelin.wholebrain import plausibility

    if Path(args.templates).is_dir():
        from kerasmyelin.io.infant_templates import (
            TEMPLATE_MONTHS,
            corrected_image,
            template_file,
        )
        from kerasmyelin.io.nifti import load_volume

        for label, read in (("templates, headers corrected", lambda p: corrected_image(p)),
                            ("templates as stored", lambda p: load_volume(p))):
            rows = []
            for m in TEMPLATE_MONTHS:
                imgs = [read(template_file(args.templates, m, c)) for c in ("T1w", "T2w")]
                if isinstance(imgs[0], tuple):
                    (t1, affine), (t2, _) = imgs
                else:
                    t1, t2, affine = np.asarray(imgs[0].dataobj), np.asarray(imgs[1].dataobj), imgs[0].affine
                r = _measure(t1, t2, affine)
                print(f"{label}: {m:2d} months {_line(r)}", flush=True)
                rows.append(r)
            _summary(label, rows)

    rows = []
    for name, config in _cohorts(args.subjects, args.seed, args.templates):
        for spec in draw_cohort(config):
            scan = simulate_subject(spec)
            r = _measure(scan.t1w, scan.t2w, scan.affine)
            r["true_ml"] = spec.brain_volume_ml
            r["reference_ml"] = plausibility.REFERENCE_BRAIN_ML[r["reference"]]
            print(f"{name} {spec.participant_id} {spec.age_months:5.1f} mo {spec.protocol} "
                  f"stripped={spec.skull_stripped} {spec.anatomy} {spec.field_strength:g} T "
                  f"true {spec.brain_volume_ml:.0f} mL {_line(r)}", flush=True)
            rows.append(r)
    _summary("synthetic infants", rows)

    # Adult-sized: the synthetic anatomy at MNI's own size (1887 mL brain mask), 23.5-month tissue.
    from kerasmyelin.synth.cohort import CohortConfig

    adult = replace(draw_cohort(CohortConfig(subjects=2, seed=args.seed + 9))[0], age_months=23.5,
                    myelination_age_months=23.5, brain_volume_ml=1887.0)
    scan = simulate_subject(adult)
    print(f"\nadult-sized head (1887 mL): {_line(_measure(scan.t1w, scan.t2w, scan.affine))}")

    from kerasmyelin.wholebrain.volumes import pair_outlines

    rng = np.random.default_rng(0)
    affine = np.eye(4)
    affine[:3, 3] = -80.0
    cube = np.zeros((200, 200, 200), np.float32)
    cube[20:180, 20:180, 20:180] = 1.0
    block = np.zeros_like(cube)
    block[40:160, 30:170, 50:160] = 1.0
    for label, where in (("uniform noise filling a 200 mm volume", np.ones_like(cube)),
                         ("uniform noise, a 120x140x110 mm block in zeros", block)):
        pair = _pair(*(where * (rng.random(where.shape, np.float32) * 1000 + 1) for _ in range(2)), affine)
        o = pair_outlines(pair)
        print(f"{label} (skull-stripped: {pair.skull_stripped}): neighbour r "
              f"{plausibility.neighbour_correlation(pair.t1, o[0]):+.3f}, "
              f"{plausibility.neighbour_correlation(pair.t2, o[1]):+.3f}")


def _line(r: dict) -> str:
    return (f"score {r['score']:+.2f}/{r['refit']:+.2f} (csf {r['csf']:+.2f}, fat {r['fat']:+.2f}) swapped "
            f"{r['swapped']:+.2f}/{r['swapped_refit']:+.2f} r {r['r_t1']:.3f}/{r['r_t2']:.3f} brain {r['brain_ml']:.0f} mL "
            f"dice {r['dice']:.3f}{' reversed' if r['reversed'] else ''}")


if __name__ == "__main__":
    main()
