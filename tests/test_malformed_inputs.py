"""Malformed inputs through the real command line: each is refused with exit code 2 and a message
that names the file and the problem, and nothing is left half-written.

One row per input in :data:`CASES`. A row's builder spoils one thing in an otherwise valid set of
inputs (a small BIDS folder, a levels table, a T1w/T2w pair, a model, a ten-slice cache, an
experiment YAML) and returns the command to run, the file the message must name and a phrase
the message must contain. ``test_the_valid_inputs_are_accepted`` shows that the unspoilt inputs
go through, so every refusal below is caused by its one defect. The size bombs run in a child
process whose address space is capped, so any multi-GB allocation would fail the test.
:data:`FLAGGED` holds inputs that are estimated but never graded (an adult-sized head), and
``test_swap_contrasts_reads_files_labelled_the_wrong_way_round`` the way to read a pair that
:data:`CASES` refuses as swapped. docs/reliability.md lists the cases and their messages.
"""

from __future__ import annotations

import functools
import gzip
import json
import resource
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

pytest.importorskip("keras")

from kerasmyelin.cli.main import main
from kerasmyelin.io.model_files import record
from kerasmyelin.io.nifti import nifti_bytes, write_nifti
from kerasmyelin.wholebrain.contrast_order import MIN_SCORE
from kerasmyelin.wholebrain.plausibility import MIN_NEIGHBOUR_R
from tests.conftest import REPO, learnable_tenslice

# Address-space cap for the size bombs: enough for Python, numpy, scipy and nibabel, far below
# the 4 GiB and 256 GiB their headers claim.
MEMORY_CAP = 1536 * 1024 * 1024
SHAPE = (48, 56, 20)
VOXEL_MM = (2.5, 2.5, 5.0)


def head(shape=SHAPE, centre_mm=(0.0, 0.0, 0.0), seed=0, size=1.0):
    """A synthetic T1w head, ``size`` times a small infant's (100 x 124 x 90 mm): dark CSF in the
    middle, where the level finder puts the ventricles, textured tissue around it, a bright
    (fatty) scalp, noise everywhere. Returns (data, affine)."""
    rng = np.random.default_rng(seed)
    affine = np.diag([*VOXEL_MM, 1.0])
    affine[:3, 3] = [-(n - 1) * v / 2 for n, v in zip(shape, VOXEL_MM)]
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    xyz = ijk @ affine[:3, :3].T + affine[:3, 3] - np.asarray(centre_mm)
    r = np.sqrt(((xyz / (size * np.array([50.0, 62.0, 45.0]))) ** 2).sum(-1))
    data = np.select([r < 0.3, r < 0.9, r < 1], [150.0, 450 + 120 * np.cos(12 * r), 900.0], 0.0)
    return np.abs(data + rng.normal(0, 10, shape)).astype(np.float32), affine


def t2_of(data):
    """The T2w of a :func:`head`: its head's intensities inverted (CSF bright, scalp dark), the
    background's noise kept."""
    return np.where(data > 50, 1000.0 - data, data).astype(np.float32)


def _gz_header_edit(path: Path, **fields):
    """Rewrite header fields of a .nii.gz in place (nibabel refuses to write most bad headers).
    A field given as (index, value) sets one element of an array field (dim, pixdim, srow_x ...)."""
    raw = bytearray(gzip.decompress(path.read_bytes()))
    hdr = np.frombuffer(bytes(raw[:348]), dtype=nib.nifti1.header_dtype).copy()
    for name, value in fields.items():
        if isinstance(value, tuple):
            hdr[name][0, value[0]] = value[1]
        else:
            hdr[name] = value
    raw[:348] = hdr.tobytes()
    path.write_bytes(gzip.compress(bytes(raw), mtime=0))
    return path


def _save(path: Path, data, affine=None, edit=None):
    affine = head()[1] if affine is None else affine
    img = nib.Nifti1Image(data, affine)
    img.header.set_qform(affine, code=1)
    img.header.set_sform(affine, code=1)
    if edit:
        edit(img)
    nib.save(img, str(path))
    return path


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """Built once: a valid (untrained) model file, two foreign ones, a ten-slice cache."""
    import keras

    from tests.conftest import tiny_model_file

    root = tmp_path_factory.mktemp("assets")
    model = tiny_model_file(root / "tiny.keras")
    x = keras.Input((4,), name="x")
    keras.Model(x, keras.layers.Dense(1, name="age")(x)).save(root / "dense.keras")
    keras.Model(x, keras.layers.Lambda(lambda v: v * 2.0, name="double")(x)).save(root / "lambda.keras")
    for name in ("dense", "lambda"):  # listed in SHA256SUMS: the later checks are reached
        record(root / f"{name}.keras")
    return {"model": model, "dense": root / "dense.keras", "lambda": root / "lambda.keras",
            "cache": learnable_tenslice(root / "tenslice", n=8, size=32)}


