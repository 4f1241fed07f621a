"""Which tissue curves a synthetic infant gets: the published ones or a calibrated set.

A set is a :class:`~kerasmyelin.synth.relaxation.TissueCurves`. "published" is the literature
(``relaxation.PUBLISHED``); "calibrated" is the set fitted to the real infant templates by
``kerasmyelin calibrate-synth`` and shipped in ``synth/data/tissue_curves_calibrated.json``
(docs/realism.md says how it was made and how well it holds on ages the fit did not see); any
other name is a path to a JSON file written by that command. An infant's truth file records
the name, so a cohort says which physics drew it.
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

from kerasmyelin.synth.relaxation import FIELD_STRENGTHS, PUBLISHED, TissueCurves, TissueRelaxation

CALIBRATED_FILE = Path(__file__).parent / "data" / "tissue_curves_calibrated.json"
NAMES = ("published", "calibrated")
_RELAXATION_FIELDS = tuple(TissueRelaxation.__dataclass_fields__)


def curves_from_dict(d: dict, source: str = "tissue curves") -> TissueCurves:
    """A curve set from its JSON form (``TissueCurves.as_dict``), every value checked.

    Raises:
        ValueError: naming ``source`` and the key or value that is wrong.
    """
    def fail(problem):
        raise ValueError(f"{source}: {problem}")

    if not isinstance(d, dict):
        fail("not a JSON object")
    known = {"name", "white", "grey", "tau_wm", "tau_gm", "wm_lead_months", "gm_lead_months",
             "speed_t1", "speed_t2"}
    unknown = sorted(set(d) - known - {"provenance"})
    if unknown:
        fail(f"unknown key(s) {unknown}; expected {sorted(known)}")
    missing = sorted(known - set(d))
    if missing:
        fail(f"missing key(s) {missing}")

    def number(value, where, lo, hi):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            fail(f"{where} must be a number, got {value!r}")
        if not lo <= value <= hi:
            fail(f"{where} = {value} is outside {lo}-{hi}")
        return float(value)

    tables = {}
    for tissue in ("white", "grey"):
        by_field = d[tissue]
        if not isinstance(by_field, dict) or {float(k) for k in by_field} != set(FIELD_STRENGTHS):
            fail(f"{tissue} must give the field strengths {FIELD_STRENGTHS}")
        rows = []
        for fs, values in sorted((float(k), v) for k, v in by_field.items()):
            if not isinstance(values, dict) or set(values) != set(_RELAXATION_FIELDS):
                fail(f"{tissue} at {fs} T must have exactly {list(_RELAXATION_FIELDS)}")
            checked = {}
            for key in _RELAXATION_FIELDS:
                lo, hi = ((0.05, 1.0) if key.startswith("pd") else (5.0, 10000.0))
                checked[key] = number(values[key], f"{tissue} {fs} T {key}", lo, hi)
            rows.append((fs, TissueRelaxation(**checked)))
        tables[tissue] = tuple(rows)
    taus = {}
    for key in ("tau_wm", "tau_gm"):
        if not isinstance(d[key], (list, tuple)) or len(d[key]) != 3:
            fail(f"{key} must be three e-folding times (T1, T2, PD) in months")
        taus[key] = tuple(number(v, f"{key}[{i}]", 0.1, 240.0) for i, v in enumerate(d[key]))
    return TissueCurves(
        name=str(d["name"]), white=tables["white"], grey=tables["grey"], tau_wm=taus["tau_wm"],
        tau_gm=taus["tau_gm"], wm_lead_months=number(d["wm_lead_months"], "wm_lead_months", 0.0, 9.0),
        gm_lead_months=number(d["gm_lead_months"], "gm_lead_months", 0.0, 9.0),
        speed_t1=number(d["speed_t1"], "speed_t1", 0.1, 10.0), speed_t2=number(d["speed_t2"], "speed_t2", 0.1, 10.0))


@functools.lru_cache(maxsize=8)
def curves_for(name: str) -> TissueCurves:
    """The curve set called ``name``: "published", "calibrated", or a JSON file's path.

    Raises:
        ValueError: for an unknown name, a missing or unreadable file, or a malformed set.
    """
    if name == "published":
        return PUBLISHED
    path = CALIBRATED_FILE if name == "calibrated" else Path(name)
    if name != "calibrated" and path.suffix != ".json":
        raise ValueError(f"unknown tissue curves {name!r}: expected one of {NAMES} or a .json file "
                         "written by `kerasmyelin calibrate-synth`")
    try:
        d = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{path}: tissue-curves file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a readable tissue-curves JSON file ({exc})") from None
    curves = curves_from_dict(d, str(path))
    # A file is known by the name the infant's truth file records: the two built-in names, or
    # the path as given.
    return curves if name == "calibrated" else TissueCurves(**{**curves.__dict__, "name": name})
