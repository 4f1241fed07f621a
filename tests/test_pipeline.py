import numpy as np
import pytest

pytest.importorskip("tensorflow")

from kerasmyelin.data.cache import TenSliceSet  # noqa: E402
from kerasmyelin.data.pipeline import make_dataset, steps_per_epoch  # noqa: E402
from kerasmyelin.levels import INPUT_NAMES  # noqa: E402


def _data(n=7, size=16):
    rng = np.random.default_rng(0)
    images = {name: rng.random((n, size, size), dtype=np.float32) for name in INPUT_NAMES}
    return TenSliceSet(images, np.array([f"sub-{i}" for i in range(n)]), np.arange(n, dtype=np.float32), {})


def test_evaluation_dataset_is_the_cache_unchanged_in_order():
    data = _data()
    batches = list(make_dataset(data, [4, 1, 6], batch_size=2, training=False))
    assert len(batches) == steps_per_epoch(3, 2) == 2
    x, y = batches[0]
    assert set(x) == set(INPUT_NAMES) and x["t1w_a"].shape == (2, 16, 16, 1)
    np.testing.assert_array_equal(y.numpy().ravel(), [4, 1])
    np.testing.assert_array_equal(x["t2w_c"].numpy()[1, ..., 0], data.images["t2w_c"][1])


def test_training_dataset_repeats_shuffles_with_seed_and_covers_everyone():
    data = _data()
    ds = make_dataset(data, range(7), batch_size=7, training=True, seed=3)
    first, second = [y.numpy().ravel() for _, y in ds.take(2)]
    assert sorted(first) == list(range(7)) and sorted(second) == list(range(7))
    again = next(iter(make_dataset(data, range(7), batch_size=7, training=True, seed=3)))[1].numpy().ravel()
    np.testing.assert_array_equal(first, again)


def test_augmentation_flips_all_ten_together_and_keeps_the_label():
    data = _data(n=1)
    ds = make_dataset(data, [0], batch_size=1, training=True, seed=0, augment=True)
    seen = set()
    for x, y in ds.take(12):
        assert y.numpy().item() == 0
        ratios = []
        for name in INPUT_NAMES:
            got = x[name].numpy()[0, ..., 0]
            orig = data.images[name][0]
            flipped = np.allclose(got / got.mean(), orig[:, ::-1] / orig[:, ::-1].mean(), atol=1e-5)
            same = np.allclose(got / got.mean(), orig / orig.mean(), atol=1e-5)
            assert flipped or same
            ratios.append(flipped)
            assert 0.89 < got.mean() / orig.mean() < 1.11
        assert len(set(ratios)) == 1  # one flip decision per infant
        seen.add(ratios[0])
    assert seen == {True, False}  # both happen over a dozen draws (seeded)


def test_intensity_curves_keep_tissue_order_and_share_a_curve_per_contrast():
    data = _data(n=1)
    # The same value in every image, so one output per contrast means one curve per contrast.
    values = np.linspace(0.0, 1.2, 16 * 16, dtype=np.float32).reshape(16, 16)
    for name in INPUT_NAMES:
        data.images[name][0] = values
    ds = make_dataset(data, [0], batch_size=1, training=True, seed=5, intensity_curves=True)
    curves = []
    for x, y in ds.take(6):
        assert y.numpy().item() == 0
        out = {name: x[name].numpy()[0, ..., 0] for name in INPUT_NAMES}
        for contrast in ("t1w", "t2w"):
            levels = [out[f"{contrast}_{k}"] for k in "abcde"]
            for other in levels[1:]:
                np.testing.assert_allclose(other, levels[0], rtol=1e-6, atol=1e-7)
            flat = levels[0].ravel()
            assert np.all(np.diff(flat) > 0)  # strictly increasing: the order of intensities is kept
            assert flat[0] == 0.0 and abs(np.interp(1.0, values.ravel(), flat) - 1.0) < 1e-3
            curves.append(flat)
    # The curves differ between contrasts and draws (and are not the identity).
    assert min(np.abs(a - b).max() for i, a in enumerate(curves) for b in curves[i + 1:]) > 1e-3
    assert max(np.abs(c - values.ravel()).max() for c in curves) > 0.05


def test_intensity_curves_do_not_change_the_flips_and_gains_of_a_seed():
    data = _data(n=3)
    plain = [x["t1w_c"].numpy() for x, _ in make_dataset(data, range(3), 1, training=True, seed=2,
                                                          augment=True).take(4)]
    both = [x["t1w_c"].numpy() for x, _ in make_dataset(data, range(3), 1, training=True, seed=2, augment=True,
                                                         intensity_curves=True).take(4)]
    for a, b in zip(plain, both):
        # Same flip and gain, then a monotone curve: the pixel ranking is that of the plain draw.
        np.testing.assert_array_equal(np.argsort(a.ravel(), kind="stable"), np.argsort(b.ravel(), kind="stable"))


def test_empty_selection_is_refused():
    with pytest.raises(ValueError, match="no infants"):
        make_dataset(_data(), [], 2, training=False)
