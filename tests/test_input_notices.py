"""Inputs the batch readers do not use are reported, not dropped in silence (issue 20): no
participants.tsv, an age column under another name, a subject without a row; and a CSV row with
too many or too few cells fails that row only. The image files are empty: the readers only
check that they exist."""

from __future__ import annotations

from pathlib import Path

import pytest

from kerasmyelin.errors import InputError
from kerasmyelin.io.tables import misnamed_columns, read_tsv
from kerasmyelin.wholebrain.manifest import jobs_from_bids, jobs_from_csv


def _bids(root: Path, participants: str | None, subjects=("sub-01", "sub-02")) -> Path:
    for sub in subjects:
        (root / sub / "anat").mkdir(parents=True, exist_ok=True)
        for contrast in ("T1w", "T2w"):
            (root / sub / "anat" / f"{sub}_{contrast}.nii.gz").write_bytes(b"")
    if participants is not None:
        (root / "participants.tsv").write_text(participants)
    return root


def _read(reader, where):
    notices = []
    jobs = reader(where, log=notices.append)
    return jobs, notices


def test_no_participants_tsv_is_noticed_and_the_infants_still_run(tmp_path):
    jobs, notices = _read(jobs_from_bids, _bids(tmp_path / "bids", None))
    assert [(j.subject, j.age_months, j.error) for j in jobs] == [("sub-01", None, None), ("sub-02", None, None)]
    (notice,) = notices
    assert "no participants.tsv" in notice and "2 of 2 infants have no age" in notice
    assert "without gap or delay grade" in notice


@pytest.mark.parametrize("column", ["age", "Age", "Age_Months", "age_month", "AgeMonths", "age months",
                                    "corrected_age", "age_monhts"])
def test_an_age_column_under_another_name_is_noticed_with_the_right_name(tmp_path, column):
    root = _bids(tmp_path / "bids", f"participant_id\t{column}\nsub-01\t6\nsub-02\t7\n")
    jobs, notices = _read(jobs_from_bids, root)
    assert all(j.age_months is None and j.error is None for j in jobs)  # ignored, not guessed
    assert any(f"column {column!r} is not read" in n and "rename it to age_months" in n for n in notices), notices
    assert any("2 of 2 infants have no age" in n for n in notices), notices
    if column.lower() == "age":
        assert any("in years" in n for n in notices)


def test_a_misnamed_gestational_age_is_suggested(tmp_path):
    root = _bids(tmp_path / "bids", "participant_id\tchronological_age_months\tGA\nsub-01\t4\t35\nsub-02\t5\t38\n")
    jobs, notices = _read(jobs_from_bids, root)
    assert any("'GA' is not read" in n and "gestational_age_weeks" in n for n in notices), notices
    assert all("gestational_age_weeks" in j.error for j in jobs)  # half an age: each row says so


def test_a_table_without_any_age_column_is_noticed(tmp_path):
    _, notices = _read(jobs_from_bids, _bids(tmp_path / "bids", "participant_id\tsex\nsub-01\tF\nsub-02\tM\n"))
    (notice,) = notices
    assert "participants.tsv: no age_months column" in notice and "2 of 2 infants" in notice


def test_age_months_beside_a_bids_age_column_reads_quietly(tmp_path):
    root = _bids(tmp_path / "bids", "participant_id\tage\tage_months\nsub-01\t0.5\t6\nsub-02\t0.6\t7\n")
    jobs, notices = _read(jobs_from_bids, root)
    assert [j.age_months for j in jobs] == [6.0, 7.0] and notices == []


def test_a_subject_missing_from_participants_tsv_runs_without_age_and_is_named(tmp_path):
    root = _bids(tmp_path / "bids", "participant_id\tage_months\nsub-01\t6\n", subjects=("sub-01", "sub-02", "sub-03"))
    jobs, notices = _read(jobs_from_bids, root)
    assert [(j.subject, j.age_months, j.error) for j in jobs] == [
        ("sub-01", 6.0, None), ("sub-02", None, None), ("sub-03", None, None)]
    (notice,) = notices
    assert "no row for sub-02, sub-03 (2 of 3 subjects)" in notice and "age is unknown" in notice


def test_a_session_with_its_own_age_needs_no_participants_row(tmp_path):
    root = tmp_path / "bids"
    _bids(root, "participant_id\tage_months\nsub-01\t6\n", subjects=("sub-01",))
    anat = root / "sub-02" / "ses-1" / "anat"
    anat.mkdir(parents=True)
    for contrast in ("T1w", "T2w"):
        (anat / f"sub-02_ses-1_{contrast}.nii.gz").write_bytes(b"")
    (root / "sub-02" / "sub-02_sessions.tsv").write_text("session_id\tAge_Months\tage_months\nses-1\t9\t9\n")
    jobs, notices = _read(jobs_from_bids, root)
    assert [j.age_months for j in jobs] == [6.0, 9.0] and notices == []