@dataclass
class Scene:
    """Valid inputs in ``root``, to be spoilt one at a time."""

    root: Path
    assets: dict
    out: Path = field(init=False)

    def __post_init__(self):
        self.bids = self.root / "bids"
        anat = self.bids / "sub-01" / "anat"
        anat.mkdir(parents=True)
        data, affine = head()
        self.t1, _ = write_nifti(anat / "sub-01_T1w.nii.gz", data, affine)
        self.t2, _ = write_nifti(anat / "sub-01_T2w.nii.gz", t2_of(data), affine)
        self.participants = self.bids / "participants.tsv"
        self.participants.write_text("participant_id\tage_months\nsub-01\t6.5\n")
        self.levels = self.root / "levels.tsv"
        self.levels.write_text("participant_id\tslice_a\tslice_b\tslice_c\tslice_d\tslice_e\n"
                               "sub-01\t4\t7\t10\t13\t16\n")
        self.out = self.root / "out"

    def prepare(self, *extra):
        return ["prepare", "--bids", str(self.bids), "--levels", str(self.levels), "--out", str(self.out),
                "--quiet", *extra]

    def predict_pair(self, model=None, t1=None, extra=(), t2=None):
        return ["predict", "--model", str(model or self.assets["model"]), "--t1", str(t1 or self.t1),
                "--t2", str(t2 or self.t2), "--no-saliency", "--out", str(self.out), *extra]

    def write_pair(self, t1, t2=None, affine=None):
        """Replace both images: ``t2`` defaults to the T2w of ``t1`` (:func:`t2_of`)."""
        affine = head()[1] if affine is None else affine
        write_nifti(self.t1, t1, affine)
        write_nifti(self.t2, t2_of(t1) if t2 is None else t2, affine)

    def swap_files(self):
        """The T1w's bytes in the T2w's file and the other way round: labelled the wrong way round."""
        t1, t2 = self.t1.read_bytes(), self.t2.read_bytes()
        self.t1.write_bytes(t2)
        self.t2.write_bytes(t1)

    def predict_list(self, flag, source):
        # A list that cannot be read stops the command before the model is loaded.
        return ["predict", "--model", str(self.root / "no-model"), flag, str(source), "--out", str(self.out)]

    def train(self, text=None, overrides=(), data=None):
        argv = ["train", "--data", str(data or self.assets["cache"]), "--out", str(self.out), "--quiet"]
        if text is not None:
            config = self.root / "experiment.yaml"
            config.write_text(text)
            argv += ["--config", str(config)]
        for o in overrides:
            argv += ["--set", o]
        return argv

    def earlier_output(self, kind: str) -> list[str]:
        """An output folder a previous run wrote: a refused input must leave it untouched."""
        from kerasmyelin.io.output_dir import write_marker

        self.out.mkdir()
        write_marker(self.out, kind, complete=True)
        (self.out / "earlier.txt").write_text("from the earlier run\n")
        return ["--overwrite"]

    def participants_age(self, cell: str):
        self.participants.write_text(f"participant_id\tage_months\nsub-01\t{cell}\n")
        return self.participants


@dataclass
class Expect:
    argv: list[str]
    names: Path | str   # the file (or, for an override, the text) the message must name
    phrase: str         # and the problem it must state
    memory_cap: bool = False


# ---------------------------------------------------------------------------------------------
# The cases. Each takes a Scene and returns what to run and what to expect.

def truncated_gz(s):
    s.t1.write_bytes(s.t1.read_bytes()[:3000])
    return Expect(s.prepare(), s.t1, "truncated")


def truncated_gz_keeps_earlier_output(s):
    s.t1.write_bytes(s.t1.read_bytes()[:3000])
    return Expect(s.prepare(*s.earlier_output("cache")), s.t1, "truncated")


def not_gzip(s):
    s.t1.write_text("this is not gzip data\n" * 40)
    return Expect(s.prepare(), s.t1, "not a readable NIfTI")


def empty_file(s):
    s.t1.write_bytes(b"")
    return Expect(s.prepare(), s.t1, "Empty file")


def folder_instead_of_file(s):
    s.t1.unlink()
    s.t1.mkdir()
    return Expect(s.prepare(), s.t1, "is a folder, not a NIfTI file")


def gzip_named_nii(s):
    named = s.t1.with_name("sub-01_T1w.nii")
    s.t1.rename(named)
    return Expect(s.prepare(), named, "the file is gzip-compressed but named .nii; rename it to .nii.gz")


def plain_named_gz(s):
    s.t1.write_bytes(gzip.decompress(s.t1.read_bytes()))
    return Expect(s.prepare(), s.t1, "uncompressed NIfTI file but named .nii.gz; rename it to .nii")


