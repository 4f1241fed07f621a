"""Shared fixtures: a tiny synthetic cohort built once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
TEMPLATES = SHARED / "data" / "infant_templates"
VOLUMES_CSV = SHARED / "data" / "brain_volume_by_age" / "brain_mask_volumes.csv"


def require_shared(path: Path) -> Path:
    """Skip the calling test, saying why, when the shared real data are not next to the repo."""
    if not path.exists():
        pytest.skip(f"real reference data not found at {path} (the ../shared folder is absent); "
                    "this check runs where it is present")
    return path


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory) -> Path:
    """Four infants (ages spread, both scanners), built with two worker processes."""
    from kerasmyelin.synth.cohort import CohortConfig
    from kerasmyelin.synth.dataset import build_cohort

    out = tmp_path_factory.mktemp("cohort") / "tiny"
    config = CohortConfig(subjects=4, seed=11, fraction_low_field=0.5)
    return build_cohort(out, config, jobs=2, progress=False)
