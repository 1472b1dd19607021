"""Confidence that means what it says: temperature scaling fitted on the valid split, the expected calibration error,
a reliability diagram, and the risk-coverage curve (how right the tracks kept are, as a confidence threshold moves).

Temperature scaling (Guo et al. 2017) divides a model's log-probabilities by one number T fitted to minimise the
negative log-likelihood of the valid split's tracks: T > 1 softens an over-confident model, T < 1 sharpens an
under-confident one. The top genre never changes, so neither does accuracy; only how far the confidence can be
trusted does. A run stores T in calibration.json; predict, serve, the exported model and tag use it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.optimize import minimize_scalar

BINS = 15  # equal-width confidence bins of the expected calibration error and the reliability diagram
# A prior on log T worth this many valid tracks: on a small valid split that the model gets all right, the likelihood
# alone drives T towards 0 (certainty), which a test split then punishes; on hundreds of tracks it hardly counts.
PRIOR_TRACKS = 10.0
FLOOR = 1e-12  # log of a probability of 0


def calibrated(probs: np.ndarray, temperature: float) -> np.ndarray:
    """(n, classes) probabilities with their log-probabilities divided by `temperature` (a softmax of log p / T)."""
    probs = np.asarray(probs, dtype=np.float64)
    if temperature == 1.0 or probs.size == 0:
        return probs
    logits = np.log(np.clip(probs, FLOOR, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)


def negative_log_likelihood(probs: np.ndarray, labels: np.ndarray) -> float:
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(labels)), labels], FLOOR, 1.0))))


def fit_temperature(probs: np.ndarray, labels: np.ndarray) -> float:
    """The T in [0.25, 8] that minimises the negative log-likelihood of `labels` under calibrated(probs, T), with a
    Gaussian prior on log T centred on 1 (`PRIOR_TRACKS`); 1.0 for fewer than two tracks."""
    labels = np.asarray(labels, dtype=int)
    if len(labels) < 2:
        return 1.0
    weight = PRIOR_TRACKS / len(labels)
    result = minimize_scalar(
        lambda log_t: negative_log_likelihood(calibrated(probs, float(np.exp(log_t))), labels) + weight * log_t**2,
        bounds=(np.log(0.25), np.log(8.0)),
        method="bounded",
    )
    return round(float(np.exp(result.x)), 4)


def confidence_bins(probs: np.ndarray, labels: np.ndarray, bins: int = BINS) -> pd.DataFrame:
    """Per equal-width bin of top-probability: its tracks, their mean confidence and their accuracy."""
    confidence, correct = probs.max(axis=1), probs.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    rows = []
    for b in range(bins):
        inside = which == b
        rows.append(
            {
                "low": edges[b],
                "high": edges[b + 1],
                "tracks": int(inside.sum()),
                "confidence": float(confidence[inside].mean()) if inside.any() else np.nan,
                "accuracy": float(correct[inside].mean()) if inside.any() else np.nan,
            }
        )
    return pd.DataFrame(rows)


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = BINS) -> float | None:
    """The tracks' share-weighted mean gap between confidence and accuracy over the bins (Naeini et al. 2015)."""
    if len(labels) == 0:
        return None
    table = confidence_bins(np.asarray(probs), np.asarray(labels), bins)
    filled = table[table.tracks > 0]
    return float((filled.tracks * (filled.confidence - filled.accuracy).abs()).sum() / len(labels))


def risk_coverage(probs: np.ndarray, labels: np.ndarray) -> pd.DataFrame:
    """The tracks kept as a confidence threshold moves down: per distinct threshold, the share kept (coverage), how
    many, and the accuracy of those kept. The most confident track first; the last row keeps every track."""
    return coverage_curve(probs.max(axis=1), probs.argmax(axis=1) == labels)


def coverage_curve(confidence: np.ndarray, correct: np.ndarray) -> pd.DataFrame:
    """`risk_coverage` from each track's confidence and whether its top genre is right."""
    confidence, correct = np.asarray(confidence, dtype=float), np.asarray(correct, dtype=float)
    order = np.argsort(-confidence, kind="stable")
    confidence, correct = confidence[order], correct[order]
    kept = np.arange(1, len(order) + 1)
    accuracy = np.cumsum(correct) / kept
    last_of_value = np.r_[confidence[1:] != confidence[:-1], True]  # ties are kept or dropped together
    return pd.DataFrame(
        {
            "threshold": confidence[last_of_value],
            "coverage": kept[last_of_value] / max(len(order), 1),
            "tracks": kept[last_of_value],
            "accuracy": accuracy[last_of_value],
        }
    )


def threshold_for_precision(probs: np.ndarray, labels: np.ndarray, precision: float) -> float | None:
    """The lowest confidence threshold at which the tracks at or above it are right with `precision` or more (the
    largest coverage that holds it), or None when no threshold does."""
    return _threshold(risk_coverage(np.asarray(probs), np.asarray(labels)), precision)


def _threshold(curve: pd.DataFrame, precision: float) -> float | None:
    holding = curve[curve.accuracy >= precision]
    return float(holding.threshold.iloc[-1]) if len(holding) else None


def calibration_record(probs: np.ndarray, labels: np.ndarray, temperature: float) -> dict:
    """One split's calibration figures, before and after the run's temperature."""
    after = calibrated(probs, temperature)
    return {
        "tracks": int(len(labels)),
        "ece_before": expected_calibration_error(probs, labels),
        "ece_after": expected_calibration_error(after, labels),
        "nll_before": negative_log_likelihood(np.asarray(probs, dtype=np.float64), labels) if len(labels) else None,
        "nll_after": negative_log_likelihood(after, labels) if len(labels) else None,
    }


def precision_threshold(calibration: dict, precision: float) -> float | None:
    """`threshold_for_precision` over the valid tracks a run's calibration.json keeps."""
    confidence = calibration.get("valid_confidence", [])
    if not confidence:
        return None
    return _threshold(coverage_curve(confidence, calibration["valid_correct"]), precision)
