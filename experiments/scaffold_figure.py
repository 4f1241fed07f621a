"""Figure and table of the infant anatomy scaffolds (synth/scaffolds.py) for docs/realism.md.

For each template age: the template's T1w and T2w (headers corrected), its segmentation (white
matter, grey matter, CSF as red, green, blue), and a typical synthetic infant of that age built
on the scaffold (3 T research protocol, calibrated curves), at level c. Prints each scaffold's
proportions, brain volume on the grid and tissue volumes, and the segmentation's class means.

Usage: python experiments/scaffold_figure.py [--templates DIR] [--out docs/figures/scaffolds.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from kerasmyelin.io.infant_templates import TEMPLATE_MONTHS, corrected_image
    from kerasmyelin.synth import scaffolds
    from kerasmyelin.synth.simulate import simulate_subject
    from kerasmyelin.validation.synthetic_ratios import typical_infant

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--templates", default=str(ROOT.parent / "shared" / "data" / "infant_templates"))
    parser.add_argument("--out", default=str(ROOT / "docs" / "figures" / "scaffolds.png"))
    args = parser.parse_args()
    fig, axes = plt.subplots(len(TEMPLATE_MONTHS), 5, figsize=(11, 2.3 * len(TEMPLATE_MONTHS)))
    print("| template | proportions x / y / z | brain on grid (mL) | WM / GM / CSF in brain (mL) | "
          "class means T1w, T2w (share of brain median): WM; GM; CSF |")
    print("|---|---|---|---|---|")
    for row, month in enumerate(TEMPLATE_MONTHS):
        t1 = corrected_image(Path(args.templates) / f"Template-Month{month}-T1w.nii.gz")
        t2 = corrected_image(Path(args.templates) / f"Template-Month{month}-T2w.nii.gz")
        a1, a2 = np.asarray(t1.dataobj, np.float32), np.asarray(t2.dataobj, np.float32)
        seg = scaffolds.segment(a1, a2, t1.affine)
        sc = scaffolds.build_scaffold(args.templates, month)
        f = sc.anatomy.fractions
        brain = sc.anatomy.depth_mm > 0  # inside the brain: the extra-axial CSF layer is not counted
        vol = {k: float(f[k][brain].sum()) * sc.anatomy.res_mm ** 3 / 1000 for k in ("wm", "gm", "csf")}
        means = "; ".join(f"{seg.means[k][0]:.2f}, {seg.means[k][1]:.2f}" for k in ("wm", "gm", "csf"))
        print(f"| {month} mo | {' / '.join(f'{p:.3f}' for p in sc.proportions)} | {sc.brain_ml:.0f} | "
              f"{vol['wm']:.0f} / {vol['gm']:.0f} / {vol['csf']:.0f} | {means} |")
        box = np.argwhere(seg.brain)
        lo, hi = box.min(axis=0), box.max(axis=0)
        z = int(lo[2] + 0.55 * (hi[2] - lo[2]))
        window = (slice(lo[0], hi[0] + 1), slice(lo[1], hi[1] + 1), z)
        rgb = np.stack([seg.fractions[k][window] for k in ("wm", "gm", "csf")], axis=-1)
        scan = simulate_subject(typical_infant(month, 3.0, protocol="research3d", tissue_curves="calibrated",
                                               anatomy=scaffolds.anatomy_name(month), template_root=args.templates))
        k = scan.level_slices["c"]
        panels = [(a1[window], "template T1w"), (a2[window], "template T2w"), (rgb, "WM / GM / CSF"),
                  (scan.t1w[:, :, k], "synthetic T1w"), (scan.t2w[:, :, k], "synthetic T2w")]
        for col, (img, title) in enumerate(panels):
            ax = axes[row, col]
            ax.imshow(np.swapaxes(img, 0, 1), cmap=None if img.ndim == 3 else "gray", origin="lower")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(title, fontsize=9)
            if col == 0:
                ax.set_ylabel(f"{month} months", fontsize=9)
    fig.suptitle("Infant anatomy scaffolds: the BME-X templates, their segmentation, and a typical synthetic infant "
                 "built on each (3 T MPRAGE / SPACE, calibrated curves, with a simulated head)", fontsize=9)
    fig.tight_layout()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
