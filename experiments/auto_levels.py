"""Automatic slice levels for training data against the truth: level accuracy and what it costs the model.

A synthetic cohort with pose and protocol variety (`kerasmyelin synth --varied`, random head
pose) is prepared twice: with its true levels (derivatives/synth_truth/truth.tsv, `prepare
--levels`) and with levels found automatically (`prepare` without `--levels`: the level finder of
`predict`, doubtful infants left out as by default). Reported:

- the share of automatic levels within one slice of the truth, per level a-e and overall (every
  infant the finder placed, doubtful ones included), and how many infants were doubtful and why;
- the cross-validated MAE (months) of the paper's simple model on each cache
  (`kerasmyelin evaluate`, subject-level folds, `--epochs` and `--folds` as given).

Prints and writes WORK/auto_levels.json.

Usage: python experiments/auto_levels.py --work DIR [--subjects 40] [--epochs 20] [--folds 3] [--seed 7]
About 8 minutes on 2 busy cores at the defaults; the numbers are in docs/inputs.md ("Levels found
automatically").
Resumable: a step whose output exists is skipped. A tiny end-to-end check:
  python experiments/auto_levels.py --work /tmp/al_tiny --subjects 6 --epochs 1 --folds 2
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from steps import km, run_step

ROOT = Path(__file__).resolve().parents[1]
LEVEL_KEYS = ("a", "b", "c", "d", "e")


def _tsv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def level_accuracy(truth: Path, found: Path, doubtful: Path) -> dict:
    """Share within one slice of the truth, per level and overall, over the infants with levels
    (those left out as doubtful are n/a in levels.tsv; their found levels are in doubtful.tsv)."""
    true = {r["participant_id"]: r for r in _tsv(truth)}
    rows = {r["participant_id"]: r for r in _tsv(found)}
    for r in _tsv(doubtful):
        if r["slice_a"] != "n/a":
            rows[r["participant_id"]] = r
    placed = {p: r for p, r in rows.items() if r["slice_a"] != "n/a"}
    errors = {k: [abs(int(placed[p][f"slice_{k}"]) - int(true[p][f"slice_{k}"])) for p in sorted(placed)]
              for k in LEVEL_KEYS}
    every = [e for k in LEVEL_KEYS for e in errors[k]]
    return {"infants": len(true), "placed": len(placed),
            "within_one_slice": {k: round(sum(e <= 1 for e in v) / max(len(v), 1), 3) for k, v in errors.items()},
            "within_one_slice_overall": round(sum(e <= 1 for e in every) / max(len(every), 1), 3),
            "mean_abs_slices": round(sum(every) / max(len(every), 1), 3),
            "max_abs_slices": max(every, default=0)}


def _cv_mae(cache: Path, run: Path, epochs: int, folds: int, log: Path) -> dict:
    if not (run / "metrics.json").exists():
        run_step(km("evaluate", "--config", str(ROOT / "experiments" / "paper_simple.yaml"), "--data", str(cache),
                 "--out", str(run), "--set", f"train.epochs={epochs}", "--set", f"cv.folds={folds}", "--quiet"), log)
    metrics = json.loads((run / "metrics.json").read_text())
    first = next(iter(metrics["models"]))
    m = metrics["models"][first]
    return {"n": metrics.get("n", m.get("n")), "mae": round(float(m["mae"]), 3), "rmse": round(float(m["rmse"]), 3),
            "spearman_r": round(float(m["spearman_r"]), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", required=True)
    parser.add_argument("--subjects", type=int, default=40)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    work = Path(args.work).absolute()
    work.mkdir(parents=True, exist_ok=True)
    log = work / "log.txt"
    jobs = str(args.jobs)

    cohort = work / "cohort"
    if not (cohort / "participants.tsv").exists():
        run_step(km("synth", "--out", str(cohort), "--varied", "--subjects", str(args.subjects), "--seed",
                 str(args.seed), "--jobs", jobs, "--quiet", "--overwrite"), log)
    truth = cohort / "derivatives" / "synth_truth" / "truth.tsv"
    caches = {"truth": work / "cache_truth", "automatic": work / "cache_auto"}
    if not (caches["truth"] / "manifest.json").exists():
        run_step(km("prepare", "--bids", str(cohort), "--levels", str(truth), "--out", str(caches["truth"]),
                 "--jobs", jobs, "--quiet", "--overwrite"), log)
    if not (caches["automatic"] / "manifest.json").exists():
        run_step(km("prepare", "--bids", str(cohort), "--out", str(caches["automatic"]), "--jobs", jobs, "--quiet",
                 "--overwrite"), log)
    auto = caches["automatic"]
    result = {"settings": vars(args), "levels": level_accuracy(truth, auto / "levels.tsv", auto / "doubtful.tsv")}
    doubtful = _tsv(auto / "doubtful.tsv")
    result["doubtful"] = {"n": len(doubtful), "left_out": sum(r["in_cache"] == "no" for r in doubtful),
                          "reasons": {r["participant_id"]: r["reasons"] for r in doubtful}}
    result["cv"] = {tag: _cv_mae(cache, work / f"run_{tag}", args.epochs, args.folds, log)
                    for tag, cache in caches.items()}
    (work / "auto_levels.json").write_text(json.dumps(result, indent=1) + "\n")
    lv = result["levels"]
    print(f"levels within one slice of the truth ({lv['placed']} of {lv['infants']} infants placed): "
          + ", ".join(f"{k} {v:.0%}" for k, v in lv["within_one_slice"].items())
          + f"; overall {lv['within_one_slice_overall']:.1%} (mean |error| {lv['mean_abs_slices']:.2f} slices, "
          f"max {lv['max_abs_slices']})")
    print(f"doubtful: {result['doubtful']['n']} ({result['doubtful']['left_out']} left out): "
          f"{result['doubtful']['reasons']}")
    for tag, m in result["cv"].items():
        print(f"{tag:>9} levels: {args.folds}-fold CV, {args.epochs} epochs: MAE {m['mae']:.2f} months, "
              f"RMSE {m['rmse']:.2f}, Spearman r {m['spearman_r']:.2f} (n {m['n']})")
    print(f"wrote {work / 'auto_levels.json'}")


if __name__ == "__main__":
    main()
