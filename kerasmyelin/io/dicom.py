"""DICOM series folders to de-identified NIfTI files, with dcm2niix.

The conversion itself is dcm2niix's (Rorden et al.), the reference DICOM-to-NIfTI converter: it
sorts slices by position, builds the affine from ImagePositionPatient/ImageOrientationPatient/
PixelSpacing and handles the vendors' quirks. It comes from PyPI (``pip install
"kerasmyelin[dicom]"``, the ``dcm2niix`` wheel carries the binary) or Debian (``apt-get install
dcm2niix``); the PyPI binary is preferred when both exist.

Patient identifiers are dropped on the way:

- dcm2niix runs with ``-ba y``, which leaves PatientName, PatientID, PatientBirthDate,
  PatientSex, the UIDs and AcquisitionDateTime out of its BIDS sidecars;
- kerasmyelin then removes from each sidecar every other key that can point to a person, a place
  or a date (``IDENTIFYING_KEYS``: institution, physicians, operators, station, device serial
  number, accession number, dates and clock times, comments);
- the NIfTI header's free-text fields (``descrip``, where dcm2niix writes the echo time and the
  acquisition clock time, ``aux_file``, ``db_name``) are blanked and header extensions removed;
- output files are named after the contrast (``T1w.nii.gz``), never after the patient, and the
  manifest does not record the input folder's path (folder names often hold the patient's name);
- when pydicom is installed, the identifiers are read from the DICOM files and every output
  (file names, NIfTI bytes, sidecars, manifest) is searched for them; a hit is an error and
  nothing is written.

Which series is T1w and which T2w is read from SeriesDescription / ProtocolName ("T1W_TIR",
"t2_tse_tra", "MPRAGE", ...), else from the timing (T1w: TE <= 30 ms with TR <= 1000 ms or an
inversion time of 300-1500 ms; T2w: TE >= 60 ms with TR >= 1500 ms and no inversion). FLAIR,
localizers, diffusion and other series are listed and left out. When more than one series fits a
contrast, the choice is the caller's (``series={"T1w": 301}``).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from kerasmyelin.errors import InputError, KerasMyelinError

log = logging.getLogger(__name__)

CONTRASTS = ("T1w", "T2w")
# Sidecar keys dropped: anything about the patient (but the image's orientation and position
# relative to the patient), dates and clock times, places, people, devices and free-text comments.
IDENTIFYING_KEYS = re.compile(
    r"^(?!.*(?:Orientation|Position)).*(?:Patient|Birth|Date|UID|Institution|Physician|Operator|Station|"
    r"SerialNumber|Accession|Comments|Procedure)"
    r"|^StudyID$|^StudyDescription$|^(?:Acquisition|Content|Study|Series)Time$")
_NIFTI_TEXT_FIELDS = ("descrip", "aux_file", "db_name")
# Series names (upper case) that are neither contrast: FLAIR (Siemens "dark-fluid"), T2*/gradient
# echo, diffusion, localizers, angiography, perfusion, functional.
_OTHER = re.compile(r"FLAIR|DARK.?FLUID|STIR|SWI|SWAN|T2.?\*|T2.?STAR|T2.?FFE|T2.?GRE|MEDIC|HEMO|DWI|DTI|DIFF|"
                    r"ADC|TRACE|SURVEY|SCOUT|LOCALI|(?<![A-Z])LOC(?![A-Z])|MRA|TOF|ASL|PERF|FMRI|BOLD|EPI")
_T1 = re.compile(r"T1|MP.?RAGE|SPGR|BRAVO|TFL")
_T2 = re.compile(r"T2")


def dcm2niix_binary() -> str:
    """Path of the dcm2niix program: the PyPI wheel's, else one on PATH (Debian's).

    Raises:
        KerasMyelinError: saying how to install it, when there is none.
    """
    try:
        import dcm2niix

        if Path(dcm2niix.bin).is_file():
            return str(dcm2niix.bin)
    except ImportError:
        pass
    found = shutil.which("dcm2niix")
    if found:
        return found
    raise KerasMyelinError('dcm2niix is not installed: pip install "kerasmyelin[dicom]" (or pip install '
                           "dcm2niix, or apt-get install dcm2niix)")


@dataclass
class Series:
    """One series dcm2niix converted, and what kerasmyelin made of it.

    Attributes:
        name: dcm2niix's output stem ("series301", "series301_e2").
        number: SeriesNumber (None when absent).
        description: SeriesDescription, else ProtocolName ("" when neither).
        repetition_time_ms, echo_time_ms, inversion_time_ms: timing, ms (None when absent).
        contrast: "T1w", "T2w" or None.
        reason: why that contrast (or none).
    """

    name: str
    number: int | None
    description: str
    repetition_time_ms: float | None
    echo_time_ms: float | None
    inversion_time_ms: float | None
    contrast: str | None
    reason: str


def _ms(sidecar: dict, key: str) -> float | None:
    value = sidecar.get(key)
    return round(float(value) * 1000.0, 3) if isinstance(value, (int, float)) else None


def classify(sidecar: dict) -> tuple[str | None, str]:
    """("T1w" | "T2w" | None, reason) for one series from its dcm2niix BIDS sidecar."""
    text = " ".join(dict.fromkeys(str(sidecar.get(k, "")) for k in ("SeriesDescription", "ProtocolName"))).upper()
    image_type = [str(t).upper() for t in sidecar.get("ImageType", [])]
    if "DERIVED" in image_type or "PHASE" in image_type:
        return None, f"derived or phase image ({'/'.join(image_type)})"
    if _OTHER.search(text):
        return None, f"name {text.strip()!r} says neither T1w nor T2w (FLAIR, localizer, diffusion, ...)"
    t1, t2 = bool(_T1.search(text)), bool(_T2.search(text))
    if t1 != t2:
        return ("T1w" if t1 else "T2w"), f"name {text.strip()!r}"
    tr, te, ti = _ms(sidecar, "RepetitionTime"), _ms(sidecar, "EchoTime"), _ms(sidecar, "InversionTime")
    timing = f"TR {tr} ms, TE {te} ms, TI {ti} ms"
    if te is not None and tr is not None:
        if te <= 30 and (tr <= 1000 or (ti is not None and 300 <= ti <= 1500)):
            return "T1w", f"timing ({timing})"
        if te >= 60 and tr >= 1500 and not ti:
            return "T2w", f"timing ({timing})"
    return None, f"neither name nor timing says T1w or T2w ({timing})"


def _run_dcm2niix(folder: Path, out: Path) -> str:
    cmd = [dcm2niix_binary(), "-b", "y", "-ba", "y", "-z", "n", "-i", "y", "-f", "series%s", "-o", str(out),
           str(folder)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=3600, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise KerasMyelinError(f"dcm2niix could not run ({exc})") from None
    output = (done.stdout + done.stderr).strip()
    if not any(out.glob("*.nii")):
        tail = "\n".join(output.splitlines()[-6:])
        raise InputError(f"dcm2niix found no DICOM series it could convert (exit {done.returncode}):\n{tail}", folder)
    return output


def _scrub_sidecar(sidecar: dict) -> dict:
    return {k: v for k, v in sidecar.items() if not IDENTIFYING_KEYS.search(k)}


def _identifiers(folder: Path) -> set[str]:
    """PatientName parts, PatientID and birth date (as written and as YYYY-MM-DD) of the DICOM files,
    when pydicom is installed; else empty."""
    try:
        import pydicom
        from pydicom.errors import InvalidDicomError
    except ImportError:
        log.info("pydicom is not installed: outputs are not searched for the patient's identifiers")
        return set()
    found: set[str] = set()
    tags = ["PatientName", "PatientID", "PatientBirthDate", "OtherPatientIDs"]
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=tags)
        except (InvalidDicomError, OSError, ValueError, TypeError, KeyError, AttributeError, EOFError):
            continue  # not DICOM (a DICOMDIR, notes): dcm2niix skips it too
        name = str(ds.get("PatientName", "") or "")
        found.update(p for p in re.split(r"[\^=\s,]+", name) if len(p) >= 3)
        for key in ("PatientID", "OtherPatientIDs"):
            value = str(ds.get(key, "") or "").strip()
            if len(value) >= 3:
                found.add(value)
        birth = str(ds.get("PatientBirthDate", "") or "").strip()
        if re.fullmatch(r"\d{8}", birth):
            found.update({birth, f"{birth[:4]}-{birth[4:6]}-{birth[6:]}"})
    return found


def _check_clean(folder: Path, identifiers: set[str]) -> None:
    """Raise if a file name, a text file or a NIfTI header under ``folder`` holds one of ``identifiers``.

    Pixel data are not searched: a three-letter name occurs by chance in megabytes of voxels.
    """
    import nibabel as nib

    needles = {i.lower().encode("utf-8") for i in identifiers}
    for path in folder.rglob("*"):
        if not path.is_file():
            continue
        if path.name.endswith((".nii", ".nii.gz")):
            data = nib.load(path).header.binaryblock  # extensions were removed
        else:
            data = path.read_bytes()
        data = (path.name.encode("utf-8") + b"\n" + data).lower()
        if any(n in data for n in needles):
            raise KerasMyelinError(f"a patient identifier survived de-identification in {path.name}; nothing "
                                   "was written (please report this with the scanner make and model)")


def _save_clean_nifti(source: Path, target: Path) -> None:
    import nibabel as nib

    img = nib.load(source)
    for key in _NIFTI_TEXT_FIELDS:
        img.header[key] = b""
    img.header.extensions.clear()
    nib.save(img, target)


def dicom_series_to_nifti(folder: str | os.PathLike, out: str | os.PathLike, *,
                          series: dict[str, int] | None = None, require: tuple[str, ...] = CONTRASTS,
                          overwrite: bool = False) -> dict[str, Path]:
    """Convert the T1w and T2w series in a DICOM folder to de-identified NIfTI files.

    Args:
        folder: a folder of DICOM files (sub-folders included), one or more series.
        out: output folder, written in one rename: ``T1w.nii.gz``, ``T1w.json``, ``T2w.nii.gz``,
            ``T2w.json`` and ``manifest.json`` (every series found, its timing, the contrast
            given to it and why).
        series: contrast -> SeriesNumber, to choose when names and timing cannot.
        require: contrasts that must be found.
        overwrite: replace an earlier kerasmyelin output folder.

    Returns:
        contrast -> path of its NIfTI file.

    Raises:
        InputError: naming the folder when it holds no convertible series, no series or several
            series for a required contrast, or a chosen series number that is not there.
        KerasMyelinError: when dcm2niix is missing or an identifier survived.
    """
    from kerasmyelin import __version__
    from kerasmyelin.io.atomic import write_text_atomic
    from kerasmyelin.io.output_dir import OutputFolder, check_output

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("DICOM folder not found", folder)
    series = dict(series or {})
    unknown = sorted(set(series) - set(CONTRASTS))
    if unknown:
        raise ValueError(f"series may choose only {CONTRASTS}, got {unknown}")
    out = check_output(out, "dicom", overwrite=overwrite, inputs=[("DICOM folder", folder)])
    binary = dcm2niix_binary()
    identifiers = _identifiers(folder)
    with tempfile.TemporaryDirectory(prefix="kerasmyelin-dcm2niix-") as raw_dir:
        raw = Path(raw_dir)
        os.chmod(raw, 0o700)
        output = _run_dcm2niix(folder, raw)
        found: list[tuple[Series, Path, dict]] = []
        for nii in sorted(raw.glob("*.nii")):
            sidecar_path = nii.with_suffix(".json")
            sidecar = json.loads(sidecar_path.read_text()) if sidecar_path.is_file() else {}
            contrast, reason = classify(sidecar)
            number = sidecar.get("SeriesNumber")
            s = Series(nii.stem, int(number) if isinstance(number, (int, float)) else None,
                       str(sidecar.get("SeriesDescription") or sidecar.get("ProtocolName") or ""),
                       _ms(sidecar, "RepetitionTime"), _ms(sidecar, "EchoTime"), _ms(sidecar, "InversionTime"),
                       contrast, reason)
            found.append((s, nii, sidecar))
        if not found:
            tail = "\n".join(output.splitlines()[-6:])
            raise InputError(f"dcm2niix converted no series (localizers and derived images are skipped):\n{tail}",
                             folder)
        chosen: dict[str, tuple[Series, Path, dict]] = {}
        for contrast, number in series.items():
            hits = [f for f in found if f[0].number == number]
            if not hits:
                raise InputError(f"no series number {number} (found: {_listing(found)})", folder)
            if len(hits) > 1:
                raise InputError(f"series {number} gave several volumes ({', '.join(h[0].name for h in hits)}: "
                                 "echoes or orientations); split it first", folder)
            hits[0][0].contrast, hits[0][0].reason = contrast, "chosen by the caller"
            chosen[contrast] = hits[0]
        for contrast in CONTRASTS:
            if contrast in chosen:
                continue
            hits = [f for f in found if f[0].contrast == contrast and f not in chosen.values()]
            if len(hits) > 1:
                raise InputError(f"{len(hits)} series look {contrast}: {_listing(hits)}; choose one "
                                 f"(--{contrast[:2].lower()}-series NUMBER)", folder)
            if hits:
                chosen[contrast] = hits[0]
            elif contrast in require:
                raise InputError(f"no {contrast} series found among {_listing(found)}; choose one "
                                 f"(--{contrast[:2].lower()}-series NUMBER)", folder)
        with OutputFolder(out, "dicom", overwrite=overwrite, inputs=[("DICOM folder", folder)],
                          what="kerasmyelin convert-dicom") as staged:
            tmp = staged.work
            paths = {}
            for contrast, (s, nii, sidecar) in chosen.items():
                _save_clean_nifti(nii, tmp / f"{contrast}.nii.gz")
                write_text_atomic(tmp / f"{contrast}.json", json.dumps(_scrub_sidecar(sidecar), indent=1) + "\n")
                paths[contrast] = out / f"{contrast}.nii.gz"
            manifest = {"created_by": f"kerasmyelin {__version__} convert-dicom",
                        "converter": {"program": "dcm2niix", "version": _version(binary),
                                      "options": "-b y -ba y -z n -i y"},
                        "deidentification": "dcm2niix -ba y; sidecar keys matching IDENTIFYING_KEYS dropped; "
                                            "NIfTI descrip/aux_file/db_name blanked, extensions removed"
                                            + ("; outputs searched for the patient's identifiers"
                                               if identifiers else ""),
                        "outputs": {c: f"{c}.nii.gz" for c in chosen},
                        "series": [asdict(f[0]) for f in found]}
            write_text_atomic(tmp / "manifest.json", json.dumps(manifest, indent=1) + "\n")
            _check_clean(tmp, identifiers)
    return paths


def _listing(found) -> str:
    return ", ".join(f"{s.number} {s.description!r} ({s.contrast or 'other'})" for s, _, _ in found)


def _version(binary: str) -> str:
    try:
        done = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    match = re.search(r"v\d+\.\d+\.\d+\w*", done.stdout + done.stderr)
    return match.group(0) if match else "unknown"
