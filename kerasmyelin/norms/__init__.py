"""One infant's estimate set against typical infants: interval, brain-age gap, delay grade, chart.

Everything here is fitted on a run's cross-validated (out-of-fold) estimates of typical infants:
each infant's estimate comes from a network that never saw that infant, so its error is the
error a new infant gets. Ages are corrected ages in months (-1.7 to 24 in the paper's cohort).

**Interval (corrected age unknown).** Split-conformal and locally adaptive. With the residual
r = estimate - true age, errors grow with age (on the 100-epoch example runs, 119 infants:
Spearman rho(|r|, estimate) = 0.26 for the simple model and 0.29 for the ensemble, p < 0.005),
so |r| is divided by a scale s(estimate) and the conformal quantile q is taken of |r| / s at
the finite-sample level ceil((n + 1)(1 - alpha)) / n. The interval is
estimate +/- q * s(estimate) and holds the true age of 90 % (default) of typical infants.

The scale is a straight line fitted by least squares to |r| against the estimate, held constant
outside the estimates it was fitted on and never below a floor (a quarter of the mean |r|). Why
a line and not binned medians: with ~119 infants a bin holds 10-30 of them and the binned
medians jump about (0.5, 0.7, 1.2, 0.8, 2.0, 1.8, 0.7 months across the ensemble's bins), so an
interpolated curve would follow noise; two parameters capture the trend, and the conformal step
calibrates the overall width whatever the shape, so a shape that fits imperfectly costs only
width and coverage at particular ages, never the overall 90 %. ``cross_validate_normative``
measures both, by age band. The interval is centred on the estimate, so where estimates are
biased it covers less than the nominal level: on the example runs the 20-24-month band (16
infants, under-estimated by ~2 months as the estimates flatten near 24) is covered at 0.75
(simple) and 0.81 (ensemble). Centring on a fitted line of the residual against the estimate
did not change that (the bias is a ceiling, not linear) and was left out. When the folds are
given, each infant's conformal score uses a scale fitted without its fold, as a new infant's
would be. The deployed network ("full", trained on every infant) is likely a little better than
the fold networks, so the intervals err wide.

**Brain-age gap (corrected age known).** gap = estimate - corrected age; negative means less
myelinated than the calendar says. Estimates regress to the cohort's mean (young infants are
over-estimated, old ones under-estimated), so the raw gap falls with age and a typical
20-month-old would look delayed. As Smith et al. (NeuroImage 2019;200:528-39) and Cole et al.
do, gap = a + b * age is fitted on the typical infants and the corrected gap is
gap - (a + b * age): the gap relative to what typical infants of that corrected age get.
The line is fitted with Theil-Sen (median of pairwise slopes), not least squares: the gaps are
skewed (a few young infants over-estimated by several months, the oldest under-estimated as
the estimates flatten near 24 months), the least-squares line follows those few, and the
typical infant's corrected gap then still rises with age (held-out Spearman r = +0.13 on the
simple example run, +0.07 on the ensemble; Theil-Sen: +0.01 on both). The median-based line
describes the typical infant, which is what the grade compares with.
This *age-level* correction is used rather than the *prediction-level* one (refit
estimate = a' + b' * age and report (estimate - a') / b' - age): de Lange & Cole
(NeuroImage: Clinical 2020;26:102229) show the two remove the age dependence equally but the
prediction-level gap is the age-level gap divided by b', which inflates it (and its noise) by
1 / b' with a slope estimated from ~119 infants; the age-level gap stays in months of the
estimate, which is what the grade below compares, and the estimate itself is left unchanged
for the interval. Both corrections remove the correlation with age on the data they are fitted
on by construction, so it is checked only cross-fitted (fit on the other folds, apply to the
held-out fold).

**Grade (corrected age known).** The corrected gap is compared with the spread of the
corrected gaps of typical infants at that age: z = corrected gap / sd(age), with sd(age) a
straight-line scale of |corrected gap| against age (as above) rescaled so that the typical
infants' z have a root-mean-square of 1. In words, for a neuroradiologist:

- **not graded: check the input** (``NOT_GRADED``), whatever z says, when the infant's
  corrected age or the estimate lies outside the ages the run was trained on (its typical
  infants' corrected ages, ``age_min`` to ``age_max``), or when |z| > ``GRADE_BOUND_Z`` = 4.
  Such a result says the scan is unlike the training infants (another contrast, a wrong
  corrected age, a failed skull-strip), not where this infant stands among them: grading it
  "within norms" beside a warning is what issue 19 found (a 1-month-old estimated at 30.0
  months, 16.4 SD from typical infants, was "within norms"). Why 4: Gaussian gaps put 0.006 %
  of typical infants beyond it (1 in 16,000). The gaps are right-skewed, so the share was
  measured: cross-fitted (4 folds) on 60 simulated cohorts of 119 typical infants, 0.03 % of
  held-out infants exceeded it with Gaussian gaps, and 0.4 % and 0.8 % with log-normal gaps of
  skewness 0.9 and 1.7 (the main job's runs: 1.6-1.9), all of them ahead of the norms; none fell
  below -4. The inputs it is for sat at 9-16 SD (ten real infants, issue 19). The age rule costs
  more in the same simulations: ~3 % of held-out typical infants got estimates above the oldest
  trained age (noise sd 2.9 months at 24 months there; the real runs' estimates flatten below
  24, so fewer), and ~2 % were older or younger than every infant of the other folds, a
  cross-fitting artefact that a model fitted on all of them does not meet.
  ``cross_validate_normative`` measures both on a run ("not_graded_*"). The whole-brain
  pipeline also withholds it, with or without a corrected age, for a brain far outside the
  sizes of infants 0-24 months (``BRAIN_SIZE``; ``wholebrain.plausibility``).
- **marked delay**: the estimated myelination age is lower, for this corrected age, than
  all but 1 % of the typical infants' (z at or below their empirical 1st percentile);
- **possible delay**: lower than all but 5 % (z at or below their empirical 5th percentile);
- **ahead of norms**: higher than all but 5 % (z at or above their empirical 95th percentile,
  the mirror of possible delay, and so computed the same way);
- **within norms**: otherwise.

``NormativeModel.grade_rule()`` gives the months at 0, 12 and 24 months for a fitted run. The
thresholds are the typical infants' own z quantiles, not Gaussian ones: their corrected gaps
are right-skewed (a few young infants over-estimated by months), and the Gaussian -1.645 /
-2.326 flagged only 1-3 % of them. With ~119 typical infants the 1st percentile rests on one or
two infants, so the marked-delay cut-off is approximate. Where a quantile is unusable (not on
its side of zero, not ordered, or beyond the bound) the Gaussian value is used (-1.645, -2.326,
+1.645), and so is +1.645 for ``ahead_z`` in models saved before it existed (format version
1). How often held-out typical infants get each grade is reported by
``cross_validate_normative`` (ideally 5 % delay, 1 % marked, 5 % ahead, and few not graded: see above). The
thresholds can be set by hand (``possible_z``, ``marked_z``, ``ahead_z``). ``gap()``'s
"percentile" is the Gaussian 100 * Phi(z), a rough guide only.

**Chart.** For corrected ages -2 to 25 months in 0.25-month steps: the expected estimate
(age + a + b * age), the band of typical infants, which is the within-norms region
(expected + possible_z sd(age) to expected + ahead_z sd(age)), and the marked-delay line
(expected + marked_z sd(age)).

Modules: ``norms.model`` (the fitted model: interval, gap, grade, chart; its file format),
``norms.fit`` (fitting and cross-validating it on out-of-fold estimates), ``norms.store`` (a
run's norms: fitted once by ``kerasmyelin evaluate`` into ``normative.json``, read at load).
"""
