"""The sim-to-real check (docs/wholebrain.md, "Real-data check"): a run's model on the five real
infant templates, and where the images differ from the synthetic infants'.

Usage: python experiments/template_check.py --model RUN --out DIR [--cohort COHORT] [--templates DIR]

Runs the whole pipeline on each template pair (reports under DIR) and prints the estimates, their
Spearman r with the template ages and the MAE. With --cohort, also prints the median of the
central 48x48 pixels of the prepared level-c T1w and T2w slices of each template beside an
age-matched 3 T synthetic infant, prepared with the model's own settings.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--cohort")
    parser.add_argument("--templates", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" /
                                                   "infant_templates"))
    args = parser.parse_args()

    import numpy as np
    from scipy import stats

    from kerasmyelin.validation.template_levels import (
        TEMPLATE_MONTHS,
        pipeline_on_templates,
        template_file,
    )

    rows = pipeline_on_templates(args.model, args.templates, args.out, progress=False)
    est = np.array([r["estimate_months"] for r in rows])
    ages = np.array(TEMPLATE_MONTHS, dtype=float)
    print("estimates (months): " + ", ".join(f"{m} mo {e:.1f}" for m, e in zip(TEMPLATE_MONTHS, est)))
    print(f"Spearman r {stats.spearmanr(ages, est).statistic:+.2f}   MAE {np.abs(est - ages).mean():.2f} months")
    print("warnings per template: " + ", ".join(str(len(r["warnings"])) for r in rows))
    if not args.cohort:
        return
    from kerasmyelin.wholebrain.estimator import TrainedEstimator
    from kerasmyelin.wholebrain.pipeline import prepare_scan

    prep = TrainedEstimator.from_path(args.model).prep_config
    cohort = Path(args.cohort)
    with open(cohort / "participants.tsv", newline="") as fh:
        infants = [r for r in csv.DictReader(fh, delimiter="\t") if r["field_strength"] == "3"]

    def core(scan, name):
        return float(np.median(scan.images[name][40:88, 40:88]))

    for m in TEMPLATE_MONTHS:
        twin = min(infants, key=lambda r: abs(float(r["age_months"]) - m))["participant_id"]
        tpl = prepare_scan(template_file(args.templates, m, "T1w"), template_file(args.templates, m, "T2w"), prep=prep)
        syn = prepare_scan(cohort / twin / "anat" / f"{twin}_T1w.nii.gz", cohort / twin / "anat" / f"{twin}_T2w.nii.gz",
                           prep=prep)
        print(f"{m:>2} months ({prep.intensity_reference} scaling): level-c core median T1w template "
              f"{core(tpl, 't1w_c'):.2f} vs {twin} {core(syn, 't1w_c'):.2f}; T2w {core(tpl, 't2w_c'):.2f} vs "
              f"{core(syn, 't2w_c'):.2f}")


if __name__ == "__main__":
    main()
