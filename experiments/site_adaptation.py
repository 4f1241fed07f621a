"""Adapting a model to a new site from a few labelled scans: from scratch, fine-tuned, calibrated.

The shift the project can simulate: a model pretrained on the paper-protocol cohort (119
infants, `kerasmyelin synth`, seed 0) meets the varied cohort (other protocols, scanners and
poses; `synth --varied`) drawn with a seed no model trained on. Its first 40 infants are the
"site's labelled scans" (N = 5, 10, 20, 40 of them, nested), its last 40 are the unseen infants
every arm is evaluated on, through the whole-brain path (`predict --csv`: levels found, slices
prepared as the model's record says). Arms, for each N:

- as is: the pretrained model, unchanged (one row: it does not use the N scans);
- from scratch: the paper's simple model trained on the N scans only (`train --fold full`);
- fine-tuned: the pretrained model trained further on the N scans (`train --init-from`, a
  lower learning rate and fewer epochs, the recipe docs/training.md gives for small cohorts);
- calibrated: the pretrained model with a site calibration fitted on the N scans
  (`kerasmyelin calibrate`).

Every model uses brain-core intensity scaling (the recipe for real scans). Prints and writes
WORK/site_adaptation.json and the table of docs/own_scans.md. One seed, one run per cell: the
leave-one-template-out repeats (docs/realism.md) put run-to-run spread in perspective.

Usage: python experiments/site_adaptation.py --work DIR [--epochs 100] [--finetune-epochs 30]
Resumable: a step whose output exists is skipped. About 15 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from steps import km, run_step

ROOT = Path(__file__).resolve().parents[1]
SIZES = (5, 10, 20, 40)
EVAL = 40
SITE_SEED = 4242  # no model of the project is trained on this cohort's seed


def _cohort_and_cache(work: Path, tag: str, synth: list[str], log: Path) -> tuple[Path, Path]:
    cohort, cache = work / f"cohort_{tag}", work / f"cache_{tag}"
    if not (cohort / "participants.tsv").exists():
        run_step(km("synth", "--out", str(cohort), "--jobs", "2", "--quiet", "--overwrite", *synth), log)
    if not (cache / "manifest.json").exists():
        run_step(km("prepare", "--bids", str(cohort), "--levels", str(cohort / "derivatives" / "synth_truth" / "truth.tsv"),
                 "--out", str(cache), "--intensity-reference", "brain_core", "--jobs", "2", "--quiet", "--overwrite"),
             log)
    return cohort, cache


def _subset_cache(cache: Path, ids: list[str], out: Path) -> Path:
    """The cache's infants ``ids`` as a cache of their own (same preparation settings)."""
    import numpy as np

    from kerasmyelin.data.cache import write_cache
    from kerasmyelin.data.shards import open_tenslice

    if (out / "manifest.json").exists():
        return out
    data = open_tenslice(cache)
    pos = [data.participant_id.tolist().index(p) for p in ids]
    images = data.images_at(np.array(pos))
    return write_cache(out, images, list(ids), data.age_months[pos], dict(data.manifest))


def _listing(cohort: Path, ids: list[str], ages: dict[str, float], path: Path) -> Path:
    rows = ["subject,t1w,t2w,age_months"]
    for pid in ids:
        anat = cohort / pid / "anat"
        rows.append(f"{pid},{anat / f'{pid}_T1w.nii.gz'},{anat / f'{pid}_T2w.nii.gz'},{ages[pid]}")
    path.write_text("\n".join(rows) + "\n")
    return path


