"""The digits job (src/cvxattn/digits.py): its tokens, and the table protocol on them."""

import numpy as np
import pytest

import cvxattn as ca
from cvxattn import digits, table
from cvxattn.digits import DigitsConfig


# ------------------------------------------------------------------ tokenization
def test_patch_tokens_is_exact_on_a_hand_made_image():
    # distinct values, and a non-square image (4 × 6, a 2 × 3 grid): a transposed axis fails
    image = np.arange(24).reshape(4, 6)
    X = digits.patch_tokens(image[None], patch=2)
    assert X.shape == (1, 6, 4)
    expected = np.array([[0, 1, 6, 7], [2, 3, 8, 9], [4, 5, 10, 11],
                         [12, 13, 18, 19], [14, 15, 20, 21], [16, 17, 22, 23]])
    np.testing.assert_array_equal(X[0], expected)
    # the defining formula X[r·(W/p) + q, a·p + b] = image[r·p + a, q·p + b], entry by entry
    for r in range(2):
        for q in range(3):
            for a in range(2):
                for b in range(2):
                    assert X[0, r * 3 + q, a * 2 + b] == image[r * 2 + a, q * 2 + b]


def test_patch_tokens_rejects_a_patch_that_does_not_tile():
    with pytest.raises(ValueError, match="patch: expected a positive integer dividing"):
        digits.patch_tokens(np.zeros((2, 8, 6)), patch=4)
    with pytest.raises(ValueError, match=r"images: expected shape \(n, H, W\)"):
        digits.patch_tokens(np.zeros((8, 8)), patch=2)


def test_digits_tokens_are_the_scaled_2x2_patches_of_load_digits():
    from sklearn.datasets import load_digits

    X, y = digits.load_digits_tokens()
    images = load_digits().images
    assert X.shape == (1797, 16, 4) and X.dtype == np.float64 and y.shape == (1797,)
    assert X.min() == 0.0 and X.max() == 1.0
    i = 5  # token t = r·4 + q is the patch at rows 2r, 2r+1 and columns 2q, 2q+1
    for r in range(4):
        for q in range(4):
            patch = images[i, 2 * r:2 * r + 2, 2 * q:2 * q + 2].reshape(-1) / 16
            np.testing.assert_array_equal(X[i, 4 * r + q], patch)


# ------------------------------------------------------------------------- split
def test_split_is_seeded_stratified_and_disjoint():
    _, y = digits.load_digits_tokens()
    train, test = digits.split_digits(y, seed=0)
    again = digits.split_digits(y, seed=0)
    other = digits.split_digits(y, seed=1)
    np.testing.assert_array_equal(train, again[0])
    np.testing.assert_array_equal(test, again[1])
    assert not np.array_equal(test, other[1])
    assert len(test) == 450 and len(train) == 1347
    assert np.intersect1d(train, test).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([train, test])), np.arange(1797))
    # stratified: every class near 25 % in the test part
    share = np.bincount(y[test], minlength=10) / np.bincount(y, minlength=10)
    assert np.all(np.abs(share - 0.25) < 0.01)


def test_subsets_are_stratified_nested_and_inside_their_split():
    _, y = digits.load_digits_tokens()
    train, test = digits.split_digits(y, seed=3)
    small_train, small_test = digits.split_digits(y, seed=3, n_train=120, n_test=60)
    big_train, _ = digits.split_digits(y, seed=3, n_train=240)
    assert len(small_train) == 120 and len(small_test) == 60
    assert np.isin(small_train, train).all() and np.isin(small_test, test).all()
    assert np.isin(small_train, big_train).all()
    np.testing.assert_array_equal(np.bincount(y[small_train], minlength=10), 12)
    np.testing.assert_array_equal(np.bincount(y[small_test], minlength=10), 6)


def test_split_rejects_a_subset_larger_than_its_split():
    _, y = digits.load_digits_tokens()
    with pytest.raises(ValueError, match="n_train: expected at most 1347"):
        digits.split_digits(y, n_train=1348)


