"""Property-based fuzzing of the readers: any input either loads or raises a KerasMyelinError.

Fuzzed: the NIfTI reader (header fields set to random values, bytes truncated or flipped, plain
.nii and .nii.gz, random bytes), the manifest readers (CSV lists; BIDS participants.tsv and
sessions.tsv) and the YAML configuration reader (random documents, random text, random
``--set`` overrides). Runs are derandomized, so CI sees the same examples every time; the
numbers of examples are in docs/reliability.md.
"""

import dataclasses
import gzip
import string
import types
import typing

import nibabel as nib
import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from kerasmyelin.errors import KerasMyelinError
from kerasmyelin.io.nifti import load_volume, nifti_bytes
from kerasmyelin.training.config import ExperimentConfig, load_experiment
from kerasmyelin.wholebrain.manifest import Job, jobs_from_bids, jobs_from_csv


def fuzz(examples: int):
    """Reproducible (derandomized), no example database written, tmp_path reused by examples."""
    return settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


# ---------------------------------------------------------------------------------------------
# NIfTI

AFFINE = np.array([[-1.2, 0, 0, 40], [0, 1.2, 0, -50], [0, 0, 5.0, -30], [0, 0, 0, 1]])


def _base(kind: str) -> bytes:
    """A small valid single-file NIfTI-1: float32 voxels, or int16 with a scale factor."""
    rng = np.random.default_rng(0)
    if kind == "float32":
        return nifti_bytes(rng.random((6, 5, 4)).astype(np.float32) + 0.1, AFFINE)
    img = nib.Nifti1Image(rng.integers(0, 1000, (6, 5, 4)).astype(np.int16), AFFINE)
    img.header.set_qform(AFFINE, code=1)
    img.header.set_sform(AFFINE, code=1)
    img.header.set_slope_inter(0.5, 3.0)
    return img.to_bytes()


BASES = {kind: _base(kind) for kind in ("float32", "int16")}
HEADER = nib.nifti1.header_dtype
HEADER_SIZE = HEADER.itemsize  # 348


def _field_value(name: str):
    """A strategy of (index, raw value) for one header field, from its numpy type."""
    base, shape = HEADER[name].base, HEADER[name].shape
    index = st.integers(0, int(np.prod(shape)) - 1) if shape else st.just(None)
    if base.kind == "S":
        value = st.binary(max_size=base.itemsize)
    elif base.kind in "iu":
        info = np.iinfo(base)
        special = [0, -1, 1, 2, 3, 4, 7, 8, 16, 64, 128, 256, 512, 1024, 2048, 32767, info.min, info.max]
        value = st.one_of(st.sampled_from([v for v in special if info.min <= v <= info.max]),
                          st.integers(int(info.min), int(info.max)))
    else:
        value = st.one_of(st.floats(width=32), st.sampled_from([0.0, -0.0, -1.0, 1e-30, 1e30, 3.4e38]))
    return st.tuples(st.just(name), index, value)


header_edits = st.lists(st.sampled_from(HEADER.names).flatmap(_field_value), min_size=1, max_size=4)


def _write(tmp_path, raw: bytes, compressed: bool):
    path = tmp_path / ("fuzz.nii.gz" if compressed else "fuzz.nii")
    path.write_bytes(gzip.compress(raw, mtime=0) if compressed else raw)
    return path


def _loads_or_refuses(path):
    """The property: a clean 3-D float32 volume with a usable affine, or the project's own error."""
    try:
        data, affine = load_volume(path)
    except KerasMyelinError as exc:
        assert str(path.name) in str(exc)  # the message names the file
        event("refused")
        return "refused"
    assert data.ndim == 3 and data.dtype == np.float32 and np.isfinite(data).all()
    assert affine.shape == (4, 4) and np.isfinite(affine).all()
    event("loaded")
    return "loaded"


@fuzz(400)
@given(kind=st.sampled_from(sorted(BASES)), edits=header_edits, compressed=st.booleans())
def test_nifti_header_fields_set_to_anything(tmp_path, kind, edits, compressed):
    raw = bytearray(BASES[kind])
    hdr = np.frombuffer(bytes(raw[:HEADER_SIZE]), dtype=HEADER).copy()
    for name, index, value in edits:
        with np.errstate(all="ignore"):
            if index is None:
                hdr[name] = value
            else:
                hdr[name][0, index] = value
    raw[:HEADER_SIZE] = hdr.tobytes()
    _loads_or_refuses(_write(tmp_path, bytes(raw), compressed))


