"""The synthetic cohort against the real infant templates (issue: checks against reality)."""

import pytest

from kerasmyelin.validation.compare import TOLERANCE, Comparison, compare_with_templates
from tests.conftest import TEMPLATES, require_shared

MONTHS = (0, 6, 9, 12, 24)


def _table(fn):
    return {(c, k, m): fn(c, k, m) for c in ("T1w", "T2w") for k in "abcde" for m in MONTHS}


def _t1_up_t2_down(c, k, m):
    return 0.9 + 0.02 * m if c == "T1w" else 1.1 - 0.02 * m


@pytest.mark.parametrize("synthetic,expected", [
    (_t1_up_t2_down, 0),
    # isointense synthetic values never disagree in sign
    (lambda c, k, m: 1.0 + (0.001 * m if c == "T1w" else -0.0001 * m), 0),
    # T1w white matter brighter at birth where the template has it clearly darker: sign, at d and e only
    (lambda c, k, m: 1.2 + 0.02 * m if c == "T1w" else 1.1 - 0.02 * m, 2),
    # everything upside down: every sign beyond tolerance and every trend
    (lambda c, k, m: 2 - _t1_up_t2_down(c, k, m), None),
])
def test_agreement_rule(synthetic, expected):
    result = Comparison(_table(_t1_up_t2_down), _table(synthetic), MONTHS)
    problems = result.disagreements()
    if expected is None:
        assert sum("changes by" in p for p in problems) == 8  # 2 contrasts x levels b-e
    else:
        assert len(problems) == expected, problems


@pytest.fixture(scope="module")
def comparison():
    return compare_with_templates(require_shared(TEMPLATES))


def test_synthetic_follows_template_sign_and_trend(comparison):
    assert comparison.disagreements() == []


def test_the_known_facts_hold_on_both_sides(comparison):
    for table in (comparison.template, comparison.synthetic):
        for level in ("d", "e"):
            assert table[("T1w", level, 24)] > table[("T1w", level, 0)] + TOLERANCE
            assert table[("T2w", level, 24)] < table[("T2w", level, 0)] - TOLERANCE
            assert table[("T2w", level, 24)] < 1 - TOLERANCE


@pytest.mark.slow
def test_research_protocol_follows_the_templates_with_their_t1_contrast():
    research = compare_with_templates(require_shared(TEMPLATES), protocol="research3d")
    assert research.disagreements() == []
    for month in (6, 9, 12, 24):  # level d, where the instrument is reliable
        assert abs(research.synthetic[("T1w", "d", month)] - research.template[("T1w", "d", month)]) < 0.2  # clinical: 0.35-0.62