def _rewrite_pair(s, scale=1.0, unit="mm", repeat_z=1):
    """Both files of the pair with their affine times ``scale`` (voxel sizes in ``unit``) and their
    slices repeated ``repeat_z`` times: the pair still matches, so only its geometry is wrong."""
    data, affine = head()
    affine = affine @ np.diag([scale, scale, scale, 1.0])
    for path, volume in ((s.t1, data), (s.t2, t2_of(data))):
        path.write_bytes(gzip.compress(nifti_bytes(np.concatenate([volume] * repeat_z, axis=2), affine, unit)))


def voxel_size_no_scanner_uses(s):
    _rewrite_pair(s, 0.004)  # 0.01 x 0.01 x 0.02 mm
    return Expect(s.predict_pair(), s.t1, "voxel sizes 0.01x0.01x0.02 mm are outside the 0.1 to 10 mm")


def voxel_sizes_in_metres(s):
    _rewrite_pair(s, 1e-3, "meter")
    return Expect(s.prepare(), s.t1, "gives its sizes in metres (xyzt_units), that is 2.5x2.5x5 mm")


def field_of_view_not_a_head(s):
    _rewrite_pair(s, repeat_z=6)  # 120 slices of 5 mm: 600 mm tall
    return Expect(s.prepare(), s.t1, "a head scan spans at most 500 mm")


def missing_t2w(s):
    s.t2.unlink()
    return Expect(s.prepare(), "sub-01_T2w.nii", "no T2w image for sub-01")


def size_bomb_over_limit(s):
    for axis in (1, 2, 3):
        _gz_header_edit(s.t1, dim=(axis, 4096))  # 256 GiB as float32
    return Expect(s.prepare(), s.t1, "more than this reader accepts", memory_cap=True)


@functools.lru_cache(maxsize=1)
def _zeros_member() -> bytes:
    """A gzip member of 64 MiB of zeros (~65 kB): gzip files may be concatenated members."""
    return gzip.compress(bytes(64 * 2**20), compresslevel=9, mtime=0)


def size_bomb_that_inflates(s):
    # 800^3 float64 = 4 GiB claimed by a 4 MB file that really inflates to 4 GiB: within the
    # deflate bound (1032:1), so only the voxel limit stops it from its header.
    for axis in (1, 2, 3):
        _gz_header_edit(s.t1, dim=(axis, 800))
    _gz_header_edit(s.t1, datatype=64, bitpix=64)
    with s.t1.open("ab") as fh:
        for _ in range(64):
            fh.write(_zeros_member())
    return Expect(s.prepare(), s.t1, "more than this reader accepts (134,217,728 = 512^3", memory_cap=True)


def size_bomb_under_limit(s):
    # 500^3 float64 = 1 GB claimed by a 0.2 MB file: below the voxel limit, so only the
    # file-size check stops it before anything is allocated.
    for axis in (1, 2, 3):
        _gz_header_edit(s.t1, dim=(axis, 500))
    _gz_header_edit(s.t1, datatype=64, bitpix=64)
    return Expect(s.prepare(), s.t1, "claims a size it does not have", memory_cap=True)


def four_d(s):
    data, _ = head()
    _save(s.t1, np.stack([data] * 3, axis=-1))
    return Expect(s.prepare(), s.t1, "expected a 3-D volume")


def two_d(s):
    _save(s.t1, head()[0][:, :, 10])
    return Expect(s.prepare(), s.t1, "expected a 3-D volume")


def dim0_zero(s):
    _gz_header_edit(s.t1, dim=(0, 0))
    return Expect(s.prepare(), s.t1, "expected a 3-D volume")


def empty_dimension(s):
    _gz_header_edit(s.t1, dim=(2, 0))
    return Expect(s.prepare(), s.t1, "empty or negative dimension")


def nan_voxels(s):
    data, _ = head()
    data[10, 10, 5] = np.nan
    _save(s.t1, data)
    return Expect(s.prepare(), s.t1, "NaN or infinite")


def inf_voxels(s):
    data, _ = head()
    data[0, 0, 0] = np.inf
    _save(s.t1, data)
    return Expect(s.prepare(), s.t1, "NaN or infinite")


def scale_factor_overflow(s):
    data, _ = head()
    _save(s.t1, data.astype(np.int16), edit=lambda img: img.header.set_slope_inter(1e38, 0.0))
    return Expect(s.prepare(), s.t1, "NaN or infinite")


def all_zero(s):
    _save(s.t1, np.zeros(SHAPE, np.float32))
    return Expect(s.prepare(), s.t1, "image is constant")


def complex_voxels(s):
    data, _ = head()
    _save(s.t1, (data + 1j * data).astype(np.complex64))
    return Expect(s.prepare(), s.t1, "not a real-valued image")


