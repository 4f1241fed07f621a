"""Shared fixtures: a tiny synthetic cohort built once per test session."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

import kerasmyelin  # noqa: F401  (before any test imports TensorFlow: the project's CPU settings apply)

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


SMOKE_YAML = REPO / "experiments" / "smoke.yaml"


def learnable_tenslice(folder: Path, n: int = 16, size: int = 32, seed: int = 0) -> Path:
    """A ten-slice cache of ``n`` fake infants whose images brighten (T1w) and darken (T2w)
    with age, so a tiny network can learn something in two epochs."""
    import numpy as np

    from kerasmyelin.data.cache import write_cache
    from kerasmyelin.data.prepare import PrepConfig
    from kerasmyelin.levels import INPUT_NAMES

    rng = np.random.default_rng(seed)
    ages = np.linspace(-1.5, 23.5, n).astype(np.float32)
    images = {}
    for name in INPUT_NAMES:
        level = ages[:, None, None] / 24.0
        signal = level if name.startswith("t1w") else 1.0 - level
        base = 0.1 * rng.random((n, size, size), dtype=np.float32)
        base[:, size // 4: 3 * size // 4, size // 4: 3 * size // 4] += signal
        images[name] = base
    ids = [f"sub-{i + 1:03d}" for i in range(n)]
    # As every cache kerasmyelin prepares: its preparation settings, which a run trained on it records.
    prep = PrepConfig(image_size=size).as_dict()
    return write_cache(folder, images, ids, ages, {"created_by": "kerasmyelin tests", "prep_config": prep})


@pytest.fixture(scope="session")
def tiny_tenslice(tmp_path_factory) -> Path:
    """Folder of a 16-infant, 32x32 learnable ten-slice cache (see ``learnable_tenslice``)."""
    return learnable_tenslice(tmp_path_factory.mktemp("tenslice") / "tenslice")


@pytest.fixture(autouse=True)
def _no_stale_log_handler():
    """main() calls logging.basicConfig, which may bind a handler to this test's captured stderr;
    drop it afterwards so a later test's log lines do not go to a closed stream."""
    root = logging.getLogger()
    before = list(root.handlers)
    yield
    for handler in [h for h in root.handlers if h not in before]:
        root.removeHandler(handler)


def tiny_model_file(path: Path) -> Path:
    """An untrained 32x32 network saved as kerasmyelin saves one: checksum recorded, and its record
    (the paper's preparation at 32 pixels) inside, as every model.keras a run writes has."""
    from kerasmyelin.data.prepare import PrepConfig
    from kerasmyelin.model_record import ModelRecord
    from kerasmyelin.models.myelin_cnn import ModelConfig, build_myelin_cnn
    from kerasmyelin.training.callbacks import save_keras_atomic

    record = ModelRecord(prep_config=PrepConfig(image_size=32).as_dict(), image_size=32)
    network = build_myelin_cnn(ModelConfig(image_size=32, branch_units=8, side_units=(8,), joint_units=(8,)))
    return save_keras_atomic(network, path, record=record.dumps())