def _evaluate(model: Path, listing: Path, out: Path, log: Path) -> dict:
    import numpy as np
    from scipy import stats

    if not (out / "predictions.csv").exists():
        # Exit code 1: some infants failed predict's input checks; they are counted, not scored.
        run_step(km("predict", "--model", str(model), "--csv", str(listing), "--out", str(out), "--overwrite"), log,
             ok=(0, 1))
    with open(out / "predictions.csv") as fh:
        every = list(csv.DictReader(fh))
    rows = [r for r in every if r["status"] == "ok"]
    y = np.array([float(r["age_months"]) for r in rows])
    e = np.array([float(r["estimate_months"]) for r in rows])
    return {"n": int(y.size), "failed": [r["subject"] for r in every if r["status"] != "ok"], "mae": round(float(np.mean(np.abs(e - y))), 2),
            "spearman_r": round(float(stats.spearmanr(y, e).statistic), 3),
            "slope": round(float(np.polyfit(y, e, 1)[0]), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", required=True)
    parser.add_argument("--epochs", type=int, default=100, help="pretraining and from-scratch epochs")
    parser.add_argument("--finetune-epochs", type=int, default=30)
    parser.add_argument("--finetune-lr", type=float, default=1e-4)
    parser.add_argument("--freeze-branches", action="store_true", help="fine-tune the dense layers only")
    args = parser.parse_args()
    work = Path(args.work).absolute()
    work.mkdir(parents=True, exist_ok=True)
    log = work / "log.txt"
    config = str(ROOT / "experiments" / "paper_simple.yaml")

    _, paper_cache = _cohort_and_cache(work, "paper", [], log)
    pretrained = work / "run_pretrained"
    if not (pretrained / "full" / "model.keras").exists():
        run_step(km("train", "--config", config, "--data", str(paper_cache), "--out", str(pretrained), "--fold", "full",
                 "--set", f"train.epochs={args.epochs}", "--quiet"), log)
    site, site_cache = _cohort_and_cache(work, "site", ["--varied", "--seed", str(SITE_SEED), "--subjects",
                                                        str(max(SIZES) + EVAL)], log)
    with open(site / "participants.tsv") as fh:
        ages = {r["participant_id"]: float(r["age_months"]) for r in csv.DictReader(fh, delimiter="\t")}
    ids = sorted(ages)
    pool, held_out = ids[:max(SIZES)], ids[max(SIZES):max(SIZES) + EVAL]
    eval_list = _listing(site, held_out, ages, work / "eval.csv")

    results = {"as is": _evaluate(pretrained, eval_list, work / "eval_as_is", log)}
    for n in SIZES:
        # Every N-th of the pool, so that each subset spans the ages (ids are in no age order).
        chosen = sorted(pool, key=lambda p: ages[p])[:: max(1, max(SIZES) // n)][:n]
        subset = _subset_cache(site_cache, chosen, work / f"cache_site_{n}")
        scratch = work / f"run_scratch_{n}"
        if not (scratch / "full" / "model.keras").exists():
            run_step(km("train", "--config", config, "--data", str(subset), "--out", str(scratch), "--fold", "full",
                     "--set", f"train.epochs={args.epochs}", "--quiet"), log)
        tuned = work / (f"run_finetuned_{n}" + ("_frozen" if args.freeze_branches else ""))
        if not (tuned / "full" / "model.keras").exists():
            extra = ["--set", "train.freeze_branches=true"] if args.freeze_branches else []
            run_step(km("train", "--config", config, "--data", str(subset), "--out", str(tuned), "--fold", "full",
                     "--init-from", str(pretrained), "--set", f"train.epochs={args.finetune_epochs}",
                     "--set", f"train.learning_rate={args.finetune_lr}", "--quiet", *extra), log)
        calibrated = work / f"calibrated_{n}"
        # calibrate refuses a list with a scan that predict's input checks refuse (as it should for a
        # user's list); here those scans are left out of the calibration and counted.
        _evaluate(pretrained, _listing(site, chosen, ages, work / f"site_{n}.csv"), work / f"checked_{n}", log)
        with open(work / f"checked_{n}" / "predictions.csv") as fh:
            accepted = [r["subject"] for r in csv.DictReader(fh) if r["status"] == "ok"]
        if not (calibrated / "model.keras").exists():
            run_step(km("calibrate", "--model", str(pretrained), "--csv",
                     str(_listing(site, accepted, ages, work / f"site_{n}_accepted.csv")), "--out", str(calibrated),
                     "--overwrite", "--quiet"), log)
        results[f"N={n}"] = {"from scratch": _evaluate(scratch, eval_list, work / f"eval_scratch_{n}", log),
                             "fine-tuned": _evaluate(tuned, eval_list, work / f"eval_{tuned.name}", log),
                             "calibrated": _evaluate(calibrated, eval_list, work / f"eval_calibrated_{n}", log),
                             "calibrated on": len(accepted)}
    (work / "site_adaptation.json").write_text(json.dumps(results, indent=1) + "\n")
    a = results["as is"]
    print(f"\nevaluated on {a['n']} unseen varied infants ({len(a['failed'])} refused by predict's input checks: "
          f"{', '.join(a['failed']) or 'none'}); MAE months (Spearman r, slope)")
    print("| labelled scans | from scratch | fine-tuned | calibrated | as is |")
    print("|---|---|---|---|---|")
    cell = lambda m: f"{m['mae']:.2f} ({m['spearman_r']:+.2f}, {m['slope']:.2f})"  # noqa: E731
    for n in SIZES:
        r = results[f"N={n}"]
        print(f"| {n} | {cell(r['from scratch'])} | {cell(r['fine-tuned'])} | {cell(r['calibrated'])}, on {r['calibrated on']} | {cell(a)} |")


if __name__ == "__main__":
    main()