@fuzz(300)
@given(kind=st.sampled_from(sorted(BASES)), compressed=st.booleans(), data=st.data())
def test_nifti_bytes_truncated_or_flipped(tmp_path, kind, compressed, data):
    raw = BASES[kind]
    blob = bytearray(gzip.compress(raw, mtime=0) if compressed else raw)
    flips = data.draw(st.lists(st.tuples(st.integers(0, len(blob) - 1), st.integers(1, 255)), max_size=6))
    for position, mask in flips:
        blob[position] ^= mask
    blob = blob[: data.draw(st.integers(0, len(blob)))]
    path = tmp_path / ("fuzz.nii.gz" if compressed else "fuzz.nii")
    path.write_bytes(bytes(blob))
    _loads_or_refuses(path)


@fuzz(100)
@given(blob=st.binary(max_size=2000), compressed=st.booleans(), gzip_it=st.booleans())
def test_nifti_random_bytes(tmp_path, blob, compressed, gzip_it):
    path = tmp_path / ("fuzz.nii.gz" if compressed else "fuzz.nii")
    path.write_bytes(gzip.compress(blob, mtime=0) if gzip_it else blob)
    _loads_or_refuses(path)


def test_the_fuzzed_bases_load():
    """The fuzzing starts from volumes the reader accepts (otherwise it would test little)."""
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as folder:
        for kind, raw in BASES.items():
            for compressed in (False, True):
                data, _ = load_volume(_write(Path(folder), raw, compressed))
                assert data.shape == (6, 5, 4) and np.isfinite(data).all(), kind


def test_nifti_pair_with_a_negative_voxel_size_is_refused(tmp_path):
    """Found by hand: for a .hdr/.img pair the stored voxel sizes were not checked, and nibabel
    silently makes a negative one positive."""
    nib.save(nib.Nifti1Pair(np.random.default_rng(0).random((6, 5, 4)).astype(np.float32), AFFINE),
             tmp_path / "pair.img")
    header = tmp_path / "pair.hdr"
    raw = bytearray(header.read_bytes())
    hdr = np.frombuffer(bytes(raw[:HEADER_SIZE]), dtype=HEADER).copy()
    hdr["pixdim"][0, 2] = -1.2
    raw[:HEADER_SIZE] = hdr.tobytes()
    header.write_bytes(bytes(raw))
    with pytest.raises(KerasMyelinError, match="voxel sizes must be positive"):
        load_volume(tmp_path / "pair.img")


# ---------------------------------------------------------------------------------------------
# Manifests: CSV lists and BIDS tables

# Cells mix ordinary values with the characters that break naive table readers.
CELL_CHARS = string.ascii_letters + string.digits + " .,-_/\\\t\"'\r\n\x00~éü\u2028"
plain_cell = st.text(alphabet=string.ascii_letters + string.digits + "-_.", max_size=8)
odd_cell = st.text(alphabet=CELL_CHARS, max_size=12)
ODD_VALUES = ["", "n/a", "nan", "inf", "-inf", "1e999", "-5", "3.5", "40 weeks", "96", "0x10", "1_000", "sub-01",
              "sub-02", "ses-1", "ses-2", "a", "a_T1w.nii.gz", "a_T2w.nii.gz", "../a_T1w.nii.gz", "~nouser/x.nii",
              "x/" * 200]
cell = st.one_of(odd_cell, plain_cell, plain_cell, st.sampled_from(ODD_VALUES))


def _table(columns, rows, delimiter: str) -> str:
    return "\n".join(delimiter.join(r) for r in [columns, *rows]) + "\n"


def _table_text(names, delimiter: str):
    """A table with plausible and odd column names, ragged rows, bad cells and bad quoting."""
    columns = st.one_of(st.just(names), st.permutations(names),
                        st.lists(st.one_of(st.sampled_from(names), cell), min_size=0, max_size=5))

    def rows(columns):
        full = st.lists(cell, min_size=len(columns), max_size=len(columns))
        row = st.one_of(full, full, st.lists(cell, max_size=6))  # mostly one cell per column
        return st.lists(row, min_size=1, max_size=5).map(lambda r: _table(columns, r, delimiter))

    return columns.flatmap(rows)


