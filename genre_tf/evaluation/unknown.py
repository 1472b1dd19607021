""" "None of my genres": how unlike the run's training music a track is, and where that says `unknown`.

A track's embedding is the mean over its segments of what the model's softmax layer reads (`models.with_embedding`).
Its unknown score is the cosine distance to its k-th nearest training track (k = K, or a quarter of the smallest
genre's training tracks where that is fewer) (deep nearest neighbours, Sun et al.
2022: no assumption on the shape of the classes, fitted by storing the training tracks' normalised embeddings). The
threshold is the score that 95 % of the valid tracks stay under, so about 1 in 20 tracks of the run's own kind of
music is called unknown; music of a genre the run never saw, speech and noise lie further out. A run keeps
`unknown.npy` (the training embeddings) and `unknown.json` (K, threshold, how it was fitted).

Several runs (an ensemble, or `predict --run A --run B`) each score a track against their own training tracks: the
tracks' score is the weighted mean of each run's score over its own threshold, so 1.0 is every run at its threshold,
and past 1.0 is unknown.

The baseline this is measured against is the maximum softmax probability (Hendrycks & Gimpel 2017): 1 - confidence.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from genre_tf.evaluation.pooling import aggregate_tracks
from genre_tf.extract.cache import atomic_file, write_atomic
from genre_tf.inputs.examples import split_data
from genre_tf.models import with_embedding
from genre_tf.run import RunDir

K = 5  # the neighbour whose distance is the score, at most: a quarter of the smallest genre's training tracks
KEEP = 0.95  # the share of valid tracks the threshold keeps as known
EMBEDDING = "embedding"  # the column of a graph-predicted segment's embedding (`serving.audio_graph`)


def normalised(embeddings: np.ndarray) -> np.ndarray:
    embeddings = np.asarray(embeddings, dtype=np.float32)
    return embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)


def knn_scores(embeddings: np.ndarray, reference: np.ndarray, k: int = K) -> np.ndarray:
    """Per embedding, 1 - cosine similarity to its k-th nearest row of `reference` (normalised rows)."""
    if not len(embeddings):
        return np.zeros(0)
    similarity = normalised(embeddings) @ reference.T
    k = min(k, reference.shape[0])
    return 1.0 - np.sort(similarity, axis=1)[:, -k]


def track_embeddings(track_ids: np.ndarray, embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(tracks in first-seen order, each one's mean segment embedding)."""
    tracks, mean, _ = aggregate_tracks(np.asarray(track_ids), np.asarray(embeddings, dtype=np.float64))
    return tracks, mean.astype(np.float32)


def embed_frame(run: RunDir, model, frame: pd.DataFrame, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(tracks, mean embeddings) of a frame of examples through the run's model."""
    data = split_data(frame, run.recipe, run.classes, run.scaler)
    if not len(data):
        return np.array([], dtype=object), np.zeros((0, 0), np.float32)
    _, embeddings = with_embedding(model).predict(data.batches(batch_size), verbose=0)
    return track_embeddings(data.track_ids, embeddings)


def fit_unknown(run: RunDir, model, train: pd.DataFrame, valid: pd.DataFrame, batch_size: int) -> dict:
    """Store the training tracks' embeddings and the threshold that keeps KEEP of the valid tracks known."""
    _, reference = embed_frame(run, model, train, batch_size)
    reference = normalised(reference)
    _, valid_embeddings = embed_frame(run, model, valid, batch_size)
    k = int(np.clip(train.groupby("label").track_id.nunique().min() // 4, 1, K))
    scores = knn_scores(valid_embeddings, reference, k)
    record = {
        "method": f"cosine distance to the k-th nearest training track's mean embedding (k = {k})",
        "k": k,
        "threshold": round(float(np.quantile(scores, KEEP)), 6) if len(scores) else None,
        "kept_on_valid": KEEP,
        "train_tracks": int(len(reference)),
    }
    with atomic_file(run.unknown_embeddings) as f:
        np.save(f, reference)
    write_atomic(run.unknown_file, json.dumps(record, indent=1).encode())
    return record


def load_unknown(run: RunDir) -> tuple[np.ndarray, dict] | None:
    """The run's training embeddings and unknown.json, or None for a run fitted before it had them."""
    if not (run.unknown_file.is_file() and run.unknown_embeddings.is_file()):
        return None
    return np.load(run.unknown_embeddings), json.loads(run.unknown_file.read_text())


def not_measured(n: int) -> tuple[np.ndarray, np.ndarray]:
    """The (scores, flags) of n tracks no unknown score was measured for: NaN, none unknown."""
    return np.full(n, np.nan), np.zeros(n, bool)


def unknown_scores(run: RunDir, embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per track embedding (`track_embeddings`): its score, and whether it is past the run's threshold (unknown);
    NaN scores, none unknown, for a run fitted before it kept unknown.json."""
    fitted = load_unknown(run)
    if fitted is None or fitted[1]["threshold"] is None:
        return not_measured(len(embeddings))
    reference, record = fitted
    scores = knn_scores(embeddings, reference, record["k"])
    return scores, scores > record["threshold"]


def frame_unknown(run: RunDir, frame: pd.DataFrame, model, tracks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`unknown_scores` of the tracks `tracks` of a frame of examples: from the embeddings a graph predicted
    (an EMBEDDING column), else through the run's model."""
    if frame.empty:
        return not_measured(len(tracks))
    if EMBEDDING in frame:
        seen, mean = track_embeddings(frame["track_id"].to_numpy(), np.stack(frame[EMBEDDING].to_numpy()))
    else:
        seen, mean = embed_frame(run, model or run.load_model(), frame, run.config.train.batch_size)
    scores, unknown = unknown_scores(run, mean)
    order = pd.Series(np.arange(len(seen)), index=seen).loc[tracks].to_numpy()
    return scores[order], unknown[order]


def auroc(known: np.ndarray, unknown: np.ndarray) -> float:
    """Area under the ROC curve of a score meant to be higher for the unknown tracks than for the known ones."""
    labels = np.r_[np.zeros(len(known)), np.ones(len(unknown))]
    return float(roc_auc_score(labels, np.r_[known, unknown]))


def relative_scores(run: RunDir, scores: np.ndarray) -> np.ndarray:
    """A run's unknown scores over its threshold (1.0 at the threshold); NaN for a run fitted without unknown.json."""
    fitted = load_unknown(run)
    if fitted is None or fitted[1]["threshold"] is None:
        return np.full(len(scores), np.nan)
    return np.asarray(scores, dtype=np.float64) / max(fitted[1]["threshold"], 1e-12)


def combined_unknown(
    runs: list[RunDir], scores: list[np.ndarray], weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(scores, flags) of tracks several runs scored: the weighted mean of each run's `relative_scores`, unknown past
    1.0; NaN and none unknown where a run has no unknown score."""
    relative = np.stack([relative_scores(run, s) for run, s in zip(runs, scores, strict=True)])
    combined = np.asarray(weights, dtype=np.float64) @ relative / np.sum(weights)
    return combined, np.nan_to_num(combined, nan=0.0) > 1.0
