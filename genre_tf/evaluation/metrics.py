"""Classification metrics of a split at segment and track level, and the headline figures a run reports."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from genre_tf.evaluation.pooling import aggregate_tracks


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> dict:
    """Accuracy, balanced accuracy, macro and per-class precision / recall / F1 and the confusion matrix.

    Balanced accuracy is the mean recall over the genres present (sklearn's balanced_accuracy_score): where genres are
    imbalanced, a model that always answers the largest one scores its share in accuracy but 1 / genres here.
    The macro averages are over the genres present too: a genre with no example in the split has no recall or F1
    to average. `without_support` names those genres, and the headline says so.
    """
    labels = list(range(len(classes)))
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    per_class = {
        name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
        for name, p, r, f, s in zip(classes, precision, recall, f1, support, strict=True)
    }
    present = support > 0
    return {
        "n": int(len(y_true)),
        "accuracy": float(np.mean(y_true == y_pred)) if len(y_true) else None,
        "balanced_accuracy": float(recall[present].mean()) if len(y_true) else None,
        "macro_precision": float(precision[present].mean()) if present.any() else None,
        "macro_recall": float(recall[present].mean()) if present.any() else None,
        "macro_f1": float(f1[present].mean()) if present.any() else None,
        "without_support": [name for name, n in zip(classes, support, strict=True) if n == 0],
        "per_class": per_class,
        "confusion": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


def evaluate_predictions(track_ids: np.ndarray, labels: np.ndarray, probs: np.ndarray, classes: list[str]) -> dict:
    """Metrics at every level; inputs with one example per track report the segment level only once."""
    result = {"segment": classification_metrics(labels, probs.argmax(axis=1), classes)}
    if len(np.unique(track_ids)) == len(track_ids):
        result["segment"]["note"] = "one example per track"
        return result
    tracks, mean, vote = aggregate_tracks(track_ids, probs)
    track_labels = pd.Series(labels, index=track_ids).groupby(level=0, sort=False).first().loc[tracks].to_numpy()
    result["track_mean"] = classification_metrics(track_labels, mean.argmax(axis=1), classes)
    result["track_vote"] = classification_metrics(track_labels, vote, classes)
    return result


def track_level(track_ids: np.ndarray, labels: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each track's mean probabilities and its label, tracks in first-seen order (as `evaluate_predictions`)."""
    tracks, mean, _ = aggregate_tracks(track_ids, probs)
    track_labels = pd.Series(labels, index=track_ids).groupby(level=0, sort=False).first().loc[tracks].to_numpy()
    return mean, track_labels


def headline(result: dict) -> dict:
    """The figures a comparison table shows for one split."""
    track = result.get("track_mean", result["segment"])
    return {
        "segment_accuracy": result["segment"]["accuracy"],
        "track_accuracy": track["accuracy"],
        "track_vote_accuracy": result.get("track_vote", track)["accuracy"],
        "balanced_accuracy": track["balanced_accuracy"],
        "macro_f1": track["macro_f1"],
        "without_support": track.get("without_support", []),
    }


def format_headline(metrics: dict) -> str:
    rows = []
    for split, h in metrics["headline"].items():
        rows.append(
            f"{split:5s}  segment acc {h['segment_accuracy']:.3f}  track acc {h['track_accuracy']:.3f} "
            f"(vote {h['track_vote_accuracy']:.3f})  balanced acc {h['balanced_accuracy']:.3f}  "
            f"macro F1 {h['macro_f1']:.3f}" + _without_support(h.get("without_support", []))
        )
    return "\n".join(rows)


def _without_support(genres: list[str]) -> str:
    """The headline's note on genres with no example in a split, which its macro figures leave out."""
    return f" (no {', '.join(genres)} example: averages over the other genres)" if genres else ""
