"""The scikit-learn-style private classifiers, and feature encoding by declared bounds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.datasets import load_breast_cancer

from veil.errors import InvalidInputError
from veil.train import DPLogisticRegression, DPMLPClassifier, FeatureEncoder, build_model


@pytest.fixture
def cancer():
    data = load_breast_cancer()
    # Declared bounds: 0 to 1.5x the published maximum of each measurement (domain knowledge
    # stands in here; the test does not read them from the training rows).
    bounds = [(0.0, 1.5 * float(m)) for m in data.data.max(axis=0)]
    names = [str(n) for n in data.target_names]
    y = np.array([names[t] for t in data.target])
    return data.data, y, bounds, names


@pytest.mark.slow
@pytest.mark.parametrize("cls", [DPLogisticRegression, DPMLPClassifier])
def test_fit_predict_and_probabilities(cls, cancer):
    x, y, bounds, names = cancer
    clf = cls(
        epsilon=4.0,
        delta=1e-4,
        feature_bounds=bounds,
        classes=names,
        epochs=20,
        batch_size=64,
        learning_rate=1.0,
    )
    clf.fit(x, y)
    proba = clf.predict_proba(x)
    assert proba.shape == (len(x), 2)
    assert np.allclose(proba.sum(axis=1), 1.0)
    assert set(clf.predict(x)) <= set(names)
    assert clf.score(x, y) > 0.8  # majority class: 0.63
    assert clf.privacy_["epsilon"] <= 4.0
    assert clf.privacy_["epsilon_rdp"] >= clf.privacy_["epsilon"]
    assert clf.get_params()["epsilon"] == 4.0


def test_the_baseline_is_not_private(cancer):
    x, y, bounds, names = cancer
    clf = DPLogisticRegression(
        private=False, feature_bounds=bounds, classes=names, epochs=5, batch_size=64
    )
    assert clf.fit(x, y).privacy_ is None


def test_bounds_and_classes_must_be_declared(cancer):
    x, y, bounds, names = cancer
    with pytest.raises(InvalidInputError, match="never reads them"):
        DPLogisticRegression(classes=names).fit(x, y)
    with pytest.raises(InvalidInputError, match="reveal rare labels"):
        DPLogisticRegression(feature_bounds=bounds).fit(x, y)
    with pytest.raises(InvalidInputError, match="30 \\(lo, hi\\) pairs"):
        DPLogisticRegression(feature_bounds=bounds[:3], classes=names).fit(x, y)
    with pytest.raises(InvalidInputError, match="finite lo < hi"):
        DPLogisticRegression(feature_bounds=(1.0, 0.0), classes=names).fit(x, y)


def test_bad_rows_are_refused(cancer):
    x, y, bounds, names = cancer
    clf = DPLogisticRegression(feature_bounds=bounds, classes=names)
    nan_x = x.copy()
    nan_x[4, 2] = np.nan
    with pytest.raises(InvalidInputError, match="NaN"):
        clf.fit(nan_x, y)
    odd_y = y.copy()
    odd_y[0] = "unknown"
    with pytest.raises(InvalidInputError, match="1 labels outside") as info:
        clf.fit(x, odd_y)
    assert "unknown" not in str(info.value)  # the count, never the values


def test_features_are_clamped_and_scaled_by_the_declared_bounds():
    clf = DPLogisticRegression(feature_bounds=[(0, 10), (-1, 1)], classes=[0, 1])
    clf.bounds_ = [(0.0, 10.0), (-1.0, 1.0)]
    scaled = clf._scale([[5, 0], [20, -3], [0, 1]])
    assert scaled.tolist() == [[0.0, 0.0], [1.0, -1.0], [-1.0, 1.0]]


def test_encoder_uses_declared_categories_and_bounds_only():
    encoder = FeatureEncoder({"age": (20.0, 80.0)}, {"sex": ("F", "M")}, ("age", "sex"))
    frame = pd.DataFrame({"age": [20, 50, 200, None], "sex": ["M", "F", "X", None]})
    encoded = encoder.encode(frame)
    assert encoder.width == 3
    assert encoder.feature_names() == ["age", "sex=F", "sex=M"]
    assert encoded.tolist() == [[-1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
    assert FeatureEncoder.from_dict(encoder.to_dict()) == encoder
    with pytest.raises(InvalidInputError, match="no sex"):
        encoder.encode(frame[["age"]])


def test_model_zoo_shapes():
    for spec, shape in [
        ({"kind": "logreg", "input_shape": [7], "n_classes": 3}, (4, 7)),
        (
            {"kind": "mlp", "input_shape": [1, 28, 28], "n_classes": 10, "hidden": [32]},
            (4, 1, 28, 28),
        ),
        ({"kind": "cnn", "input_shape": [1, 28, 28], "n_classes": 10}, (4, 1, 28, 28)),
        ({"kind": "scatternet", "input_shape": [1, 28, 28], "n_classes": 10}, (4, 1, 28, 28)),
    ]:
        assert build_model(spec)(torch.zeros(shape)).shape == (4, spec["n_classes"])
    with pytest.raises(InvalidInputError, match="28x28"):
        build_model({"kind": "cnn", "input_shape": [5], "n_classes": 2})
    with pytest.raises(InvalidInputError, match="logreg"):
        build_model({"kind": "forest", "input_shape": [5], "n_classes": 2})


@pytest.mark.slow
def test_scatternet_front_end_is_fixed_and_per_example():
    from veil.train._models import fixed_features

    model = build_model({"kind": "scatternet", "input_shape": [1, 28, 28], "n_classes": 10})
    assert [n for n, _ in model.named_parameters()] == ["head.1.weight", "head.1.bias"]
    x = torch.rand(6, 1, 28, 28) * 2 - 1
    trainable, features = fixed_features(model, x)
    assert trainable is model.head and features.shape == (6, 81, 7, 7)
    # Per example: an example's features do not depend on the rest of the batch.
    assert torch.allclose(model.features.transform(x[:1]), features[:1], atol=1e-5)
    assert torch.allclose(trainable(features), model(x), atol=1e-5)
    rebuilt = build_model({"kind": "scatternet", "input_shape": [1, 28, 28], "n_classes": 10})
    rebuilt.load_state_dict(model.state_dict())
    assert torch.allclose(rebuilt(x), model(x), atol=1e-6)
    with pytest.raises(InvalidInputError, match="divisible by 4"):
        build_model({"kind": "scatternet", "input_shape": [1, 30, 30], "n_classes": 2})