def _encoded(text_strategy):
    """Table text as UTF-8, sometimes as Latin-1 or with random bytes spliced in."""
    return st.one_of(
        text_strategy.map(lambda t: t.encode("utf-8")),
        text_strategy.map(lambda t: t.encode("utf-8")),
        text_strategy.map(lambda t: t.encode("latin-1", errors="replace")),
        st.tuples(text_strategy, st.binary(max_size=20)).map(lambda p: p[0].encode() + p[1]),
        st.binary(max_size=300),
    )


def _jobs_or_refuses(read, where):
    try:
        jobs = read(where)
    except KerasMyelinError:
        event("refused")
        return None
    event("loaded")
    assert isinstance(jobs, list) and all(isinstance(j, Job) for j in jobs)
    for job in jobs:
        assert isinstance(job.subject, str) and job.subject
        if job.error is None:  # a job without an error can run: both images exist
            assert job.t1w.is_file() and job.t2w.is_file()
            assert job.age_months is None or np.isfinite(job.age_months)
    return jobs


@fuzz(300)
@given(blob=_encoded(_table_text(["subject", "t1w", "t2w", "age_months"], ",")))
def test_csv_list_any_content(tmp_path, blob):
    (tmp_path / "a_T1w.nii.gz").write_bytes(b"")
    (tmp_path / "a_T2w.nii.gz").write_bytes(b"")
    listing = tmp_path / "scans.csv"
    listing.write_bytes(blob)
    _jobs_or_refuses(jobs_from_csv, listing)


@fuzz(250)
@given(participants=st.one_of(st.none(), _encoded(_table_text(["participant_id", "age_months"], "\t"))),
       sessions=st.one_of(st.none(), _encoded(_table_text(["session_id", "age_months"], "\t"))))
def test_bids_tables_any_content(tmp_path, participants, sessions):
    root = tmp_path / "bids"
    for label, folder in (("sub-01", "sub-01/anat"), ("sub-02_ses-1", "sub-02/ses-1/anat"),
                          ("sub-02_ses-2", "sub-02/ses-2/anat")):
        (root / folder).mkdir(parents=True, exist_ok=True)
        for contrast in ("T1w", "T2w"):
            (root / folder / f"{label}_{contrast}.nii.gz").write_bytes(b"")
    for path, blob in ((root / "participants.tsv", participants), (root / "sub-02" / "sub-02_sessions.tsv", sessions)):
        if blob is None:
            path.unlink(missing_ok=True)
        else:
            path.write_bytes(blob)
    jobs = _jobs_or_refuses(jobs_from_bids, root)
    if jobs is not None:
        assert [j.subject for j in jobs] == ["sub-01", "sub-02_ses-1", "sub-02_ses-2"]


def test_tables_saved_with_a_byte_order_mark_read_normally(tmp_path):
    """Found by hand: Excel's "CSV UTF-8" starts with a BOM, which became part of the first
    column's name, so the list was refused for a missing 'subject' column."""
    (tmp_path / "a_T1w.nii.gz").write_bytes(b"")
    (tmp_path / "a_T2w.nii.gz").write_bytes(b"")
    listing = tmp_path / "scans.csv"
    listing.write_bytes("subject,t1w,t2w,age_months\na,a_T1w.nii.gz,a_T2w.nii.gz,3.5\n".encode("utf-8-sig"))
    (job,) = jobs_from_csv(listing)
    assert job.subject == "a" and job.error is None and job.age_months == 3.5
    root = tmp_path / "bids"
    (root / "sub-01" / "anat").mkdir(parents=True)
    (root / "participants.tsv").write_bytes("participant_id\tage_months\nsub-01\t6\n".encode("utf-8-sig"))
    assert jobs_from_bids(root)[0].age_months == 6.0


def test_csv_path_too_long_for_the_file_system_is_that_rows_error(tmp_path):
    """Found by hand: the OSError of a name too long reached the user as a crash."""
    listing = tmp_path / "scans.csv"
    listing.write_text("subject,t1w,t2w\na," + "x" * 300 + ".nii.gz,b.nii.gz\n")
    (job,) = jobs_from_csv(listing)
    assert job.error is not None and "too long" in job.error and "line 2, column t1w" in job.error


# ---------------------------------------------------------------------------------------------
# Configuration

