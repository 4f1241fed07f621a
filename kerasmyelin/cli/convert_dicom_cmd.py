"""``kerasmyelin convert-dicom``: a DICOM folder's T1w and T2w series to de-identified NIfTI."""

from __future__ import annotations

import argparse

USES_TENSORFLOW = False
NAME = "convert-dicom"
HELP = "Convert the T1w and T2w series of a DICOM folder to NIfTI with dcm2niix, dropping patient identifiers."
EXAMPLES = """examples:
  kerasmyelin convert-dicom /media/cdrom/DICOM --out infant-01-nifti
  kerasmyelin predict --model main/e100_ensemble --t1 infant-01-nifti/T1w.nii.gz \\
      --t2 infant-01-nifti/T2w.nii.gz --out infant-01
  # two T1w series (say, a repeat after motion): choose by SeriesNumber
  kerasmyelin convert-dicom DICOM --t1-series 501 --out infant-01-nifti
Writes T1w.nii.gz, T2w.nii.gz, their de-identified JSON sidecars and manifest.json (every
series found and why it was or was not taken). Needs dcm2niix: pip install "kerasmyelin[dicom]"
or apt-get install dcm2niix. What is removed: docs/inputs.md.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dicom", metavar="DICOM_DIR", help="folder of DICOM files (sub-folders included)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--t1-series", type=int, metavar="NUMBER", help="SeriesNumber of the T1w series")
    p.add_argument("--t2-series", type=int, metavar="NUMBER", help="SeriesNumber of the T2w series")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier conversion in --out")


def run(args: argparse.Namespace) -> int:
    from kerasmyelin.io.dicom import dicom_series_to_nifti

    series = {c: n for c, n in (("T1w", args.t1_series), ("T2w", args.t2_series)) if n is not None}
    paths = dicom_series_to_nifti(args.dicom, args.out, series=series, overwrite=args.overwrite)
    for contrast, path in paths.items():
        print(f"{contrast}: {path}")
    return 0
