"""scripts/forest.predict must equal scikit-learn's own forest prediction (its reference)."""
import numpy as np
import pytest


@pytest.mark.parametrize("n_outputs", [1, 3])
def test_forest_predict_equals_sklearn(pack, rng, n_outputs):
    from sklearn.ensemble import RandomForestRegressor

    from restorekit.scripts import forest

    X = rng.normal(size=(200, 5))
    Y = np.stack([np.sin(X[:, 0]) + X[:, k % 5] ** 2 for k in range(n_outputs)], axis=1)
    Y = Y[:, 0] if n_outputs == 1 else Y
    m = RandomForestRegressor(n_estimators=7, max_depth=6, random_state=0).fit(X, Y)
    Xt = rng.normal(size=(9, 5))
    ours = forest.predict(m, Xt)
    assert ours.shape == m.predict(Xt).shape
    np.testing.assert_allclose(ours, m.predict(Xt), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n_outputs", [1, 3])
def test_forest_spread_is_the_trees_mean_and_std(pack, rng, n_outputs):
    from sklearn.ensemble import RandomForestRegressor

    from restorekit.scripts import forest

    X = rng.normal(size=(200, 5))
    Y = np.stack([np.cos(X[:, 1]) + X[:, k % 5] for k in range(n_outputs)], axis=1)
    Y = Y[:, 0] if n_outputs == 1 else Y
    m = RandomForestRegressor(n_estimators=9, max_depth=5, random_state=1).fit(X, Y)
    Xt = rng.normal(size=(6, 5))
    mean, std = forest.predict_spread(m, Xt)
    per = np.stack([t.predict(Xt).reshape(6, n_outputs) for t in m.estimators_])  # sklearn's own trees
    np.testing.assert_allclose(mean, m.predict(Xt).reshape(6, n_outputs), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(std, per.std(0), rtol=1e-9, atol=1e-12)
    assert (std > 0).any()


@pytest.mark.parametrize("min_leaf", [1, 3])
def test_forest_predict_proba_equals_sklearn(pack, rng, min_leaf):
    from sklearn.ensemble import RandomForestClassifier

    from restorekit.scripts import forest

    X = rng.normal(size=(300, 4))
    y = np.array(["clean", "light", "moderate", "severe"])[np.digitize(X[:, 0] + 0.5 * X[:, 1], [-0.8, 0.0, 0.8])]
    m = RandomForestClassifier(n_estimators=11, max_depth=7, min_samples_leaf=min_leaf, random_state=2).fit(X, y)
    Xt = rng.normal(size=(13, 4))
    ours = forest.predict_proba(m, Xt)
    assert ours.shape == (13, 4)
    np.testing.assert_allclose(ours, m.predict_proba(Xt), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ours.sum(axis=1), 1.0, atol=1e-12)


def test_non_forest_goes_through_its_own_predict(pack, rng):
    from sklearn.linear_model import LinearRegression

    from restorekit.scripts import forest

    X = rng.normal(size=(30, 3))
    m = LinearRegression().fit(X, X @ np.array([1.0, -2.0, 0.5]))
    np.testing.assert_allclose(forest.predict(m, X[:4]), m.predict(X[:4]))


def test_shipped_lbclahe_predictor_unchanged(pack):
    """The shipped LB-CLAHE forest predicts exactly what scikit-learn predicts."""
    from restorekit.scripts import forest, lbclahe

    b = lbclahe.load_predictor()
    x = np.random.default_rng(3).uniform(0, 1, (4, len(b["feature_names"])))
    np.testing.assert_allclose(forest.predict(b["model"], x), b["model"].predict(x), atol=1e-12)
