"""``kerasmyelin predict``: estimate myelination age from whole-brain NIfTI pairs or prepared slices.

Three sources: one infant's ``--t1``/``--t2`` pair (result.json + one-page report), many
infants from ``--bids`` or ``--csv`` (predictions.csv with one row per infant, failures
included), or a prepared ten-slice cache ``--data``.
"""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

from kerasmyelin.errors import InputError

NAME = "predict"
HELP = ("Estimate myelination age (months) from whole-brain T1w+T2w NIfTI (one infant, a BIDS folder, "
        "a CSV list) or a prepared ten-slice cache.")
EXAMPLES = """examples:
  kerasmyelin predict --model main/e100_ensemble --t1 T1w.nii.gz --t2 T2w.nii.gz --age-months 7.5 --out infant01
  kerasmyelin predict --model main/e100_ensemble --bids rawdata --out preds
  kerasmyelin predict --model main/e100_ensemble --csv scans.csv --out preds --reports
  kerasmyelin predict --model runs/ens --data cohort/derivatives/tenslice --out predictions.csv
--model takes a run folder (its model trained on all infants, RUN/full, or else the mean of its fold
models; the norms 'kerasmyelin evaluate' wrote give the interval and the delay grades), a fold folder
or a .keras file written by kerasmyelin; each carries its preparation settings (a model from before
they were recorded is refused unless --prep gives them). One infant writes OUT/result.json, OUT/report.png, OUT/report.pdf
and OUT/slices.npz. --bids/--csv write OUT/predictions.csv (status and error per infant) and
OUT/<subject>/result.json. A CSV list has columns subject,t1w,t2w[,age_months]. Ages are corrected
ages in months. A pair that looks swapped (CSF bright on the T1w), one image given twice, noise, or
voxels no infant head scan has is refused (docs/inputs.md); --swap-contrasts reads one infant's files
labelled the wrong way round. A brain far larger than an infant's is estimated but not graded. --out must lie outside the inputs (a BIDS folder's derivatives/ is fine). A batch is
built in OUT.kerasmyelin-partial and replaces OUT when every infant is done; if it is interrupted,
--resume continues it. Research use only.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="run folder, fold folder or .keras file")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--t1", help="one infant's T1w NIfTI (with --t2)")
    source.add_argument("--bids", help="BIDS raw folder: every subject/session with T1w and T2w")
    source.add_argument("--csv", help="CSV list with columns subject,t1w,t2w[,age_months]")
    source.add_argument("--data", help="ten-slice cache folder (tenslice.npz or shards.json, + manifest.json)")
    p.add_argument("--prep", metavar="SETTINGS",
                   help="only for a model from before models carried their preparation settings (it is refused "
                        "otherwise): 'paper', the ten-slice cache it was trained on, or a YAML file of the settings")
    p.add_argument("--t2", help="the same infant's T2w NIfTI (with --t1)")
    p.add_argument("--age-months", type=float, help="corrected age in months (with --t1): gives the gap and the delay grade")
    p.add_argument("--subject", default="subject", help="label shown in the report (with --t1; default: 'subject')")
    p.add_argument("--swap-contrasts", action="store_true",
                   help="with --t1/--t2: the files are labelled the wrong way round; use the --t2 file as the T1w and "
                        "the --t1 file as the T2w (a pair that looks swapped is refused otherwise)")
    p.add_argument("--skull-stripped", choices=("auto", "yes", "no"), default="auto",
                   help="are the images skull-stripped? auto: yes when >= 30%% of voxels are exactly the minimum")
    p.add_argument("--reports", action="store_true", help="with --bids/--csv: also write each infant's report")
    p.add_argument("--no-saliency", action="store_true", help="skip the saliency maps (faster)")
    p.add_argument("--jobs", type=int, help="with --bids/--csv: processes preparing infants (default: up to 2, "
                                            "one per core)")
    p.add_argument("--subjects", help="with --data: comma-separated participant ids (default: all)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier output of the same kind (a folder kerasmyelin marked as its output, "
                        "or with --data the predictions table)")
    p.add_argument("--resume", action="store_true",
                   help="with --bids/--csv: continue an interrupted batch for --out, keeping the infants done")
    p.add_argument("--out", help="output folder (--t1/--bids/--csv) or CSV to write (--data; default: print only)")


def prep_argument(args: argparse.Namespace) -> dict | None:
    """``--prep``'s settings (``model_record.prep_from_argument``), or None when not given."""
    from kerasmyelin.model_record import prep_from_argument

    return None if getattr(args, "prep", None) is None else prep_from_argument(args.prep)