def _field_paths(cls, prefix=""):
    """Every settable key of a config dataclass, dotted ("train.epochs"), and its type."""
    out = {}
    for name, hint in typing.get_type_hints(cls).items():
        if dataclasses.is_dataclass(hint):
            out.update(_field_paths(hint, f"{prefix}{name}."))
        else:
            out[prefix + name] = hint
    return out


FIELDS = _field_paths(ExperimentConfig)
KEYS = sorted({part for dotted in FIELDS for part in dotted.split(".")} | {"name", "members"})
WORDS = ["valid", "same", "gate", "average", "best", "final", "glorot_uniform", "nnc_gaussian_glorot", "young",
         "old", "simple"]
scalar = st.one_of(st.none(), st.booleans(), st.integers(-5, 300), st.integers(), st.integers(-10**400, 10**400),
                   st.floats(), st.text(max_size=10), st.sampled_from(WORDS))
key = st.one_of(st.sampled_from(KEYS), st.text(max_size=8), st.integers(-3, 3), st.none(), st.booleans())
document = st.recursive(scalar, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                        st.dictionaries(key, inner, max_size=5)),
                        max_leaves=12)


def _typed(hint):
    """Values mostly of the field's own type (so the checks past the type test are reached)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return st.one_of(_typed_document(hint), document)
    if origin in (typing.Union, types.UnionType):
        return st.one_of(*[_typed(a) for a in args])
    if origin is tuple:
        element = _typed(args[0])
        return st.one_of(st.lists(element, max_size=4), st.lists(element, min_size=2, max_size=2), scalar)
    simple = {bool: st.booleans(), int: st.integers(-3, 300), float: st.floats(-30, 1100),
              str: st.sampled_from(WORDS), type(None): st.none()}
    return st.one_of(simple.get(hint, scalar), scalar)


def _typed_document(cls):
    fields = typing.get_type_hints(cls)
    known = st.fixed_dictionaries({}, optional={name: st.deferred(lambda h=h: _typed(h)) for name, h in fields.items()})
    return st.one_of(known, known, st.builds(lambda d, extra: {**d, **extra}, known,
                                             st.dictionaries(key, scalar, max_size=2)))


def _config_or_refuses(*args):
    try:
        config = load_experiment(*args)
    except KerasMyelinError:
        event("refused")
        return None
    event("loaded")
    assert isinstance(config, ExperimentConfig)
    return config


@fuzz(250)
@given(doc=_typed_document(ExperimentConfig))
def test_config_yaml_documents_of_known_keys(tmp_path, doc):
    path = tmp_path / "fuzz.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True))
    _config_or_refuses(path)


@fuzz(150)
@given(doc=st.dictionaries(key, document, max_size=5))
def test_config_random_yaml_documents(tmp_path, doc):
    path = tmp_path / "fuzz.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True))
    _config_or_refuses(path)


yaml_chars = string.printable + "éü\u2028\x00\x85\ufeff"


@fuzz(150)
@given(blob=st.one_of(st.text(alphabet=yaml_chars, max_size=200).map(str.encode), st.binary(max_size=200),
                      st.integers(1, 60).map(lambda n: ("a:\n" + "[" * n + "]" * n).encode())))
def test_config_random_text(tmp_path, blob):
    path = tmp_path / "fuzz.yaml"
    path.write_bytes(blob)
    _config_or_refuses(path)


def test_config_nested_too_deeply_is_refused(tmp_path):
    """YAML nested past Python's recursion limit (kept out of the fuzzing: each parse takes seconds)."""
    path = tmp_path / "deep.yaml"
    path.write_text("[" * 1500 + "]" * 1500)
    with pytest.raises(KerasMyelinError, match="nested too deeply"):
        load_experiment(path)


@fuzz(150)
@given(dotted=st.one_of(st.sampled_from(sorted(FIELDS)), st.lists(st.one_of(st.sampled_from(KEYS), st.text(max_size=6)),
                                                                     min_size=1, max_size=3).map(".".join)),
       value=st.one_of(st.text(alphabet=yaml_chars, max_size=30), scalar.map(lambda v: yaml.safe_dump(v).strip()),
                       st.sampled_from(["[", "{a: 1}", "!!python/name:os.system", "[4, 8]", "[]", "~", ".nan"])),
       equals=st.booleans())
def test_config_random_overrides(dotted, value, equals):
    _config_or_refuses(None, [dotted + ("=" if equals else "") + value])
