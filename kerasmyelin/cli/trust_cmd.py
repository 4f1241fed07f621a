"""``kerasmyelin trust``: admit a model file that has no checksum entry, on purpose."""

from __future__ import annotations

import argparse

USES_TENSORFLOW = True  # Keras loads the model to check its weights
NAME = "trust"
HELP = ("Check a .keras file (layer types, zip checksums, that Keras loads its weights) and record its sha256 "
        "in its folder's SHA256SUMS.")
EXAMPLES = """examples:
  kerasmyelin trust runs/old/full/model.keras         # a model from an older kerasmyelin
  kerasmyelin trust colleague/fold-*/model.keras      # files copied without their SHA256SUMS
kerasmyelin loads only model files listed in SHA256SUMS beside them, with their recorded hash
(docs/reliability.md). Trust only files whose origin you know: a checksum says the bytes did not
change, not who made them. Files holding layer types kerasmyelin never writes are refused, and so
are damaged ones (a member failing its zip checksum, a truncated file, weights Keras cannot load);
nothing is recorded for them.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="+", help=".keras files to admit")


def run(args: argparse.Namespace) -> int:
    from kerasmyelin.io.model_files import MANIFEST, trust

    for f in args.files:
        digest = trust(f)
        print(f"trusted {f} (sha256 {digest[:16]}...), recorded in its folder's {MANIFEST}")
    return 0