def run(args: argparse.Namespace) -> int:
    if args.swap_contrasts and not args.t1:
        raise InputError("--swap-contrasts is for one infant (--t1/--t2); in a list, swap the t1w and t2w cells or "
                         "the files' names")
    if args.data is None:
        return _run_whole_brain(args)
    return _run_cache(args)


def _run_whole_brain(args: argparse.Namespace) -> int:
    from kerasmyelin.io.output_dir import OutputFolder
    from kerasmyelin.wholebrain.batch import (
        PREDICTIONS_CSV,
        PreparingPool,
        batch_folder,
        batch_settings,
        grade_summary,
        run_batch,
    )
    from kerasmyelin.io.ages import AGE_RANGE_MONTHS
    from kerasmyelin.wholebrain.manifest import jobs_from_bids, jobs_from_csv

    if not args.out:
        raise InputError("--out is required with --t1, --bids or --csv (the folder to write results to)")
    if args.t1 and not args.t2:
        raise InputError("--t1 needs --t2 (the same infant's T2w image)")
    if args.t1 and args.resume:
        raise InputError("--resume continues an interrupted batch (--bids or --csv); one infant is simply rerun")
    if args.age_months is not None and not AGE_RANGE_MONTHS[0] <= args.age_months <= AGE_RANGE_MONTHS[1]:
        raise InputError(f"--age-months {args.age_months} is outside {AGE_RANGE_MONTHS[0]:g} to "
                         f"{AGE_RANGE_MONTHS[1]:g}: give the corrected age in months (not weeks or days)")
    skull = {"auto": None, "yes": True, "no": False}[args.skull_stripped]
    inputs = [("--model", args.model), ("--t1", args.t1), ("--t2", args.t2), ("--bids", args.bids),
              ("--csv", args.csv)]
    bids_roots = [args.bids] if args.bids else []
    saliency = None if args.no_saliency else "integrated_gradients"
    if args.t1:
        # Checked, locked and staged before the model loads: a refusal comes in a second, not after ~10.
        with OutputFolder(args.out, "subject", overwrite=args.overwrite, inputs=inputs,
                          what="kerasmyelin predict") as folder:
            return _one_infant(args, skull, folder)
    # The list is read first (it is quick): its images are inputs that --out must stay apart from.
    jobs = jobs_from_bids(args.bids) if args.bids else jobs_from_csv(args.csv)
    folder = batch_folder(args.out, jobs, overwrite=args.overwrite, resume=args.resume, inputs=inputs,
                          bids_roots=bids_roots, settings=batch_settings(args.reports, saliency if args.reports else None))
    from kerasmyelin.runtime import cpu_count

    workers = args.jobs if args.jobs is not None else min(2, cpu_count())
    if workers < 1:
        raise InputError(f"--jobs must be at least 1, got {workers}")
    with folder:
        print(f"writing into {folder.work}; it replaces {folder.path} when every infant is done")
        # The preparing processes start first, so that their start-up overlaps with loading the
        # model and tracing its graph.
        with PreparingPool(workers) if workers > 1 else contextlib.nullcontext(1) as pool:
            estimator = _load_estimator(args)
            estimator.warm_up()
            rows = run_batch(jobs, estimator, folder, reports=args.reports,
                             saliency=saliency if args.reports else None, skull_stripped=skull, workers=pool)
    failed = [r for r in rows if r["status"] != "ok"]
    print(f"{len(rows) - len(failed)} of {len(rows)} infants estimated; wrote {folder.path / PREDICTIONS_CSV}")
    if rows:
        print(grade_summary(rows))
    if failed:
        print(f"{len(failed)} failed (see the error column): {', '.join(r['subject'] for r in failed[:10])}")
    return 1 if failed else 0


def _load_estimator(args: argparse.Namespace):
    from kerasmyelin.wholebrain.estimator import TrainedEstimator

    estimator = TrainedEstimator.from_path(args.model, prep_argument(args))
    if estimator.record_from == "--prep":
        print(f"note: {args.model} carries no preparation settings; serving it with --prep {args.prep}")
    if estimator.normative is None:
        print(f"note: no normative model for {args.model} ({estimator.normative_report.get('unavailable', 'a single model file')}); "
              "estimates come without interval or delay grade")
    return estimator


