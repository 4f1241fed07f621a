"""Notebooks run top to bottom on tiny settings and are committed without outputs."""

import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stripped(path):
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, path.name


@pytest.mark.slow  # each notebook runs headless: 20-50 s
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, monkeypatch, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    # Eight infants: enough for the smoke experiment's two folds, each with a validation infant.
    monkeypatch.setenv("KERASMYELIN_NOTEBOOK_SUBJECTS", "8")
    monkeypatch.setenv("KERASMYELIN_NOTEBOOK_SMOKE", "1")
    monkeypatch.setenv("KERASMYELIN_NOTEBOOK_OUT", str(tmp_path / "cohort"))
    monkeypatch.delenv("KERASMYELIN_NOTEBOOK_RUN", raising=False)
    nb = json.loads(path.read_text())
    namespace: dict = {}
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            exec(compile("".join(cell["source"]), f"{path.name}", "exec"), namespace)  # noqa: S102
