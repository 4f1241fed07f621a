"""``kerasmyelin calibrate``: correct a model's estimates for one site from a few labelled local scans."""

from __future__ import annotations

import argparse

from kerasmyelin.errors import InputError

NAME = "calibrate"
HELP = ("Fit a monotone correction of a model's estimates on >= 5 labelled local scans, print its leave-one-out "
        "error, and write the corrected model (predict and every export apply it).")
EXAMPLES = """examples:
  kerasmyelin calibrate --model main/e100_ensemble --csv local_scans.csv --out site_a
  kerasmyelin calibrate --model main/e100_ensemble --bids rawdata --out site_a
  kerasmyelin predict --model site_a --t1 T1w.nii.gz --t2 T2w.nii.gz --age-months 7.5 --out infant01
The CSV has columns subject,t1w,t2w,age_months (corrected ages in months; a BIDS folder gives
them in participants.tsv). Every listed scan must have an age and pass predict's input checks:
a row that cannot be used stops the command, naming the file and row, rather than calibrating
on fewer scans than given. The correction is corrected = intercept + slope * estimate: the
offset alone below 10 scans, a Theil-Sen line from 10 (slope kept within 0.25-4); --kind
chooses. OUT holds model.keras (the model with the correction inside its graph, and its record),
calibration.json (the fit and each scan's estimates, without paths) and calibration.png. The
run's norms describe the uncorrected estimates, so OUT has norms only from 20 scans on, fitted
on the leave-one-out corrected estimates; below that, estimates come without interval or
grade. Details: docs/own_scans.md.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="run folder, fold folder or .keras file to calibrate")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--csv", help="CSV list with columns subject,t1w,t2w,age_months")
    source.add_argument("--bids", help="BIDS raw folder with ages in participants.tsv")
    p.add_argument("--out", required=True, help="folder for the calibrated model")
    p.add_argument("--kind", choices=("auto", "offset", "linear"), default="auto",
                   help="offset only, a line, or auto (offset below 10 scans, else a line)")
    p.add_argument("--prep", metavar="SETTINGS",
                   help="only for a model from before models carried their preparation settings: 'paper', "
                        "the ten-slice cache it was trained on, or a YAML file of the settings")
    p.add_argument("--skull-stripped", choices=("auto", "yes", "no"), default="auto",
                   help="are the images skull-stripped? (as for predict)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier calibrated model at --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    import dataclasses
    import json
    from pathlib import Path

    import numpy as np
    from tqdm.auto import tqdm

    from kerasmyelin.cli.predict_cmd import prep_argument
    from kerasmyelin.evaluation.plots import save_calibration_plot
    from kerasmyelin.io.output_dir import OutputFolder
    from kerasmyelin.models.site_calibration import with_site_calibration
    from kerasmyelin.norms.calibration import MIN_SCANS, fit_site_calibration
    from kerasmyelin.norms.model import MIN_INFANTS
    from kerasmyelin.training.callbacks import save_keras_atomic
    from kerasmyelin.wholebrain.estimator import TrainedEstimator
    from kerasmyelin.wholebrain.manifest import jobs_from_bids, jobs_from_csv
    from kerasmyelin.wholebrain.pipeline import prepare_scan

    listing = Path(args.csv or args.bids)
    inputs = [("--model", args.model), ("--csv" if args.csv else "--bids", listing)]
    jobs = jobs_from_csv(listing) if args.csv else jobs_from_bids(listing)
    bad = [j.error for j in jobs if j.error]
    if bad:
        raise InputError(f"{len(bad)} listed scan(s) cannot be used; fix or remove them: " + "; ".join(bad[:5]),
                         listing)
    unlabelled = [j.subject for j in jobs if j.age_months is None]
    if unlabelled:
        raise InputError(f"no corrected age for {', '.join(unlabelled[:5])}: every scan of a calibration needs "
                         "one (column age_months)", listing)
    if len(jobs) < MIN_SCANS:
        raise InputError(f"{len(jobs)} labelled scan(s); a site calibration needs at least {MIN_SCANS}", listing)
    skull = {"auto": None, "yes": True, "no": False}[args.skull_stripped]
    with OutputFolder(args.out, "calibrated", overwrite=args.overwrite, inputs=inputs,
                      what="kerasmyelin calibrate") as folder:
        estimator = TrainedEstimator.from_path(args.model, prep_argument(args))
        if estimator.record.calibration is not None:
            raise InputError("this model is already site-calibrated; calibrate the model it was made from",
                             Path(args.model))
        estimates, failed = [], []
        for job in tqdm(jobs, desc="calibrate", unit="scan", disable=args.quiet):
            try:
                scan = prepare_scan(job.t1w, job.t2w, skull_stripped=skull, prep=estimator.prep_config)
            except InputError as exc:
                failed.append(f"{job.subject}: {exc}")
                continue
            estimates.append(estimator.predict(scan.images))
        if failed:
            raise InputError(f"{len(failed)} scan(s) were refused; fix or remove them: " + "; ".join(failed[:5]),
                             listing)
        ages = np.array([j.age_months for j in jobs], dtype=np.float64)
        raw = np.array(estimates, dtype=np.float64)
        fit = fit_site_calibration(ages, raw, args.kind)
        normative, report = None, None
        if fit.n >= MIN_INFANTS:
            from kerasmyelin.norms.fit import cross_validate_normative, fit_normative

            folds = np.arange(fit.n) % 5
            loo = np.asarray(fit.loo_estimates)
            normative = fit_normative(ages, loo, folds).to_dict()
            report = {"fitted_on": "the calibration scans' leave-one-out corrected estimates",
                      **cross_validate_normative(ages, loo, folds)}
        record = dataclasses.replace(estimator.record, normative=normative, norms_report=report,
                                     calibration=fit.summary())
        model = with_site_calibration(estimator.model, fit.slope, fit.intercept)
        save_keras_atomic(model, folder.work / "model.keras", record=record.dumps())
        table = [{"subject": j.subject, "age_months": round(float(a), 3), "estimate_months": round(float(r), 3),
                  "loo_corrected_months": round(float(h), 3)}
                 for j, a, r, h in zip(jobs, ages, raw, fit.loo_estimates)]
        (folder.work / "calibration.json").write_text(json.dumps(
            {"model": estimator.version, "fit": fit.summary(), "scans": table}, indent=1) + "\n")
        save_calibration_plot(ages, raw, fit.loo_estimates, folder.work / "calibration.png",
                              f"site calibration of {estimator.name} on {fit.n} scans ({fit.kind})")
    sign = "+" if fit.intercept >= 0 else "-"
    print(f"site calibration ({fit.kind}) on {fit.n} scans: corrected = {fit.slope:.3f} x estimate {sign} "
          f"{abs(fit.intercept):.2f} months")
    print(f"MAE {fit.raw_mae:.2f} months as is; {fit.loo_mae:.2f} months calibrated (leave-one-out: each scan "
          "corrected by the fit on the others)")
    if normative is None:
        print(f"no norms: the run's norms describe uncorrected estimates, and new ones need {MIN_INFANTS} scans; "
              "estimates from this model come without interval or grade")
    print(f"wrote {folder.path} (model.keras, calibration.json, calibration.png)")
    return 0