def _one_infant(args: argparse.Namespace, skull: bool | None, folder) -> int:
    from kerasmyelin.norms.model import NOT_GRADED
    from kerasmyelin.wholebrain.pipeline import (
        estimate_subject,
        prepare_scan,
        write_subject_files,
    )

    estimator = _load_estimator(args)
    saliency = None if args.no_saliency else "integrated_gradients"
    scan = prepare_scan(args.t1, args.t2, skull_stripped=skull, prep=estimator.prep_config,
                        swap_contrasts=args.swap_contrasts)
    result, attribution = estimate_subject(estimator, scan, subject=args.subject, age_months=args.age_months,
                                           saliency=saliency)
    written = [folder.path / n for n in write_subject_files(folder.work, result, scan, attribution, estimator)]
    interval = result["interval_months"]
    line = f"{args.subject}: estimated myelination age {result['estimate_months']:.1f} months"
    if interval:
        line += f" ({result['interval_level']:.0%} interval {interval[0]:.1f} to {interval[1]:.1f})"
    if result["grade"] == NOT_GRADED:
        if result["corrected_gap_months"] is not None:
            line += f"; corrected gap {result['corrected_gap_months']:+.1f} months"
        line += f"; NOT GRADED: check the input ({result['grade_reason_text']})"
    elif result["grade"]:
        line += f"; corrected gap {result['corrected_gap_months']:+.1f} months: {result['grade']}"
    print(line)
    if args.swap_contrasts:
        print(f"note: as asked (--swap-contrasts), {args.t2} was read as the T1w and {args.t1} as the T2w")
    for w in result["qc"]["warnings"]:
        print(f"warning: {w}")
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def _run_cache(args: argparse.Namespace) -> int:
    import numpy as np

    from kerasmyelin.data.shards import open_tenslice
    from kerasmyelin.io.predictions import looks_like_predictions, write_predictions
    from kerasmyelin.runs import NoRecordError
    from kerasmyelin.training.experiment import predict_ages
    from kerasmyelin.wholebrain.estimator import TrainedEstimator

    if args.resume:
        raise InputError("--resume continues an interrupted batch (--bids or --csv)")
    if args.out:
        from kerasmyelin.io.output_dir import check_output_file

        check_output_file(args.out, overwrite=args.overwrite, inputs=[("--model", args.model), ("--data", args.data)],
                          looks_ours=looks_like_predictions)
    if not Path(args.model).exists():
        # The model is named first: a wrong --model is the likelier mistake, and it costs nothing to check.
        raise InputError("no such model file or run folder", Path(args.model))
    data = open_tenslice(args.data)
    cache_prep = data.manifest.get("prep_config")
    try:
        estimator = TrainedEstimator.from_path(args.model, prep_argument(args))
    except NoRecordError:
        if not isinstance(cache_prep, dict):
            raise
        # The slices are prepared already: the cache's settings are the ones this estimate uses.
        estimator = TrainedEstimator.from_path(args.model, cache_prep)
    if isinstance(cache_prep, dict):
        want = estimator.prep_config.as_dict()
        differ = sorted(k for k, v in want.items() if k != "image_size" and k in cache_prep and cache_prep[k] != v)
        if differ:
            raise InputError(f"the cache was prepared with other settings than the model was trained with "
                             f"({', '.join(f'{k}: {cache_prep[k]!r}, model {want[k]!r}' for k in differ)}); prepare "
                             f"it again with the model's settings", Path(args.data))
    ids = data.participant_id.tolist()
    if args.subjects:
        wanted = [s.strip() for s in args.subjects.split(",") if s.strip()]
        unknown = [s for s in wanted if s not in ids]
        if unknown:
            raise InputError(f"no such participant(s): {', '.join(unknown)}", Path(args.data))
        positions = np.array([ids.index(s) for s in wanted])
    else:
        positions = np.arange(len(ids))
    size = estimator.image_size
    if data.image_shape[0] != size:
        raise InputError(f"the model takes {size}x{size} images but the cache holds "
                         f"{data.image_shape[0]}x{data.image_shape[1]}", Path(args.data))
    estimates = predict_ages(estimator.model, data, positions)
    columns = {"participant_id": data.participant_id[positions].tolist(),
               "age_months": data.age_months[positions].astype(np.float64),
               "predicted_months": estimates}
    for pid, age, est in zip(columns["participant_id"], columns["age_months"], estimates):
        print(f"{pid}\tage {age:6.2f}\testimated {est:6.2f} months")
    ages = columns["age_months"]
    if ages.size >= 3 and np.all(np.isfinite(ages)) and np.ptp(ages) > 0:
        from kerasmyelin.evaluation.metrics import age_metrics

        m = age_metrics(ages, estimates)
        print(f"{m['n']} infants: MAE {m['mae']:.2f} months, RMSE {m['rmse']:.2f}, Pearson r {m['pearson_r']:.3f}, "
              f"Spearman r {m['spearman_r']:.3f}, mean error {m['bias']:+.2f}")
    if args.out:
        write_predictions(Path(args.out), columns)
        print(f"wrote {args.out}")
    return 0
