"""Probe: do the lateral ventricles of the real infant templates sit where the outline alignment
puts MNI's? (docs/wholebrain.md, "Level finder", real infant templates.)

Usage: python experiments/probe_template_ventricles.py [--templates ../shared/data/infant_templates]

MNI's ventricles: brain voxels at least 12 mm deep whose grey + white matter prior is below
0.3, the two largest components. A template's: the brightest 3% of its T2w voxels among those
that the T1w outline alignment maps at least 12 mm inside the MNI brain. Prints, per template,
the z (mm) of MNI's ventricle centroid mapped into the template, the measured centroid (mean
and median), and level c as found and as each reading has it. Templates are read with their
headers corrected (``template_levels.load_template``).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--templates", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" /
                                                   "infant_templates"))
    args = parser.parse_args()

    import numpy as np
    from scipy import ndimage

    from kerasmyelin.atlas.priors import load_mni_priors
    from kerasmyelin.validation.template_levels import (
        TEMPLATE_MONTHS,
        load_template,
        reading_z,
    )
    from kerasmyelin.wholebrain.level_finder import find_levels

    priors = load_mni_priors()
    aff = priors.affine
    depth = ndimage.distance_transform_edt(priors.brain)
    csf = priors.brain & ((priors.gm + priors.wm) < 0.3) & (depth >= 12)
    labels, n = ndimage.label(csf)
    sizes = ndimage.sum(csf, labels, range(1, n + 1))
    ventricles = np.isin(labels, np.argsort(sizes)[::-1][:2] + 1)
    mni_centroid = (np.argwhere(ventricles) * np.diag(aff)[:3] + aff[:3, 3]).mean(axis=0)
    print(f"MNI ventricle centroid (mm): {np.round(mni_centroid, 1)}")
    for months in TEMPLATE_MONTHS:
        t1, a1 = load_template(args.templates, months, "T1w")
        t2, _ = load_template(args.templates, months, "T2w")
        fit = find_levels(t1, a1)
        sub = t2[::2, ::2, :]
        ijk = np.argwhere(np.ones(sub.shape, bool)) * [2, 2, 1]
        world = ijk @ a1[:3, :3].T + a1[:3, 3]
        mni = world @ fit.subject_to_mni[:3, :3].T + fit.subject_to_mni[:3, 3]
        v = np.rint((mni - aff[:3, 3]) / np.diag(aff)[:3]).astype(int)
        inside = np.all((v >= 0) & (v < depth.shape), axis=1)
        deep = np.zeros(len(v), bool)
        deep[inside] = depth[v[inside, 0], v[inside, 1], v[inside, 2]] >= 12
        values = np.asarray(sub).reshape(-1)[deep]
        chosen = np.nonzero(deep)[0][values > np.percentile(values, 97)]
        predicted = (np.linalg.inv(fit.subject_to_mni) @ [*mni_centroid, 1.0])[2]
        z = world[chosen, 2]
        print(f"{months:>2} months: predicted ventricle z {predicted:6.1f}  measured {z.mean():6.1f} "
              f"(median {np.median(z):6.1f})  level c found {fit.z_mm['c']:6.1f}, first reading "
              f"{reading_z(args.templates, months, 'first')['c']:6.1f}, second "
              f"{reading_z(args.templates, months, 'second')['c']:6.1f}")


if __name__ == "__main__":
    main()
