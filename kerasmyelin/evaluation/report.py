"""Cross-validated results of a run: metrics per model, the oracle floor beside them, Figure 4,
and the paper's Table 1.

For an ensemble run every combining rule is scored on the same out-of-fold member estimates,
so "which rule wins" is measured, and the members alone are scored too.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from kerasmyelin.evaluation.metrics import age_metrics
from kerasmyelin.io.atomic import write_text_atomic

# Wada et al. 2019, Table 1 (119 infants; how the estimates were validated is not stated).
PAPER_TABLE1 = {"simple": {"r": 0.81, "rmse": 3.40, "mae": 2.28},
                "ensemble": {"r": 0.93, "rmse": 2.12, "mae": 1.34}}
METRICS_FILE = "metrics.json"
SCATTER_FILE = "figure4.png"


def synthetic_truth(data_dir: str | os.PathLike) -> dict[str, float] | None:
    """participant id -> myelination age (months) when the cache belongs to a synthetic cohort
    (``derivatives/synth_truth/truth.tsv`` beside ``derivatives/tenslice``), else None."""
    from kerasmyelin.io.tables import parse_number, read_tsv

    path = Path(data_dir).parent / "synth_truth" / "truth.tsv"
    if not path.is_file():
        return None
    rows = read_tsv(path, ("participant_id", "myelination_age_months"))
    return {r["participant_id"]: float(parse_number(r, "myelination_age_months", path)) for r in rows}


def oracle_for(truth: dict[str, float] | None, participant_id, age_months) -> dict | None:
    """The oracle floor (``synth.oracle``) on exactly these infants, or None without truth."""
    from kerasmyelin.synth.oracle import oracle_floor

    if truth is None:
        return None
    ids = [str(p) for p in participant_id]
    if any(p not in truth for p in ids):
        return None
    return oracle_floor(np.asarray(age_months, dtype=np.float64), np.array([truth[p] for p in ids]))


def estimate_columns(predictions: dict[str, np.ndarray], config) -> dict[str, str]:
    """Label -> predictions column of every estimate worth scoring in a run."""
    if not config.is_ensemble:
        return {"simple": "predicted_months"}
    out = {f"ensemble ({config.ensemble.rule}, exported)": "predicted_months"}
    for rule in ("average", "gate"):
        if rule != config.ensemble.rule and f"{rule}_months" in predictions:
            out[f"ensemble ({rule})"] = f"{rule}_months"
    for member in config.ensemble.members:
        out[f"{member.name} member alone"] = f"{member.name}_months"
    return out


def evaluate_predictions(predictions: dict[str, np.ndarray], config, truth=None) -> dict:
    """Metrics of every estimate in ``predictions`` plus the oracle floor on the same infants."""
    y = predictions["age_months"]
    results = {label: age_metrics(y, predictions[col]) for label, col in estimate_columns(predictions, config).items()}
    return {"experiment": config.name, "n": int(y.size), "models": results,
            "oracle_floor": oracle_for(truth, predictions["participant_id"], y)}


def write_report(run: Path, predictions: dict[str, np.ndarray], config, truth=None) -> dict:
    """``metrics.json`` and ``figure4.png`` in the run folder; returns the metrics."""
    from kerasmyelin.evaluation.plots import save_scatter

    report = evaluate_predictions(predictions, config, truth)
    write_text_atomic(run / METRICS_FILE, json.dumps(report, indent=1) + "\n")
    first = next(iter(report["models"]))
    save_scatter([{"label": f"{config.name}: {first}", "true": predictions["age_months"],
                   "predicted": predictions["predicted_months"], "metrics": report["models"][first]}],
                 run / SCATTER_FILE, title=f"out-of-fold estimates, {config.cv.folds}-fold cross-validation")
    return report


def format_summary(report: dict) -> str:
    """A few readable lines: every model's errors with the oracle floor beside them."""
    floor = report.get("oracle_floor")
    floor_text = f"   (oracle floor: MAE {floor['mae']:.2f}, RMSE {floor['rmse']:.2f})" if floor else ""
    lines = [f"{report['experiment']}: {report['n']} infants, out-of-fold estimates{floor_text}"]
    for label, m in report["models"].items():
        ratio = f", {m['mae'] / floor['mae']:.2f}x floor" if floor else ""
        lines.append(f"  {label:<32} r {m['spearman_r']:.3f} (p {m['spearman_p']:.1e})  RMSE {m['rmse']:.2f}  "
                     f"MAE {m['mae']:.2f}{ratio}  bias {m['bias']:+.2f} [{m['loa_low']:+.2f}, {m['loa_high']:+.2f}]")
    return "\n".join(lines)


def table1(simple: dict, ensemble: dict) -> str:
    """The paper's Table 1 as Markdown: our simple and ensemble models beside the paper's numbers
    and the oracle floor (``simple``/``ensemble`` are ``evaluate_predictions`` reports)."""
    s = next(iter(simple["models"].values()))
    e_label = next(iter(ensemble["models"]))
    e = ensemble["models"][e_label]
    other = [(k, v) for k, v in ensemble["models"].items() if k.startswith("ensemble (") and k != e_label]
    floor = ensemble.get("oracle_floor") or simple.get("oracle_floor")
    rows = [("simple model (all ages)", s, PAPER_TABLE1["simple"]),
            (f"{e_label}", e, PAPER_TABLE1["ensemble"])]
    rows += [(label, m, None) for label, m in other]
    out = ["| model | r (Spearman) | RMSE | MAE | paper r | paper RMSE | paper MAE | MAE / oracle floor |",
           "|---|---|---|---|---|---|---|---|"]
    for label, m, paper in rows:
        p = paper or {}
        ratio = f"{m['mae'] / floor['mae']:.2f}" if floor else "n/a"
        out.append(f"| {label} | {m['spearman_r']:.2f} | {m['rmse']:.2f} | {m['mae']:.2f} | "
                   f"{p.get('r', '')} | {p.get('rmse', '')} | {p.get('mae', '')} | {ratio} |")
    if floor:
        out.append(f"| oracle floor (age from the synthetic myelination age) | {floor['pearson_r']:.2f} (Pearson) | "
                   f"{floor['rmse']:.2f} | {floor['mae']:.2f} | | | | 1.00 |")
    return "\n".join(out)