# ------------------------------------------------------------------------ config
@pytest.mark.parametrize("kwargs, message", [
    ({"beta": (-1.0,)}, "beta: expected distinct finite numbers > 0"),
    ({"beta": (1e-3, 1e-3)}, "beta: expected distinct finite numbers > 0"),
    ({"heads": ("mlp", "transformer")}, "heads: expected distinct names"),
    ({"activations": ("relu",)}, "activations: expected distinct names"),
    ({"n_gates": {"mlp": 0}}, "n_gates: expected HEAD=M"),
    ({"n_gates": {"vit": 3}}, "n_gates: expected HEAD=M"),
    ({"bfno_groups": 3}, "bfno_groups: expected B dividing d = 4 and c = 10"),
    ({"n_train": 9}, "n_train: expected an integer ≥ 10"),
    ({"n_test": 0}, "n_test: expected a positive integer"),
    ({"tol": 0.0}, r"tol: expected a number in \(0, 1\)"),
    ({"test_size": 1.0}, r"test_size: expected a fraction in \(0, 1\)"),
    ({"max_iter": 0}, "max_iter: expected a positive integer"),
    ({"seed": -1}, "seed: expected an integer ≥ 0"),
    ({"seeds": 0}, "seeds: expected a positive integer"),
])
def test_config_rejects_bad_values_naming_the_field(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DigitsConfig(**kwargs)


def test_config_normalizes_and_merges_gates():
    config = DigitsConfig(heads=["mixer"], beta=0.01, n_gates={"attention": 3})
    assert config.heads == ("mixer",) and config.beta == (0.01,)
    assert config.n_gates == {**ca.heads.DEFAULT_GATES, "attention": 3}  # the heads' own
    assert "probe-full" not in config.baselines and config.bfno_groups == 2
    with pytest.raises(ValueError, match="baselines: expected names from"):
        DigitsConfig(baselines=("probe-full",))


# -------------------------------------------------------------------- experiment
def test_the_digits_are_a_data_source_of_the_table_protocol():
    """The digits' rows are the table protocol's (cvxattn.table) on the digits' tokens,
    standardized with the training statistics, with its validation split."""
    config = DigitsConfig(heads=("mlp", "fno"), activations=("linear",),
                          beta=(1e-2, 1e-3), n_train=100, n_test=40,
                          baselines=("logistic-tokens",), out="unused")
    data = digits.prepare(config)
    train, test = digits.digits_tokens(config)
    expected = table.prepare(config, train, test)
    np.testing.assert_array_equal(data.X_train, expected.X_train)
    np.testing.assert_array_equal(data.fit_mask, expected.fit_mask)
    np.testing.assert_allclose(data.X_train.reshape(-1, 4).mean(0), 0, atol=1e-5)
    assert data.fit_mask.sum() == 80 and len(np.unique(data.y_train[~data.fit_mask])) == 10
    rows = list(table.iter_rows(config, data))
    assert [r["head"] for r in rows] == ["mlp", "fno", "logistic (tokens)"]
    for row in rows[:2]:
        assert row["beta"] in [b for b, *_ in row["path"]]
        assert 0.0 <= row["val_acc"] <= 1.0 and row["select_seconds"] > 0
        assert row["status"] == "optimal" and row["gap"] <= config.tol


def test_a_digits_row_matches_a_direct_solve():
    config = DigitsConfig(heads=("attention",), activations=("gated",), n_train=60,
                          n_test=30, n_gates={"attention": 2}, beta=(1e-3,), tol=1e-6,
                          baselines=("none",), out="unused")
    data = digits.prepare(config)
    row = next(table.iter_rows(config, data))
    head = ca.heads.SelfAttention(activation="gated", n_gates=2, seed=0)
    solution = ca.solve(ca.Problem(head, data.X_train, data.y_train, beta=1e-3), tol=1e-6)
    assert row["objective"] == pytest.approx(solution.objective, rel=1e-6)
    assert row["gap"] <= 1e-6 and row["gates"] == 2 and row["heads"] == solution.n_heads
    acc = float((solution.predict(data.X_test).numpy() == data.y_test).mean())
    assert row["test_acc"] == acc


def test_a_fit_that_stops_early_reports_its_status_and_gap_without_warning():
    config = DigitsConfig(heads=("mlp",), activations=("gated",), n_train=60, n_test=30,
                          max_iter=3, beta=(1e-3,), baselines=("none",), out="unused")
    row = next(table.iter_rows(config, digits.prepare(config)))  # warnings are errors here
    assert row["status"] != "optimal" and row["gap"] > config.tol
    assert row["notes"] and "tol" in row["notes"][0]
