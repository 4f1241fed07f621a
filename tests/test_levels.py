import pytest

from kerasmyelin.levels import INPUT_NAMES, LEVEL_KEYS, LEVELS, input_name


def test_ten_unique_input_names_in_paper_order():
    assert len(INPUT_NAMES) == 10 and len(set(INPUT_NAMES)) == 10
    assert INPUT_NAMES[:5] == ("t1w_a", "t1w_b", "t1w_c", "t1w_d", "t1w_e")
    assert INPUT_NAMES[5:] == ("t2w_a", "t2w_b", "t2w_c", "t2w_d", "t2w_e")


def test_levels_run_caudal_to_rostral():
    z = [lv.mni_landmark[2] for lv in LEVELS]
    assert z == sorted(z) and LEVEL_KEYS == ("a", "b", "c", "d", "e")


@pytest.mark.parametrize("contrast,level", [("T3w", "a"), ("T1w", "f"), ("t1w", "a")])
def test_input_name_rejects_unknown(contrast, level):
    with pytest.raises(ValueError):
        input_name(contrast, level)
