"""Metrics and track-level aggregation."""

import numpy as np

from genre_tf.evaluation.metrics import classification_metrics, evaluate_predictions, format_headline, headline
from genre_tf.evaluation.pooling import aggregate_tracks


def test_aggregate_mean_and_vote():
    track_ids = np.array(["a", "a", "a", "b", "b"])
    probs = np.array([[0.6, 0.4], [0.6, 0.4], [0.0, 1.0], [0.9, 0.1], [0.2, 0.8]])
    tracks, mean, vote = aggregate_tracks(track_ids, probs)
    assert tracks.tolist() == ["a", "b"]
    np.testing.assert_allclose(mean, [[0.4, 0.6], [0.55, 0.45]])
    assert mean.argmax(axis=1).tolist() == [1, 0]  # mean probability favours class 1 for track a
    assert vote.tolist() == [0, 0]  # two of three segments vote 0; b's tie goes to the higher mean


def test_classification_metrics_values():
    m = classification_metrics(np.array([0, 0, 1, 1, 2]), np.array([0, 1, 1, 1, 0]), ["x", "y", "z"])
    assert m["accuracy"] == 0.6
    assert m["per_class"]["y"] == {"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "support": 2}
    assert m["per_class"]["z"]["f1"] == 0.0
    assert m["confusion"] == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert abs(m["macro_f1"] - (0.5 + 0.8 + 0) / 3) < 1e-12


def test_levels_reported():
    probs = np.eye(2)[[0, 1, 1, 1]]
    result = evaluate_predictions(np.array(["a", "a", "b", "b"]), np.array([0, 0, 1, 1]), probs, ["x", "y"])
    assert set(result) == {"segment", "track_mean", "track_vote"}
    assert result["segment"]["accuracy"] == 0.75 and result["track_mean"]["n"] == 2
    single = evaluate_predictions(np.array(["a", "b"]), np.array([0, 1]), np.eye(2), ["x", "y"])
    assert set(single) == {"segment"}


def test_balanced_accuracy_weighs_every_present_genre_alike():
    always_rock = classification_metrics(np.array([0] * 8 + [1, 2]), np.zeros(10, dtype=int), ["rock", "jazz", "pop"])
    assert always_rock["accuracy"] == 0.8 and abs(always_rock["balanced_accuracy"] - 1 / 3) < 1e-12
    absent = classification_metrics(np.array([0, 0, 1]), np.array([0, 1, 1]), ["x", "y", "z"])  # z: no track
    assert absent["balanced_accuracy"] == 0.75


def test_a_genre_without_support_is_left_out_of_the_macro_averages_and_named():
    """A split without a z track has no recall or F1 for z: averaging a 0 for it would halve macro figures."""
    absent = classification_metrics(np.array([0, 0, 1]), np.array([0, 1, 1]), ["x", "y", "z"])
    assert absent["without_support"] == ["z"]
    assert abs(absent["macro_recall"] - 0.75) < 1e-12  # (1/2 + 1) / 2, not (1/2 + 1 + 0) / 3
    assert abs(absent["macro_f1"] - (2 / 3 + 2 / 3) / 2) < 1e-12
    assert abs(absent["macro_precision"] - (1.0 + 0.5) / 2) < 1e-12
    metrics = {"headline": {"test": headline({"segment": absent})}}
    assert "(no z example: averages over the other genres)" in format_headline(metrics)
    full = classification_metrics(np.array([0, 1, 2]), np.array([0, 1, 2]), ["x", "y", "z"])
    assert full["without_support"] == [] and "no " not in format_headline(
        {"headline": {"test": headline({"segment": full})}}
    )
