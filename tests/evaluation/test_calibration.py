"""Temperature scaling, calibration error, reliability bins and the risk-coverage curve."""

import numpy as np
import pytest

from genre_tf.evaluation.calibration import (
    calibrated,
    confidence_bins,
    expected_calibration_error,
    fit_temperature,
    risk_coverage,
    threshold_for_precision,
)


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.fixture(scope="module")
def overconfident():
    """5000 tracks of 10 genres whose labels follow softmax(z), reported as softmax(3 z): three times too sure."""
    rng = np.random.default_rng(0)
    z = rng.normal(0.0, 1.5, (5000, 10))
    truth = softmax(z)
    labels = np.array([rng.choice(10, p=p) for p in truth])
    return softmax(3.0 * z), labels, truth


def test_temperature_scaling_finds_how_overconfident_a_model_is(overconfident):
    probs, labels, truth = overconfident
    temperature = fit_temperature(probs, labels)
    assert temperature == pytest.approx(3.0, rel=0.1)
    fixed = calibrated(probs, temperature)
    assert (fixed.argmax(axis=1) == probs.argmax(axis=1)).all()  # accuracy cannot change
    np.testing.assert_allclose(fixed.sum(axis=1), 1.0, rtol=1e-9)
    np.testing.assert_allclose(fixed, truth, atol=0.05)


def test_calibration_error_falls_with_the_fitted_temperature(overconfident):
    probs, labels, truth = overconfident
    before, after = (
        expected_calibration_error(probs, labels),
        expected_calibration_error(calibrated(probs, fit_temperature(probs, labels)), labels),
    )
    assert before > 0.15 and after < 0.03 and expected_calibration_error(truth, labels) < 0.03
    bins = confidence_bins(probs, labels)
    assert bins.tracks.sum() == len(labels) and len(bins) == 15
    filled = bins[bins.tracks > 0]
    assert (filled.confidence > filled.accuracy).sum() >= len(filled) - 1  # overconfident in (nearly) every bin


def test_risk_coverage_keeps_the_most_confident_first_and_ties_together():
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.8, 0.2], [0.6, 0.4], [0.55, 0.45]])
    labels = np.array([0, 0, 1, 0, 1])
    curve = risk_coverage(probs, labels)
    assert curve.threshold.tolist() == [0.9, 0.8, 0.6, 0.55]
    assert curve.tracks.tolist() == [1, 3, 4, 5] and curve.coverage.tolist() == [0.2, 0.6, 0.8, 1.0]
    np.testing.assert_allclose(curve.accuracy, [1.0, 2 / 3, 3 / 4, 3 / 5])
    assert threshold_for_precision(probs, labels, 0.75) == 0.6  # the largest coverage at 75 % right
    assert threshold_for_precision(probs, labels, 1.0) == 0.9
    assert threshold_for_precision(np.array([[0.9, 0.1]]), np.array([1]), 0.5) is None


def test_a_temperature_of_one_or_too_few_tracks_changes_nothing():
    probs = np.array([[0.7, 0.3]])
    assert fit_temperature(probs, np.array([0])) == 1.0
    np.testing.assert_array_equal(calibrated(probs, 1.0), probs)