def test_a_misnamed_sessions_column_is_noticed(tmp_path):
    root = tmp_path / "bids"
    anat = root / "sub-01" / "ses-1" / "anat"
    anat.mkdir(parents=True)
    for contrast in ("T1w", "T2w"):
        (anat / f"sub-01_ses-1_{contrast}.nii.gz").write_bytes(b"")
    (root / "participants.tsv").write_text("participant_id\tage_months\nsub-01\tn/a\n")
    (root / "sub-01" / "sub-01_sessions.tsv").write_text("session_id\tAge_Months\nses-1\t9\n")
    jobs, notices = _read(jobs_from_bids, root)
    assert jobs[0].age_months is None
    assert any("sub-01_sessions.tsv: column 'Age_Months' is not read" in n for n in notices), notices


def _csv(tmp_path: Path, text: str) -> Path:
    for name in ("a_T1w.nii.gz", "a_T2w.nii.gz"):
        (tmp_path / name).write_bytes(b"")
    listing = tmp_path / "scans.csv"
    listing.write_text(text)
    return listing


def test_a_ragged_csv_row_fails_that_row_only(tmp_path):
    listing = _csv(tmp_path, "subject,t1w,t2w,age_months\n"
                             "a,a_T1w.nii.gz,a_T2w.nii.gz,3\n"
                             "b,a_T1w.nii.gz,a_T2w.nii.gz,4,5\n"   # an unquoted comma in a value
                             "\n"
                             "c,a_T1w.nii.gz\n"                     # cells missing
                             "d,a_T1w.nii.gz,a_T2w.nii.gz,\n")
    jobs, notices = _read(jobs_from_csv, listing)
    by_subject = {j.subject: j for j in jobs}
    assert set(by_subject) == {"a", "line-3", "line-5", "d"} and notices == []
    assert by_subject["a"].error is None and by_subject["a"].age_months == 3.0
    assert by_subject["d"].error is None and by_subject["d"].age_months is None
    assert "scans.csv: line 3 has 5 fields, the header has 4 (quote values" in by_subject["line-3"].error
    assert "line 5 has 2 fields, the header has 4" in by_subject["line-5"].error  # its real line, past the blank
    assert by_subject["line-3"].t1w is None and by_subject["line-5"].t2w is None


def test_a_csv_whose_every_row_is_ragged_is_refused_as_a_whole(tmp_path):
    listing = _csv(tmp_path, "subject,t1w,t2w\na,a_T1w.nii.gz,a_T2w.nii.gz,3\nb,a_T1w.nii.gz,a_T2w.nii.gz,4\n")
    with pytest.raises(InputError, match="line 2 has 4 fields, the header has 3 .*check the header") as err:
        jobs_from_csv(listing, log=print)
    assert "scans.csv" in str(err.value)


def test_a_misnamed_csv_column_is_noticed_or_suggested(tmp_path):
    listing = _csv(tmp_path, "subject,t1w,t2w,Age\na,a_T1w.nii.gz,a_T2w.nii.gz,3\n")
    jobs, notices = _read(jobs_from_csv, listing)
    assert jobs[0].age_months is None and jobs[0].error is None
    assert len(notices) == 1 and "column 'Age' is not read" in notices[0] and "age_months" in notices[0]
    listing.write_text("Subject,T1w,t2w\na,a_T1w.nii.gz,a_T2w.nii.gz\n")
    with pytest.raises(InputError, match="missing column.*rename 'Subject' to subject.*rename 'T1w' to t1w"):
        jobs_from_csv(listing)


def test_notices_go_to_stderr_by_default(tmp_path, capsys):
    jobs_from_bids(_bids(tmp_path / "bids", None))
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("warning: ") and "no participants.tsv" in captured.err


def test_misnamed_columns_leaves_other_columns_alone():
    assert misnamed_columns(["participant_id", "sex", "session_id", "acq_time", "weight", "handedness"]) == []
    assert misnamed_columns(["Age_Months", "age_months"]) == []  # the right one is there
    assert misnamed_columns(["GestationalAge", "chronological_age"]) == [
        ("GestationalAge", "gestational_age_weeks"), ("chronological_age", "chronological_age_months")]


def test_a_missing_required_tsv_column_suggests_the_near_miss(tmp_path):
    table = tmp_path / "participants.tsv"
    table.write_text("Participant_ID\tage_months\nsub-01\t6\n")
    with pytest.raises(InputError, match="missing column.*rename 'Participant_ID' to participant_id"):
        read_tsv(table, ("participant_id",))


def test_predict_shows_the_notices(tmp_path, capsys):
    """Through the command line: the notice is printed before anything else can fail."""
    from kerasmyelin.cli.main import main

    root = _bids(tmp_path / "bids", "participant_id\tage\nsub-01\t0.5\nsub-02\t0.6\n")
    code = main(["predict", "--model", str(tmp_path / "no-model"), "--bids", str(root), "--out",
                 str(tmp_path / "out"), "--jobs", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "model not found" in err
    assert "warning: " in err and "column 'age' is not read" in err and "rename it to age_months" in err
