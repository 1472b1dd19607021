"""A track's probabilities from its segments', and several runs' from theirs: the pooling every command shares."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from genre_tf import models
from genre_tf.run import RunDir

PROBABILITY_FLOOR = 1e-30  # probabilities are floored here before their log when logits are pooled


def aggregate_tracks(track_ids: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per track (in first-seen order): mean probability over its segments and the majority-vote class.

    Vote ties go to the tied class with the highest mean probability.
    """
    tracks, groups, _ = track_groups(track_ids)
    mean = group_means(groups, len(tracks), probs)
    counts = np.zeros(mean.shape, np.int64)
    np.add.at(counts, (groups, probs.argmax(axis=1)), 1)
    tie_break = counts + mean * 1e-3  # mean probabilities are < 1, so they only order equal counts
    return tracks, mean, tie_break.argmax(axis=1)


def track_groups(track_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(the distinct track ids in first-seen order, each row's index into them, each track's first row)."""
    ids, first, inverse = np.unique(np.asarray(track_ids), return_index=True, return_inverse=True)
    order = np.argsort(first)
    rank = np.empty(len(order), np.intp)
    rank[order] = np.arange(len(order))
    return ids[order], rank[inverse.ravel()], first[order]


def group_means(groups: np.ndarray, n: int, values: np.ndarray) -> np.ndarray:
    """Per group, the mean of its rows of `values`, any shape past the first axis (summed in float64, in row order;
    float32 in, float32 out)."""
    sums = np.zeros((n, *values.shape[1:]), np.float64)
    np.add.at(sums, groups, values)
    counts = np.bincount(groups, minlength=n).reshape(-1, *[1] * (values.ndim - 1))
    return (sums / counts).astype(np.result_type(values.dtype, np.float32))


def pool_track_level(
    run: RunDir, track_ids: np.ndarray, probs: np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Examples' predictions as the run judges them: per example, or per track for a track-level model.

    A linear probe predicts whole tracks: softmax of its segments' mean logits, which is exactly the softmax
    layer applied to the track's mean embedding.
    """
    if track_pooling(run) == "mean":
        return track_ids, probs, labels
    return pool_logits(track_ids, probs, labels)


def track_pooling(run: RunDir) -> str:
    """How the run makes a track's probabilities from its segments': "mean" of the probabilities (aggregate_tracks),
    or "logits": softmax of their mean logits, for a track-level model (a probe; pool_logits)."""
    return "logits" if models.family(run.config.model).track_level(run.config.model) else "mean"


def pool_logits(
    track_ids: np.ndarray, probs: np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per track, softmax of the mean log-probability of its segments (= of their mean logits), and its label."""
    tracks, groups, first = track_groups(track_ids)
    mean_logits = group_means(groups, len(tracks), np.log(np.maximum(probs, PROBABILITY_FLOOR)))
    pooled = np.exp(mean_logits - mean_logits.max(axis=1, keepdims=True))
    return tracks, pooled / pooled.sum(axis=1, keepdims=True), np.asarray(labels)[first]


def weighted_mean(probabilities: Sequence, weights: Sequence) -> Any:
    """The ensemble average, the one that predict, evaluate, serve and export use: each member's track probabilities
    times its weight (the weights sum to 1), summed in member order. Numpy arrays and graph tensors alike."""
    total = None
    for weight, probs in zip(weights, probabilities, strict=True):
        total = weight * probs if total is None else total + weight * probs
    return total
