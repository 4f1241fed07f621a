"""Leave-one-template-out: does calibrating the tissue curves bring real templates closer?

For each template age m, everything the model for that template is built from is made without
the template of age m: tissue curves fitted to the other four ages (`calibrate-synth --months`),
a varied synthetic cohort drawn with those curves, the recipe docs/wholebrain.md recommends for
real scans (brain-core scaling, the paper's simple model, 100 epochs on all 119 infants), and
then the template of age m is estimated. A baseline arm does the same with the published curves
(no template used, so one model serves all five). Prints and writes the table of
docs/realism.md.

Usage: python experiments/realism_loto.py --work DIR [--templates DIR] [--epochs 100]
       [--arms calibrated,published,calibrated+augment,calibrated+scaffolds]

An arm is "calibrated" or "published", then any of these modifiers joined by "+":
  augment               train with flips, gains and random monotone intensity curves
                        (train.augment, train.intensity_curves), as `kerasmyelin pretrain` does
  scaffolds             half the infants built on anatomy scaffolds segmented from the templates
                        (`synth --template-anatomy`), from the other four only (`--template-months`)
  scaffold-calibration  the curves fitted on each template's own scaffold
                        (`calibrate-synth --anatomy templates`), again without template m
  acquisition           half the infants with their own slice thickness, in-plane resolution and
                        research sequences (`synth --acquisition-variety 0.5`)
So template m gives neither a calibration cell nor an anatomy. The pretrain recipe with
--templates, less the ensemble, is calibrated+scaffold-calibration+scaffolds+acquisition+augment.

Resumable: a step whose output exists is skipped (delete DIR/<step> to redo it). About 6 minutes
per model on 2 cores (synth 40 s, prepare 30 s, train 3 min, the pipeline on a template 20 s).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

MONTHS = (0, 6, 9, 12, 24)
MODIFIERS = {"augment", "scaffolds", "acquisition", "scaffold-calibration"}
RECIPE = "calibrated+scaffold-calibration+scaffolds+acquisition+augment"  # what `pretrain --templates` does
from steps import run_step, template_summary

ROOT = Path(__file__).resolve().parents[1]


def _model(work: Path, tag: str, curves: str, epochs: int, log: Path, augment: bool = False,
           synth_extra: tuple[str, ...] = ()) -> Path:
    cohort, cache = work / f"cohort_{tag}", work / f"cache_{tag}"
    run = work / (f"run_{tag}" + ("_augmented" if augment else ""))
    km = "kerasmyelin"
    if not (cohort / "participants.tsv").exists():
        run_step([km, "synth", "--out", str(cohort), "--varied", "--tissue-curves", curves, "--jobs", "2", "--quiet",
              "--overwrite", *synth_extra], log)
    if not (cache / "manifest.json").exists():
        run_step([km, "prepare", "--bids", str(cohort), "--levels", str(cohort / "derivatives" / "synth_truth" / "truth.tsv"),
              "--out", str(cache), "--intensity-reference", "brain_core", "--jobs", "2", "--quiet", "--overwrite"], log)
    if not (run / "full").exists():
        run_step([km, "train", "--config", str(ROOT / "experiments" / "paper_simple.yaml"), "--data", str(cache),
              "--out", str(run), "--fold", "full", "--set", f"train.epochs={epochs}", "--quiet"]
             + (["--set", "train.augment=true", "--set", "train.intensity_curves=true"] if augment else []), log)
    return run


def _headed(work: Path, templates: Path, months: int) -> tuple[Path, Path]:
    """The template inside a simulated head (built once). Its layers' contrast comes from the
    published curves, which no template shaped, so nothing of template m enters through them."""
    from kerasmyelin.validation.template_head import headed_template_files

    folder = work / "headed"
    files = tuple(folder / f"Template-Month{months}-head-{c}.nii.gz" for c in ("T1w", "T2w"))
    if not all(f.exists() for f in files):
        folder.mkdir(exist_ok=True)
        files = headed_template_files(templates, months, folder, curves="published")
    return files


def _estimate(run: Path, templates: Path, months: int, head_files=None) -> float:
    import tempfile

    from kerasmyelin.validation.template_levels import corrected_template_files
    from kerasmyelin.wholebrain.pipeline import TrainedEstimator, estimate_subject, prepare_scan

    estimator = TrainedEstimator.from_path(run)
    with tempfile.TemporaryDirectory() as tmp:
        files = head_files or corrected_template_files(templates, months, tmp)
        scan = prepare_scan(*files, prep=estimator.prep_config)  # skull-stripping detected, as predict does
    result, _ = estimate_subject(estimator, scan, subject=f"template-{months}mo", age_months=float(months))
    return float(result["estimate_months"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", required=True)
    parser.add_argument("--templates", default=str(ROOT.parent / "shared" / "data" / "infant_templates"))
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--arms", default="calibrated,published")
    parser.add_argument("--with-head", action="store_true",
                        help="also estimate each template inside a simulated head (validation.template_head)")
    args = parser.parse_args()
    work, templates = Path(args.work), Path(args.templates)
    work.mkdir(parents=True, exist_ok=True)
    log = work / "log.txt"
    saved = work / "results.json"
    results = json.loads(saved.read_text()) if saved.exists() else {}  # earlier invocations' arms
    for arm in args.arms.split(","):
        base, *mods = arm.split("+")
        if base not in ("calibrated", "published") or not set(mods) <= MODIFIERS:
            sys.exit(f"unknown arm {arm!r}: calibrated or published, then any of +{', +'.join(sorted(MODIFIERS))}")
        if base == "published" and set(mods) - {"augment"}:
            sys.exit(f"arm {arm!r}: the published arm takes only +augment")
        augment = "augment" in mods
        estimates = {}
        for m in MONTHS:
            done = work / f"estimate_{arm.replace('+', '_')}_{m}.json"
            if done.exists():
                estimates[m] = json.loads(done.read_text())["estimate_months"]
                continue
            print(f"{arm}, template {m} months held out", flush=True)
            if base == "published":
                run = _model(work, "published", "published", args.epochs, log, augment)
            else:
                others = ",".join(str(x) for x in MONTHS if x != m)
                on_scaffolds = "scaffold-calibration" in mods
                curves = work / f"curves_without_{m}{'_on_scaffolds' if on_scaffolds else ''}.json"
                if not curves.exists():
                    run_step(["kerasmyelin", "calibrate-synth", "--templates", str(templates), "--out", str(curves),
                          "--months", others, *(["--anatomy", "templates"] if on_scaffolds else [])], log)
                extra, tag = [], f"without_{m}"
                if on_scaffolds:
                    tag += "_scaffoldcal"
                if "scaffolds" in mods:
                    extra += ["--template-anatomy", str(templates), "--template-months", others]
                    tag += "_scaffolds"
                if "acquisition" in mods:
                    extra += ["--acquisition-variety", "0.5"]
                    tag += "_acquisition"
                run = _model(work, tag, str(curves), args.epochs, log, augment, synth_extra=tuple(extra))
            estimates[m] = _estimate(run, templates, m)
            done.write_text(json.dumps({"estimate_months": estimates[m], "run": str(run)}) + "\n")
            print(f"  template {m} months estimated {estimates[m]:.2f}", flush=True)
        results[arm] = template_summary(estimates)
        if args.with_head:
            headed = {}
            for m in MONTHS:
                done = work / f"estimate_{arm.replace('+', '_')}_{m}_head.json"
                if not done.exists():
                    run = Path(json.loads((work / f"estimate_{arm.replace('+', '_')}_{m}.json").read_text())["run"])
                    value = _estimate(run, templates, m, _headed(work, templates, m))
                    done.write_text(json.dumps({"estimate_months": value, "run": str(run)}) + "\n")
                    print(f"  template {m} months in a simulated head estimated {value:.2f}", flush=True)
                headed[m] = json.loads(done.read_text())["estimate_months"]
            results[arm + " (simulated head)"] = template_summary(headed)
    saved.write_text(json.dumps(results, indent=1) + "\n")
    print("| tissue curves | " + " | ".join(f"{m} mo" for m in MONTHS) + " | Spearman r | MAE | slope |")
    print("|---|" + "---|" * (len(MONTHS) + 3))
    for arm, r in results.items():
        print(f"| {arm} | " + " | ".join(f"{r['estimates'][str(m)]:.1f}" for m in MONTHS)
              + f" | {r['spearman_r']:+.2f} | {r['mae_months']:.2f} | {r['slope']:.2f} |")


if __name__ == "__main__":
    main()
