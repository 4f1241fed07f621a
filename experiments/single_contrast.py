"""T1w-only, T2w-only and T1w+T2w networks side by side (issue 18 part 3).

1. The paper's setting: the paper-protocol synthetic cohort (`kerasmyelin synth`, 119 infants,
   seed 0, the published tissue curves), prepared as the paper (head scaling), each network
   cross-validated by subject (`kerasmyelin evaluate`, 4 folds) for EPOCHS epochs: Spearman r,
   RMSE and MAE of the out-of-fold estimates beside the oracle floor.
2. The real templates: a varied cohort with the published curves (no template shaped it, so all
   five templates are held out), brain-core scaling (the recipe for real scans), each network
   trained on all its infants and estimating the five templates (headers corrected, as stored:
   skull-stripped).

Prints the two tables of docs/training.md ("Single-contrast networks") and writes
WORK/single_contrast.json. Resumable: a step whose output exists is skipped. One seed, one run
per cell.

Usage: python experiments/single_contrast.py --work DIR [--epochs 100] [--subjects 119]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from steps import km, run_step, template_summary

ROOT = Path(__file__).resolve().parents[1]
NETWORKS = {"T1w+T2w": "paper_simple.yaml", "T1w only": "paper_t1w_only.yaml", "T2w only": "paper_t2w_only.yaml"}
MONTHS = (0, 6, 9, 12, 24)


def _cache(work: Path, tag: str, synth: list[str], reference: str, log: Path) -> Path:
    cohort = work / f"cohort_{tag}"
    # synth writes the paper's cache (head scaling) beside synth_truth/, where evaluate finds the
    # oracle's truth; any other preparation goes to a cache of its own.
    cache = cohort / "derivatives" / "tenslice" if reference == "head" else work / f"cache_{tag}"
    if not (cohort / "participants.tsv").exists():
        run_step(km("synth", "--out", str(cohort), "--jobs", "2", "--quiet", "--overwrite", *synth), log)
    if not (cache / "manifest.json").exists():
        run_step(km("prepare", "--bids", str(cohort), "--levels", str(cohort / "derivatives" / "synth_truth" / "truth.tsv"),
                 "--out", str(cache), "--intensity-reference", reference, "--jobs", "2", "--quiet", "--overwrite"), log)
    return cache


def _template_estimates(run: Path, templates: Path) -> dict:
    import tempfile


    from kerasmyelin.validation.template_levels import corrected_template_files
    from kerasmyelin.wholebrain.pipeline import TrainedEstimator, estimate_subject, prepare_scan

    estimator = TrainedEstimator.from_path(run)
    out = {}
    for months in MONTHS:
        with tempfile.TemporaryDirectory() as tmp:
            files = corrected_template_files(templates, months, tmp)
            scan = prepare_scan(*files, prep=estimator.prep_config)
        result, _ = estimate_subject(estimator, scan, subject=f"template-{months}mo", age_months=float(months),
                                     saliency=None)
        out[months] = float(result["estimate_months"])
    return template_summary(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", required=True)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--subjects", type=int, default=119, help="infants per cohort (a quick try: 16)")
    parser.add_argument("--templates", default=str(ROOT.parent / "shared" / "data" / "infant_templates"))
    args = parser.parse_args()
    work = Path(args.work).absolute()
    work.mkdir(parents=True, exist_ok=True)
    log = work / "log.txt"
    results: dict = {"epochs": args.epochs, "cross_validated": {}, "templates": {}}

    size = ["--subjects", str(args.subjects)]
    paper = _cache(work, "paper", size, "head", log)
    for label, yaml in NETWORKS.items():
        run = work / f"cv_{yaml.removesuffix('.yaml')}"
        if not (run / "metrics.json").exists():
            run_step(km("evaluate", "--config", str(ROOT / "experiments" / yaml), "--data", str(paper), "--out", str(run),
                     "--set", f"train.epochs={args.epochs}", "--quiet"), log)
        metrics = json.loads((run / "metrics.json").read_text())
        results["cross_validated"][label] = metrics
    varied = _cache(work, "varied", ["--varied", *size], "brain_core", log)
    for label, yaml in NETWORKS.items():
        run = work / f"full_{yaml.removesuffix('.yaml')}"
        if not (run / "full" / "model.keras").exists():
            run_step(km("train", "--config", str(ROOT / "experiments" / yaml), "--data", str(varied), "--out", str(run),
                     "--fold", "full", "--set", f"train.epochs={args.epochs}", "--quiet"), log)
        results["templates"][label] = _template_estimates(run, Path(args.templates))
    (work / "single_contrast.json").write_text(json.dumps(results, indent=1) + "\n")

    print(f"\ncross-validated on the paper-protocol cohort (4 folds, {args.epochs} epochs):")
    print("| network | r (Spearman) | RMSE | MAE | MAE / oracle floor |")
    print("|---|---|---|---|---|")
    floor = None
    for label, report in results["cross_validated"].items():
        m = _simple_metrics(report)
        floor = report.get("oracle_floor") or floor
        ratio = f"{m['mae'] / floor['mae']:.2f}" if floor else "n/a"
        print(f"| {label} | {m['spearman_r']:.2f} | {m['rmse']:.2f} | {m['mae']:.2f} | {ratio} |")
    if floor:
        print(f"| oracle floor | {floor['pearson_r']:.2f} (Pearson) | {floor['rmse']:.2f} | {floor['mae']:.2f} | 1.00 |")
    print(f"\nthe five real templates (skull-stripped as stored; varied cohort, published curves, {args.epochs} epochs):")
    print("| network | " + " | ".join(f"{m} mo" for m in MONTHS) + " | Spearman r | MAE | slope |")
    print("|---|" + "---|" * (len(MONTHS) + 3))
    for label, t in results["templates"].items():
        cells = " | ".join(f"{t['estimates'][str(m)]:.1f}" for m in MONTHS)
        print(f"| {label} | {cells} | {t['spearman_r']:+.2f} | {t['mae_months']:.2f} | {t['slope']:.2f} |")


def _simple_metrics(report: dict) -> dict:
    """The simple model's metrics in an evaluate report (``evaluation.report``)."""
    m = report["models"]["simple"]
    return {"spearman_r": m["spearman_r"], "rmse": m["rmse"], "mae": m["mae"]}


if __name__ == "__main__":
    main()
