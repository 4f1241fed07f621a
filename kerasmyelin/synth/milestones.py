"""When each white-matter region turns bright on T1w and dark on T2w.

Ages are months after term. The table is Barkovich et al., Radiology 1988;166:173-180 (1.5 T),
as summarised in ``shared/reference/myelination.md`` section 1: "onset" is when the earliest
normal infants show the change, "completion" when all do. A typical infant crosses at the
midpoint of that range, which is what a region's timing is set to; the spread between infants
comes from each infant's own maturation rate (see ``cohort.py``).

Regions are placed in MNI152 space by coordinates (the ICBM 2009a template nilearn bundles
carries no labels): boxes for the compact tracts and a depth / antero-posterior rule for the
lobar white matter, so that the gradients of the table (caudal to rostral, posterior to
anterior, central to peripheral) come out of the geometry.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Milestone:
    """Visible-change ages of one region, in months after term.

    Attributes:
        name: the region as the table names it.
        t1_range: (onset, completion) of T1 hyperintensity.
        t2_range: (onset, completion) of T2 hypointensity.
        box: ((x0, x1), (y0, y1), (z0, z1)) in MNI mm, mirrored in x; None for the lobar
            regions placed by the depth rule.
    """

    name: str
    t1_range: tuple[float, float]
    t2_range: tuple[float, float]
    box: tuple[tuple[float, float], tuple[float, float], tuple[float, float]] | None = None

    @property
    def t1_mid(self) -> float:
        return 0.5 * (self.t1_range[0] + self.t1_range[1])

    @property
    def t2_mid(self) -> float:
        return 0.5 * (self.t2_range[0] + self.t2_range[1])


# "Present at term" is written as (-2, 0): every term infant shows it already.
COMPACT_TRACTS: tuple[Milestone, ...] = (
    Milestone("dorsal brainstem and corticospinal tract", (-2, 0), (-2, 0), ((0, 14), (-42, -14), (-60, -8))),
    Milestone("middle cerebellar peduncle", (-2, 0), (0, 2), ((8, 28), (-52, -28), (-44, -22))),
    Milestone("cerebellar white matter", (0, 4), (3, 5), ((0, 40), (-85, -45), (-60, -22))),
    Milestone("posterior limb of internal capsule, posterior part", (-2, 0), (0, 2), ((16, 30), (-26, -14), (-6, 16))),
    Milestone("posterior limb of internal capsule, anterior part", (0, 2), (4, 7), ((14, 26), (-14, -4), (-6, 16))),
    Milestone("anterior limb of internal capsule", (2, 3), (7, 11), ((10, 22), (-4, 18), (-6, 18))),
    Milestone("splenium of corpus callosum", (3, 4), (4, 6), ((0, 18), (-46, -30), (0, 24))),
    Milestone("genu of corpus callosum", (4, 6), (5, 8), ((0, 18), (16, 36), (-8, 22))),
    # Pre- and postcentral gyri from the paracentral lobule (medial) to the lateral convexity.
    Milestone("perirolandic subcortical white matter", (-1, 1), (0, 4), ((2, 50), (-34, -14), (44, 78))),
    # The corticospinal tract on its way from the internal capsule to the perirolandic cortex
    # through the corona radiata: "present at term" with the rest of the tract.
    Milestone("corticospinal tract in the corona radiata", (-2, 0), (0, 3), ((16, 30), (-32, -14), (16, 44))),
)

# Lobar white matter: placed by the antero-posterior position and the depth below the cortex.
CENTRAL_OCCIPITAL = Milestone("central occipital white matter", (3, 5), (9, 14))
PERIPHERAL_OCCIPITAL = Milestone("peripheral occipital white matter", (4, 7), (11, 15))
CENTRAL_FRONTAL = Milestone("central frontal white matter", (3, 6), (11, 16))
PERIPHERAL_FRONTAL = Milestone("peripheral frontal white matter", (7, 11), (14, 18))
CENTRUM_SEMIOVALE = Milestone("centrum semiovale", (2, 6), (7, 11))
# Terminal zones stay T2-bright until 20-40 months (Parazzini, AJNR 2002).
TERMINAL_ZONE = Milestone("peritrigonal terminal zone", (4, 7), (20, 40), ((22, 36), (-48, -28), (2, 26)))

# Depth below the brain's outer surface (mm, adult MNI scale): white matter shallower than
# PERIPHERAL_DEPTH_MM is subcortical ("peripheral"), deeper than CENTRAL_DEPTH_MM is central, with
# a smooth ramp between. In the template, white matter lies 10-38 mm deep (10th-90th centile,
# median 21 mm).
PERIPHERAL_DEPTH_MM = 12.0
CENTRAL_DEPTH_MM = 24.0
# The antero-posterior ramp from occipital (y <= Y_OCCIPITAL) to frontal (y >= Y_FRONTAL).
Y_OCCIPITAL = -60.0
Y_FRONTAL = 10.0
# Above this z the deep white matter is the centrum semiovale.
Z_CENTRUM = 22.0