def rgb_voxels(s):
    rgb = np.zeros(SHAPE, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    rgb["R"] = np.clip(head()[0] / 4, 0, 255).astype(np.uint8)
    _save(s.t1, rgb)
    return Expect(s.prepare(), s.t1, "not a real-valued image")


def zero_voxel_size(s):
    _gz_header_edit(s.t1, pixdim=(2, 0.0))
    return Expect(s.prepare(), s.t1, "voxel sizes must be positive")


def negative_voxel_size(s):
    _gz_header_edit(s.t1, pixdim=(3, -5.0))
    return Expect(s.prepare(), s.t1, "voxel sizes must be positive")


def qform_sform_disagree(s):
    _gz_header_edit(s.t1, qoffset_z=float(head()[1][2, 3] + 30.0))
    return Expect(s.prepare(), s.t1, "qform and sform disagree")


def broken_quaternion(s):
    _gz_header_edit(s.t1, quatern_b=2.0)
    return Expect(s.prepare(), s.t1, "qform or sform is unusable")


def singular_affine(s):
    _gz_header_edit(s.t1, qform_code=0, srow_z=np.zeros(4))
    return Expect(s.prepare(), s.t1, "affine is singular")


def different_grids(s):
    data, affine = head(shape=(40, 56, 20))
    write_nifti(s.t2, data, affine)
    return Expect(s.prepare(), s.t2, "on different grids")


def age_missing(s):
    return Expect(s.prepare(), s.participants_age(""), "age_months '' is not a number")


def age_negative(s):
    return Expect(s.prepare(), s.participants_age("-20"), "outside -3 to 60 months")


def age_not_a_number(s):
    return Expect(s.prepare(), s.participants_age("six"), "'six' is not a number")


def age_nan(s):
    return Expect(s.prepare(), s.participants_age("nan"), "age_months is 'nan'")


def age_in_weeks_text(s):
    return Expect(s.prepare(), s.participants_age("28 weeks"), "'28 weeks' is not a number")


def age_in_weeks_number(s):
    return Expect(s.prepare(), s.participants_age("96"), "weeks or days?")


def duplicate_ids(s):
    s.participants.write_text("participant_id\tage_months\nsub-01\t6.5\nsub-01\t7.0\n")
    return Expect(s.prepare(), s.participants, "participant_id 'sub-01' appears twice")


def age_column_missing(s):
    s.participants.write_text("participant_id\tage\nsub-01\t6.5\n")
    return Expect(s.prepare(), s.participants, "missing column(s) age_months")


def participants_not_utf8(s):
    s.participants.write_bytes("participant_id\tage_months\nsub-01\t6,5 Monate\u00e4\n".encode("latin-1"))
    return Expect(s.prepare(), s.participants, "not UTF-8 text")


def participants_huge_cell(s):
    return Expect(s.prepare(), s.participants_age("1" * 200_000), "field larger than field limit")


def negative_slice_level(s):
    s.levels.write_text("participant_id\tslice_a\tslice_b\tslice_c\tslice_d\tslice_e\nsub-01\t-4\t7\t10\t13\t16\n")
    return Expect(s.prepare(), s.levels, "negative slice index")


LEVELS_HEADER = "participant_id\tslice_a\tslice_b\tslice_c\tslice_d\tslice_e\n"


def slice_level_outside_volume(s):
    s.levels.write_text(LEVELS_HEADER + f"sub-01\t4\t7\t10\t13\t{SHAPE[2] + 5}\n")
    return Expect(s.prepare(), s.levels, f"line 2 (sub-01): slice index {{'e': {SHAPE[2] + 5}}} is outside the volume")


def slice_levels_twice(s):
    s.levels.write_text(LEVELS_HEADER + "sub-01\t4\t7\t10\t13\t16\nsub-01\t4\t7\t10\t13\t15\n")
    return Expect(s.prepare(), s.levels, "line 3: sub-01 has slice levels twice (also line 2)")


def participant_without_levels(s):
    s.participants.write_text("participant_id\tage_months\nsub-01\t6.5\nsub-02\t7.0\n")
    return Expect(s.prepare(), s.levels, "no row for sub-02 (")


def levels_for_unknown_participant(s):
    s.levels.write_text(LEVELS_HEADER + "sub-01\t4\t7\t10\t13\t16\nsub-09\t4\t7\t10\t13\t16\n")
    return Expect(s.prepare(), s.levels, "line 3 (sub-09): sub-09 is not in")


def bids_duplicate_ids(s):
    s.participants.write_text("participant_id\tage_months\nsub-01\t6.5\nsub-01\t7.0\n")
    return Expect(s.predict_list("--bids", s.bids), s.participants, "appears twice")


def sessions_ragged(s):
    (s.bids / "sub-01" / "ses-1" / "anat").mkdir(parents=True)
    table = s.bids / "sub-01" / "sub-01_sessions.tsv"
    table.write_text("session_id\tage_months\nses-1\t6.5\textra\n")
    return Expect(s.predict_list("--bids", s.bids), table, "line 2 has 3 fields, the header has 2")


def csv_missing_column(s):
    listing = s.root / "scans.csv"
    listing.write_text(f"subject,t1w\nsub-01,{s.t1}\n")
    return Expect(s.predict_list("--csv", listing), listing, "missing column(s) t2w")


def csv_unquoted_comma(s):
    listing = s.root / "scans.csv"
    listing.write_text(f"subject,t1w,t2w\nsub-01,{s.t1},{s.t2},6.5\n")
    return Expect(s.predict_list("--csv", listing), listing, "line 2 has 4 fields, the header has 3")


def not_nifti_format(s):
    mgz = s.root / "T1w.mgz"
    nib.save(nib.MGHImage(*head()), str(mgz))
    return Expect(s.predict_pair(t1=mgz), mgz, "not a NIfTI file")


def different_heads(s):
    data, affine = head(centre_mm=(0.0, 60.0, 0.0), seed=1)
    write_nifti(s.t2, data, affine)
    return Expect(s.predict_pair(), s.t2, "does not show the same head")


def different_heads_keeps_earlier_output(s):
    data, affine = head(centre_mm=(0.0, 60.0, 0.0), seed=1)
    write_nifti(s.t2, data, affine)
    return Expect(s.predict_pair(extra=s.earlier_output("subject")), s.t2,
                  "does not show the same head")


def fields_of_view_apart(s):
    data, affine = head()
    affine[:3, 3] += [0.0, 0.0, 400.0]
    write_nifti(s.t2, t2_of(data), affine)
    return Expect(s.predict_pair(), s.t2, "field of view covers only")


# Issue 19: inputs that got an age. Each is refused in the whole-brain pipeline's checks
# (wholebrain.plausibility, wholebrain.contrast_order) before anything is written.

def contrasts_swapped(s):
    s.swap_files()  # issue 19: a 9.4-month-old read as 4.2 months
    return Expect(s.predict_pair(), s.t1, "the T1w and T2w look swapped")


def contrasts_swapped_keeps_earlier_output(s):
    s.swap_files()
    return Expect(s.predict_pair(extra=s.earlier_output("subject")), s.t1, "the T1w and T2w look swapped")


def same_file_as_both_contrasts(s):
    return Expect(s.predict_pair(t2=s.t1), s.t1, "is the same file as the T1w")


def identical_voxels_in_two_files(s):
    s.t2.write_bytes(s.t1.read_bytes())
    return Expect(s.predict_pair(), s.t2, "has exactly the same voxels as the T1w")


def two_t1w_images(s):
    write_nifti(s.t2, head(seed=3)[0], head()[1])  # a second T1w of the same head: other noise
    return Expect(s.predict_pair(), s.t1, "cannot tell which image is the T1w")


def noise_filling_the_volumes(s):
    rng = np.random.default_rng(0)
    s.write_pair(*(rng.random(SHAPE, np.float32) * 1000 for _ in range(2)))
    return Expect(s.predict_pair(), s.t1, "looks like random noise, not an MR image of a head")


def noise_block_in_zeros(s):
    # A head-sized block in an exact-zero background reads as skull-stripped, where the same-head
    # check compares outlines only: it got 3.3 months (issue 19).
    rng = np.random.default_rng(0)
    blocks = []
    for _ in range(2):
        block = np.zeros(SHAPE, np.float32)
        block[6:42, 6:50, 2:18] = rng.random((36, 44, 16)) * 1000 + 1
        blocks.append(block)
    s.write_pair(*blocks)
    return Expect(s.predict_pair(), s.t1, "looks like random noise, not an MR image of a head")


def voxels_of_50_mm(s):
    _rewrite_pair(s, 20.0)  # 50 x 50 x 100 mm, on both contrasts
    return Expect(s.predict_pair(), s.t1, "voxel sizes 50x50x100 mm are outside the 0.1 to 10 mm")


def voxels_too_coarse_for_an_infant_head(s):
    _rewrite_pair(s, 1.6)  # 4 x 4 x 8 mm: a scanner's, not an infant head scan's
    return Expect(s.predict_pair(), s.t1, "voxels of 4x4x8 mm are too coarse for an infant head scan")


def field_of_view_too_small_for_an_infant_head(s):
    _rewrite_pair(s, 0.3)  # 36 x 42 x 30 mm
    return Expect(s.predict_pair(), s.t1, "too small for an infant head")


def swap_contrasts_with_a_list(s):
    listing = s.root / "scans.csv"
    listing.write_text(f"subject,t1w,t2w\nsub-01,{s.t1},{s.t2}\n")
    return Expect(s.predict_list("--csv", listing) + ["--swap-contrasts"], "--swap-contrasts", "is for one infant")


def model_of_another_architecture(s):
    return Expect(s.predict_pair(model=s.assets["dense"]), s.assets["dense"], "not a myelination-age model")


def model_with_lambda_layer(s):
    return Expect(s.predict_pair(model=s.assets["lambda"]), s.assets["lambda"], "never writes: Lambda")


def model_not_a_zip(s):
    bad = s.root / "model.keras"
    bad.write_bytes(b"PK\x03\x04 not really a keras archive")
    record(bad)
    return Expect(s.predict_pair(model=bad), bad, "not a zip file")


def model_not_in_manifest(s):
    import shutil

    copy = s.root / "elsewhere" / "tiny.keras"
    copy.parent.mkdir()
    shutil.copy(s.assets["model"], copy)  # the bytes kerasmyelin wrote, without their manifest
    return Expect(s.predict_pair(model=copy), copy, "not listed in")


def model_changed_after_writing(s):
    import shutil

    folder = s.root / "tampered"
    shutil.copytree(s.assets["model"].parent, folder, ignore=shutil.ignore_patterns("tenslice"))
    changed = folder / "tiny.keras"
    changed.write_bytes(changed.read_bytes() + b"\0")
    return Expect(s.predict_pair(model=changed), changed, "changed after kerasmyelin wrote it")


def config_unknown_key(s):
    return Expect(s.train("train:\n  epoch: 5\n"), "experiment.yaml", "unknown key(s) epoch")


def config_wrong_type(s):
    return Expect(s.train("train:\n  epochs: ten\n"), "experiment.yaml", "train.epochs: expected a whole number")


def config_bad_value(s):
    text = "model:\n  image_size: 32\n  conv_filters: [0, 8]\n"  # would reach Keras, and fail there
    return Expect(s.train(text), "experiment.yaml", "conv_filters must be at least 1")


def config_number_too_large(s):
    return Expect(s.train("train:\n  learning_rate: 1" + "0" * 400 + "\n"), "experiment.yaml",
                  "too large for a number")


def config_not_yaml(s):
    return Expect(s.train("train: [epochs: 5\n"), "experiment.yaml", "not valid YAML")


def config_override_not_yaml(s):
    return Expect(s.train(overrides=["train.epochs=[5"]), "train.epochs=[5", "not valid YAML")


def cache_truncated(s):
    import shutil

    cache = s.root / "tenslice"
    shutil.copytree(s.assets["cache"], cache)
    npz = cache / "tenslice.npz"
    npz.write_bytes(npz.read_bytes()[:5000])
    return Expect(s.train(data=cache), cache, "ten-slice cache is unreadable")


def model_without_its_record(s):
    # Issue 19: a model from before models carried their preparation settings was served with the
    # paper's defaults and a one-line warning.
    import zipfile

    old = s.root / "old" / "tiny.keras"
    old.parent.mkdir()
    with zipfile.ZipFile(s.assets["model"]) as z, zipfile.ZipFile(old, "w") as out:
        for info in z.infolist():
            if info.filename != "kerasmyelin.json":
                out.writestr(info, z.read(info.filename))
    record(old)
    return Expect(s.predict_pair(model=old), old, "carries no preparation settings")


def prep_contradicting_the_record(s):
    settings = s.root / "prep.yaml"
    settings.write_text("intensity_reference: brain_core\n")
    return Expect(s.predict_pair(extra=["--prep", str(settings)]), s.assets["model"],
                  "--prep differs from the settings this model was trained with (intensity_reference")


def calibration_with_four_scans(s):
    listing = s.root / "local.csv"
    listing.write_text("subject,t1w,t2w,age_months\n" + "".join(f"s{i},{s.t1},{s.t2},6.5\n" for i in range(4)))
    return Expect(["calibrate", "--model", str(s.assets["model"]), "--csv", str(listing), "--out", str(s.out)],
                  listing, "4 labelled scan(s); a site calibration needs at least 5")


def init_from_not_a_run(s):
    elsewhere = s.root / "elsewhere"
    elsewhere.mkdir()
    return Expect([*s.train(), "--init-from", str(elsewhere)], elsewhere,
                  "not a kerasmyelin run (no config.yaml), fold folder or .keras file to start training from")


def init_from_another_architecture(s):
    # The tiny model has 8-unit dense layers; the paper's network at 32 pixels has 32.
    return Expect([*s.train(overrides=["model.image_size=32"]), "--init-from", str(s.assets["model"])],
                  s.assets["model"], "the architectures differ at layer 't1w_a_dense'")


CASES = {
    "truncated .nii.gz": truncated_gz,
    "truncated .nii.gz, earlier output kept": truncated_gz_keeps_earlier_output,
    ".nii.gz that is not gzip": not_gzip,
    "empty file": empty_file,
    "folder where a NIfTI file should be": folder_instead_of_file,
    "BIDS subject without T2w": missing_t2w,
    "size bomb: 4096^3 voxels": size_bomb_over_limit,
    "size bomb: 1 GB of float64 claimed by a 0.2 MB file": size_bomb_under_limit,
    "4-D volume": four_d,
    "2-D volume": two_d,
    "header dim[0] = 0": dim0_zero,
    "header with an empty dimension": empty_dimension,
    "NaN voxels": nan_voxels,
    "infinite voxels": inf_voxels,
    "scale factor overflowing float32": scale_factor_overflow,
    "all-zero image": all_zero,
    "complex voxels": complex_voxels,
    "RGB voxels": rgb_voxels,
    "zero voxel size": zero_voxel_size,
    "negative voxel size": negative_voxel_size,
    "qform and sform disagree": qform_sform_disagree,
    "quaternion that is no rotation": broken_quaternion,
    "singular affine": singular_affine,
    "T1w and T2w on different grids": different_grids,
    "age missing": age_missing,
    "age negative": age_negative,
    "age not a number": age_not_a_number,
    "age NaN": age_nan,
    "age in weeks (text)": age_in_weeks_text,
    "age in weeks (number)": age_in_weeks_number,
    "duplicate participant ids": duplicate_ids,
    "participants.tsv without age_months": age_column_missing,
    "participants.tsv not UTF-8": participants_not_utf8,
    "participants.tsv with a 200 kB cell": participants_huge_cell,
    "negative slice level": negative_slice_level,
    "slice level outside the volume": slice_level_outside_volume,
    "slice levels twice": slice_levels_twice,
    "participant without levels": participant_without_levels,
    "levels for an unknown participant": levels_for_unknown_participant,
    "BIDS batch, duplicate participant ids": bids_duplicate_ids,
    "sessions.tsv with a ragged row": sessions_ragged,
    "CSV list without t2w column": csv_missing_column,
    "CSV list with an unquoted comma": csv_unquoted_comma,
    "MGH file given as T1w": not_nifti_format,
    "T1w and T2w of different heads": different_heads,
    "different heads, earlier output kept": different_heads_keeps_earlier_output,
    "T1w and T2w fields of view apart": fields_of_view_apart,
    "model of another architecture": model_of_another_architecture,
    "model with a Lambda layer": model_with_lambda_layer,
    "model file that is not a Keras archive": model_not_a_zip,
    "config with an unknown key": config_unknown_key,
    "config with a wrong type": config_wrong_type,
    "config with a bad value": config_bad_value,
    "config with a number too large for a float": config_number_too_large,
    "config that is not YAML": config_not_yaml,
    "--set value that is not YAML": config_override_not_yaml,
    "truncated ten-slice cache": cache_truncated,
    "model file missing from SHA256SUMS": model_not_in_manifest,
    "model file changed after it was written": model_changed_after_writing,
    "size bomb: 4 GiB of float64 in a 4 MB file that inflates to it": size_bomb_that_inflates,
    "gzip-compressed file named .nii": gzip_named_nii,
    "uncompressed file named .nii.gz": plain_named_gz,
    "voxel size no scanner uses (0.01 mm)": voxel_size_no_scanner_uses,
    "voxel sizes in metres": voxel_sizes_in_metres,
    "field of view no head has (600 mm)": field_of_view_not_a_head,
    "T1w and T2w swapped": contrasts_swapped,
    "T1w and T2w swapped, earlier output kept": contrasts_swapped_keeps_earlier_output,
    "one file given as both contrasts": same_file_as_both_contrasts,
    "two files with identical voxels": identical_voxels_in_two_files,
    "two T1w images": two_t1w_images,
    "random noise filling both volumes": noise_filling_the_volumes,
    "head-sized blocks of random noise in zeros": noise_block_in_zeros,
    "50 mm voxels on both contrasts": voxels_of_50_mm,
    "voxels too coarse for an infant head (4 mm)": voxels_too_coarse_for_an_infant_head,
    "field of view too small for an infant head (36 mm)": field_of_view_too_small_for_an_infant_head,
    "--swap-contrasts with a list": swap_contrasts_with_a_list,
    "model without its record (preparation settings)": model_without_its_record,
    "--prep contradicting the model's record": prep_contradicting_the_record,
    "site calibration on four scans": calibration_with_four_scans,
    "--init-from a folder that is not a run": init_from_not_a_run,
    "--init-from a model of another architecture": init_from_another_architecture,
}


@dataclass
class Flagged:
    argv: list[str]
    reason: str         # result.json's grade_reason
    phrase: str         # what grade_reason_text (and the printed line) must say


ADULT_SHAPE = (84, 100, 40)  # 210 x 250 x 200 mm


def adult_sized_head(s):
    # Issue 19: an adult's brain was estimated at 14 months and graded like an infant's.
    data, affine = head(shape=ADULT_SHAPE, size=1.9)
    s.write_pair(data, affine=affine)
    return Flagged(s.predict_pair(), "brain_size_outside_infants", "is far larger than an infant's of 0-24 months")


FLAGGED = {"adult-sized head": adult_sized_head}


def _snapshot(folder: Path):
    """Every file under ``folder`` with its bytes (None when the folder does not exist)."""
    if not folder.exists():
        return None
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _run_capped(argv: list[str]) -> tuple[int, str]:
    """The command in a child process whose address space is capped at MEMORY_CAP."""
    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))

    code = "import sys; from kerasmyelin.cli.main import main; sys.exit(main(sys.argv[1:]))"
    env = {"PATH": "/usr/bin:/bin", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, preexec_fn=cap,
                          check=False, cwd=REPO, env=env, timeout=120)
    return proc.returncode, proc.stderr


