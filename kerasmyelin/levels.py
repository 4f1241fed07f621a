"""The five axial levels and two contrasts of Wada et al. 2019, defined once.

Every part of the project (synthesis, the ten-slice cache, the model's inputs, the export
signature and the command line) takes its names from here.
"""

from __future__ import annotations

from dataclasses import dataclass

CONTRASTS: tuple[str, ...] = ("T1w", "T2w")


@dataclass(frozen=True)
class Level:
    """One of the paper's five axial levels.

    Attributes:
        key: one letter, "a" to "e", as in the paper.
        name: what a neuroradiologist sees at that level.
        mni_landmark: a point (x, y, z) in MNI152 mm that the level's slice passes through.
            The z values were read off the ICBM 2009a template bundled with nilearn: the pons
            with the middle cerebellar peduncles at z=-30, the midbrain at -10, the internal
            capsule with the splenium at +10, the centrum semiovale at +35 and the high
            convexity subcortical white matter at +52.
    """

    key: str
    name: str
    mni_landmark: tuple[float, float, float]


LEVELS: tuple[Level, ...] = (
    Level("a", "middle cerebellar peduncle / pons", (0.0, -28.0, -30.0)),
    Level("b", "midbrain", (0.0, -22.0, -10.0)),
    Level("c", "internal capsule and splenium", (0.0, -12.0, 10.0)),
    Level("d", "centrum semiovale", (0.0, -12.0, 35.0)),
    Level("e", "subcortical white matter", (0.0, -12.0, 52.0)),
)

LEVEL_KEYS: tuple[str, ...] = tuple(level.key for level in LEVELS)


def input_name(contrast: str, level: str) -> str:
    """The input name for one slice, e.g. ``input_name("T1w", "a") == "t1w_a"``."""
    if contrast not in CONTRASTS:
        raise ValueError(f"unknown contrast {contrast!r}; expected one of {CONTRASTS}")
    if level not in LEVEL_KEYS:
        raise ValueError(f"unknown level {level!r}; expected one of {LEVEL_KEYS}")
    return f"{contrast.lower()}_{level}"


# T1w a-e first, then T2w a-e: the order of the paper's Figure 2.
INPUT_NAMES: tuple[str, ...] = tuple(input_name(c, lv) for c in CONTRASTS for lv in LEVEL_KEYS)


def check_contrasts(contrasts) -> tuple[str, ...]:
    """``contrasts`` as a tuple, checked: one or both of ``CONTRASTS``, each once, in that order.

    Raises:
        ValueError: empty, an unknown name, a name twice, or out of order.
    """
    given = tuple(contrasts)
    if not given:
        raise ValueError(f"contrasts must name at least one of {list(CONTRASTS)}")
    unknown = [c for c in given if c not in CONTRASTS]
    if unknown:
        raise ValueError(f"unknown contrast {unknown[0]!r}; expected one or more of {list(CONTRASTS)}")
    if len(set(given)) != len(given):
        raise ValueError(f"contrasts name {sorted({c for c in given if given.count(c) > 1})[0]!r} twice: {list(given)}")
    if given != tuple(c for c in CONTRASTS if c in given):
        raise ValueError(f"contrasts must be in the order {list(CONTRASTS)}, got {list(given)}")
    return given


def contrast_input_names(contrasts=CONTRASTS) -> tuple[str, ...]:
    """The input names of a network over ``contrasts``: their five levels each, in
    ``INPUT_NAMES`` order (all ten for T1w and T2w, ``t1w_a`` .. ``t1w_e`` for T1w alone)."""
    return tuple(input_name(c, lv) for c in check_contrasts(contrasts) for lv in LEVEL_KEYS)


def contrasts_of(names) -> tuple[str, ...]:
    """The contrasts whose inputs ``names`` are, in any order: the inverse of ``contrast_input_names``.

    Raises:
        ValueError: ``names`` are not all five levels of one or both contrasts.
    """
    names = set(names)
    contrasts = tuple(c for c in CONTRASTS if any(n == input_name(c, lv) for lv in LEVEL_KEYS for n in names))
    if not contrasts or names != set(contrast_input_names(contrasts)):
        raise ValueError(f"inputs {sorted(names)} are not the five levels of one contrast, nor of both "
                         f"(all ten: {list(INPUT_NAMES)})")
    return contrasts
