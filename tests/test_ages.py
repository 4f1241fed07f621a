"""Corrected age from chronological and gestational age, and where the tables give only those."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from kerasmyelin.data.build import prepare_bids
from kerasmyelin.data.cache import read_cache
from kerasmyelin.errors import InputError
from kerasmyelin.io.ages import WEEKS_PER_MONTH, corrected_age_months
from kerasmyelin.wholebrain.manifest import jobs_from_bids, jobs_from_csv

DAYS_PER_MONTH = 365.25 / 12


@pytest.mark.parametrize("chronological, gestational, expected_days", [
    (3.0, 40.0, 3 * DAYS_PER_MONTH),             # term: corrected = chronological
    (3.0, 32.0, 3 * DAYS_PER_MONTH - 8 * 7),     # 8 weeks early
    (0.0, 28.0, -12 * 7),                        # scanned at birth, 12 weeks early
    (1.0, 42.0, DAYS_PER_MONTH + 14),            # post-term births add time (participants.json)
    (24.0, 36.5, 24 * DAYS_PER_MONTH - 3.5 * 7),
])
def test_corrected_age_in_days(chronological, gestational, expected_days):
    assert corrected_age_months(chronological, gestational) * DAYS_PER_MONTH == pytest.approx(expected_days)


def test_matches_the_synthetic_cohort():
    from kerasmyelin.synth.cohort import CohortConfig, draw_cohort

    for s in draw_cohort(CohortConfig(subjects=30, seed=3)):
        # The cohort rounds chronological age to 0.01 months.
        assert corrected_age_months(s.chronological_age_months, s.gestational_age_weeks) == pytest.approx(
            s.age_months, abs=0.006)
    assert WEEKS_PER_MONTH == pytest.approx(4.348, abs=1e-3)


@pytest.mark.parametrize("chronological, gestational, phrase", [
    (-1.0, 38.0, "chronological age -1 months is outside 0 to 60"),
    (61.0, 38.0, "chronological age 61 months is outside"),
    (3.0, 21.0, "gestational age 21 weeks is outside 22 to 44"),
    (3.0, 280.0, "gestational age 280 weeks is outside"),   # days by mistake
    ("three", 38.0, "chronological age 'three' is not a number of months"),
    (3.0, float("nan"), "gestational age is nan"),
])
def test_out_of_range_values_are_refused(chronological, gestational, phrase):
    with pytest.raises(ValueError, match=phrase):
        corrected_age_months(chronological, gestational)


def _bids(root, participants: str, sessions: dict[str, str] | None = None):
    """A BIDS folder with empty image files (the readers only check they exist)."""
    root.mkdir()
    (root / "participants.tsv").write_text(participants)
    for line in participants.splitlines()[1:]:
        pid = line.split("\t")[0]
        labels = [(pid, root / pid / "anat")]
        if sessions and pid in sessions:
            (root / pid).mkdir()
            (root / pid / f"{pid}_sessions.tsv").write_text(sessions[pid])
            labels = [(f"{pid}_{s.split(chr(9))[0]}", root / pid / s.split("\t")[0] / "anat")
                      for s in sessions[pid].splitlines()[1:]]
        for label, anat in labels:
            anat.mkdir(parents=True)
            for contrast in ("T1w", "T2w"):
                (anat / f"{label}_{contrast}.nii.gz").write_bytes(b"")
    return root


def test_bids_participants_with_only_chronological_and_gestational_age(tmp_path):
    root = _bids(tmp_path / "bids", "participant_id\tsex\tgestational_age_weeks\tchronological_age_months\n"
                                    "sub-01\tF\t32\t3.0\nsub-02\tM\t40\t6.5\nsub-03\tF\tn/a\tn/a\n")
    jobs = {j.subject: j for j in jobs_from_bids(root)}
    assert jobs["sub-01"].age_months == pytest.approx(corrected_age_months(3.0, 32))
    assert jobs["sub-02"].age_months == pytest.approx(6.5)
    assert jobs["sub-03"].age_months is None and jobs["sub-03"].error is None  # no age: estimate only


def test_corrected_age_column_wins_and_half_a_pair_is_an_error(tmp_path):
    root = _bids(tmp_path / "bids", "participant_id\tage_months\tgestational_age_weeks\tchronological_age_months\n"
                                    "sub-01\t2.5\t32\t3.0\nsub-02\t\t30\t\nsub-03\t\t20\t3\n")
    jobs = {j.subject: j for j in jobs_from_bids(root)}
    assert jobs["sub-01"].age_months == 2.5
    assert "gestational_age_weeks is given but chronological_age_months is not" in jobs["sub-02"].error
    assert "participants.tsv sub-02" in jobs["sub-02"].error
    assert "gestational age 20 weeks is outside 22 to 44" in jobs["sub-03"].error


def test_sessions_take_chronological_age_per_session_and_gestational_age_per_infant(tmp_path):
    root = _bids(tmp_path / "bids", "participant_id\tgestational_age_weeks\tage_months\nsub-01\t30\t1.0\n",
                 sessions={"sub-01": "session_id\tchronological_age_months\nses-1\t3.0\nses-2\t12.0\nses-3\tn/a\n"})
    jobs = {j.subject: j for j in jobs_from_bids(root)}
    assert jobs["sub-01_ses-1"].age_months == pytest.approx(corrected_age_months(3.0, 30))
    assert jobs["sub-01_ses-2"].age_months == pytest.approx(corrected_age_months(12.0, 30))
    assert jobs["sub-01_ses-3"].age_months == 1.0  # the session says nothing: the participant's age


def test_csv_list_with_chronological_and_gestational_age(tmp_path):
    for name in ("a_T1w.nii.gz", "a_T2w.nii.gz"):
        (tmp_path / name).write_bytes(b"")
    listing = tmp_path / "scans.csv"
    listing.write_text("subject,t1w,t2w,chronological_age_months,gestational_age_weeks\n"
                       "a,a_T1w.nii.gz,a_T2w.nii.gz,4.0,35\nb,a_T1w.nii.gz,a_T2w.nii.gz,0.1,24\n")
    a, b = jobs_from_csv(listing)
    assert a.error is None and a.age_months == pytest.approx(corrected_age_months(4.0, 35))
    # -3.6 months corrected: below the model's range, refused with the computation shown
    assert "outside -3 to 60 months" in b.error and "corrected from chronological_age_months 0.1" in b.error


def _head(shape=(48, 56, 20), voxel=(2.5, 2.5, 5.0)):
    affine = np.diag([*voxel, 1.0])
    affine[:3, 3] = [-(n - 1) * v / 2 for n, v in zip(shape, voxel)]
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    r = np.sqrt((((ijk @ affine[:3, :3].T + affine[:3, 3]) / np.array([50.0, 62.0, 45.0])) ** 2).sum(-1))
    return np.where(r < 1, 400 + 300 * np.cos(3 * r), 0).astype(np.float32), affine


def test_prepare_bids_computes_the_label(tmp_path):
    root = tmp_path / "bids"
    data, affine = _head()
    for pid in ("sub-01", "sub-02"):
        (root / pid / "anat").mkdir(parents=True)
        for contrast, volume in (("T1w", data), ("T2w", 1000.0 - data)):
            nib.save(nib.Nifti1Image(volume, affine), root / pid / "anat" / f"{pid}_{contrast}.nii.gz")
    (root / "participants.tsv").write_text("participant_id\tchronological_age_months\tgestational_age_weeks\n"
                                           "sub-01\t3.0\t32\nsub-02\t7.25\t40\n")
    levels = tmp_path / "levels.tsv"
    levels.write_text("participant_id\tslice_a\tslice_b\tslice_c\tslice_d\tslice_e\n"
                      "sub-01\t4\t7\t10\t13\t16\nsub-02\t4\t7\t10\t13\t16\n")
    cache = read_cache(prepare_bids(root, levels, tmp_path / "prep", progress=False))
    np.testing.assert_allclose(cache.age_months, [corrected_age_months(3.0, 32), 7.25], atol=1e-5)
    assert cache.manifest["subjects"][0]["age_months"] == pytest.approx(corrected_age_months(3.0, 32))

    (root / "participants.tsv").write_text("participant_id\tchronological_age_months\nsub-01\t3.0\nsub-02\t7.25\n")
    with pytest.raises(InputError, match="missing column.s. age_months .*gestational_age_weeks"):
        prepare_bids(root, levels, tmp_path / "prep2", progress=False)
    (root / "participants.tsv").write_text("participant_id\tchronological_age_months\tgestational_age_weeks\n"
                                           "sub-01\t3.0\t\nsub-02\t7.25\t40\n")
    with pytest.raises(InputError, match="sub-01: chronological_age_months is given but gestational_age_weeks") as e:
        prepare_bids(root, levels, tmp_path / "prep2", progress=False)
    assert str(root / "participants.tsv") in str(e.value)