@pytest.mark.parametrize("name", list(CASES))
def test_malformed_input_is_refused_naming_file_and_problem(name, assets, tmp_path, capsys):
    scene = Scene(tmp_path, assets)
    expect = CASES[name](scene)
    before = _snapshot(scene.out)
    if expect.memory_cap:
        code, err = _run_capped(expect.argv)
    else:
        code = main(expect.argv)
        err = capsys.readouterr().err
    assert code == 2, err  # the project's own error: no traceback, no crash
    assert "Traceback" not in err
    assert (expect.names.name if isinstance(expect.names, Path) else expect.names) in err, err
    assert expect.phrase in err, err
    # Nothing half-written: no new output, an earlier one unchanged, no temporary folders left.
    assert _snapshot(scene.out) == before
    assert not list(scene.out.parent.glob(f".{scene.out.name}.*"))
    assert not list(scene.out.parent.glob(f"{scene.out.name}.kerasmyelin-*"))


def test_unreadable_file_is_refused_naming_it(assets, tmp_path, capsys, monkeypatch):
    """A T1w the user may not read. Tests run as root, which reads any file, so opening it is made
    to fail as it does for a user (the file's mode is 000 as well)."""
    import builtins
    import os

    scene = Scene(tmp_path, assets)
    scene.t1.chmod(0)
    real_open = builtins.open

    def denied(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and os.fspath(file) == str(scene.t1):
            raise PermissionError(13, "Permission denied", str(scene.t1))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", denied)
    code = main(scene.prepare())
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    assert "sub-01_T1w.nii.gz: cannot be read (permission denied)" in err, err
    assert not scene.out.exists()


@pytest.mark.parametrize("name", list(FLAGGED))
def test_flagged_input_is_estimated_but_never_graded(name, assets, tmp_path, capsys):
    """Inputs that may be an infant's but are unlike any (an adult-sized brain): estimated, the grade
    withheld with its reason whether or not a corrected age is given, and the terminal says why."""
    from kerasmyelin.norms.model import NOT_GRADED

    scene = Scene(tmp_path, assets)
    flag = FLAGGED[name](scene)
    assert main(flag.argv) == 0
    printed = capsys.readouterr().out
    result = json.loads((scene.out / "result.json").read_text())
    assert result["grade"] == NOT_GRADED and result["grade_reason"] == flag.reason, result
    assert flag.phrase in result["grade_reason_text"], result["grade_reason_text"]
    assert f"NOT GRADED: check the input ({result['grade_reason_text']})" in printed, printed
    assert (scene.out / "report.png").is_file()


def test_swap_contrasts_reads_files_labelled_the_wrong_way_round(assets, tmp_path, capsys):
    """--swap-contrasts on a pair given the wrong way round gives exactly the right-way-round result."""
    scene = Scene(tmp_path, assets)
    scene.out = tmp_path / "right"
    assert main(scene.predict_pair()) == 0
    scene.swap_files()
    scene.out = tmp_path / "swapped"
    assert main(scene.predict_pair(extra=["--swap-contrasts"])) == 0
    assert "was read as the T1w" in capsys.readouterr().out
    right, swapped = (json.loads((tmp_path / d / "result.json").read_text()) for d in ("right", "swapped"))
    assert swapped["estimate_months"] == right["estimate_months"]
    assert swapped["qc"]["contrasts_swapped_on_request"] and not right["qc"]["contrasts_swapped_on_request"]
    a, b = np.load(tmp_path / "right" / "slices.npz"), np.load(tmp_path / "swapped" / "slices.npz")
    assert all(np.array_equal(a[n], b[n]) for n in a.files)


def test_there_are_at_least_25_cases():
    assert len(CASES) >= 25


def test_the_valid_inputs_are_accepted(assets, tmp_path, capsys):
    """The unspoilt scene goes through each command, so the refusals above are the defects'."""
    scene = Scene(tmp_path, assets)
    assert main(scene.prepare()) == 0
    assert (scene.out / "tenslice.npz").is_file()
    scene.out = tmp_path / "pair"
    assert main(scene.predict_pair()) == 0
    result = json.loads((scene.out / "result.json").read_text())
    assert result["estimate_months"] is not None and result["grade"] is None  # no age: no grade
    # The issue-19 checks pass it: each case above is refused for its one defect.
    assert result["qc"]["contrast_order"]["score"] >= MIN_SCORE and result["qc"]["grade_withheld"] is None
    assert min(result["qc"]["noise"].values()) >= MIN_NEIGHBOUR_R
    code, err = _run_capped(["prepare", "--bids", str(scene.bids), "--levels", str(scene.levels),
                             "--out", str(tmp_path / "capped"), "--quiet"])
    assert code == 0, err
