"""A run's model on a frame of examples: per-example probabilities, and per-track ones pooled the run's way."""

from __future__ import annotations

import numpy as np
import pandas as pd

from genre_tf.evaluation.pooling import aggregate_tracks, pool_track_level
from genre_tf.inputs.examples import split_data
from genre_tf.run import RunDir


def predict_split(
    run: RunDir, model, frame: pd.DataFrame, batch_size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(track ids, probabilities, labels as class indices) of every example of a frame, pooled per track for a
    track-level model (see `pool_track_level`)."""
    return pool_track_level(run, *predict_examples(run, model, frame, batch_size))


def predict_examples(
    run: RunDir, model, frame: pd.DataFrame, batch_size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(track ids, probabilities, labels as class indices), one row per example (segment) of a frame."""
    data = split_data(frame, run.recipe, run.classes, run.scaler)
    probs = model.predict(data.batches(batch_size), verbose=0) if len(data) else np.zeros((0, len(run.classes)))
    return data.track_ids, probs, data.labels


# The column of an audio run's segments as its graph predicted them (`graph_examples`): an array per segment.
PROBABILITIES = "probabilities"


def predict_frame(run: RunDir, frame: pd.DataFrame, model=None) -> tuple[np.ndarray, np.ndarray]:
    """(track ids, per-track probabilities) for a frame of examples, segments averaged per track; segments that an
    audio run's graph predicted already (`graph_examples`: a PROBABILITIES column) are only pooled."""
    if PROBABILITIES in frame:
        no_labels = np.zeros(len(frame), int)
        probs = stacked(frame[PROBABILITIES], len(run.classes))
        return track_probabilities(run, frame["track_id"].to_numpy(), probs, no_labels)
    model = model or run.load_model()
    return track_probabilities(run, *predict_examples(run, model, frame, run.config.train.batch_size))


def track_probabilities(
    run: RunDir, track_ids: np.ndarray, probs: np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(track ids, per-track probabilities) from per-example ones: the mean of a track's segments, or for a
    track-level model the softmax of their mean logits."""
    tracks, mean, _ = aggregate_tracks(*pool_track_level(run, track_ids, probs, labels)[:2])
    return tracks, mean


def stacked(column: pd.Series, width: int) -> np.ndarray:
    """A column of arrays of `width` values as one (rows, width) array."""
    return np.stack(column.to_numpy()) if len(column) else np.zeros((0, width), np.float32)


def in_track_order(tracks: np.ndarray, run_tracks: np.ndarray, probs: np.ndarray, run: RunDir) -> np.ndarray:
    """A run's per-track probabilities (rows in `run_tracks` order) reordered to `tracks`, the first run's order."""
    if set(run_tracks) != set(tracks):
        differ = sorted(set(run_tracks) ^ set(tracks))
        raise SystemExit(
            f"error: {run.path} predicted other tracks than the first run ({', '.join(map(str, differ[:5]))} "
            "differ): its recipe skipped or found other inputs, so the runs cannot be averaged"
        )
    return pd.DataFrame(probs, index=run_tracks).loc[tracks].to_numpy()
