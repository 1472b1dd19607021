"""The service on LiteRT: an exported .tflite file behind the service's routes and page (`http.http_app`), with no
TensorFlow. `python -m genre_tf.serve --model genres.tflite` lands here.

Each upload is decoded as `predict --model` decodes it (`litert.LiteModel.waveform`) and run through the file's
`serving_default`, whose graph makes the segments, the model's probabilities, their pooling, the calibration and
the unknown score. The answer has the fields of the TensorFlow service's (`app.Predictor.answer`): genre and
confidence, the top genres, every class's probability, each segment's start and probabilities, and `unknown`; the
run's own name and kind come from the file's metadata. One interpreter answers one upload at a time; uploads are
decoded in parallel.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from genre_tf.serving.http import http_app
from genre_tf.serving.litert import UNKNOWN, LiteModel, LiteRTError, answer, exported_tflite
from genre_tf.serving.uploads import BadInput, Limits, Upload, checked_duration


class LitePredictor:
    """An exported file on LiteRT, loaded once, and the answer for one stored upload."""

    def __init__(self, model_path: Path, limits: Limits):
        self.model, self.limits, self.path = LiteModel(model_path), limits, Path(model_path)
        metadata = self.model.metadata
        self.name = metadata.get("run", self.path.stem)
        self.kind = str(metadata.get("model", "")).split(":")[0] or "exported"
        self._analysing = threading.BoundedSemaphore(limits.analysing)  # as `serve --run`: --workers, else cores + 1

    def predict(self, upload: Upload, top_k: int) -> dict:
        seconds = checked_duration(upload.path, self.limits)
        try:
            with self._analysing:
                waveform = self.model.waveform(upload.path)
        except LiteRTError as err:
            raise BadInput(422, str(err)) from None
        out = self.model.outputs(waveform)
        made, classes = answer(out), self.model.classes
        track = made.probabilities
        best = np.argsort(track)[::-1][:top_k]
        segments = np.asarray(out["segment_probabilities"], np.float64)
        starts = self.model.segment_starts(len(waveform))
        if len(starts) != len(segments):  # an export that does not say where its segments lie: one after another
            starts = [round(k * self.model.metadata.get("segment_hop_seconds", 0.0), 3) for k in range(len(segments))]
        return {
            "file": upload.name,
            "model": self.name,
            "kind": self.kind,
            "duration": round(seconds, 3),
            "genre": UNKNOWN if made.unknown else classes[best[0]],
            "confidence": float(track[best[0]]),
            "top": [{"genre": classes[i], "probability": float(track[i])} for i in best],
            "classes": classes,
            "probabilities": [float(p) for p in track],
            "segment_seconds": self.model.metadata.get("segment_seconds"),
            "segments": [
                {"start": start, "probabilities": [float(p) for p in row]}
                for start, row in zip(starts, segments, strict=True)
            ],
            "unknown": {
                "score": None if np.isnan(made.unknown_score) else round(made.unknown_score, 6),
                "unknown": made.unknown,
            },
        }

    def health(self) -> dict:
        return {
            "status": "ok",
            "model": self.name,
            "kind": self.kind,
            "runtime": "litert",
            "classes": self.model.classes,
            "max_bytes": self.limits.max_bytes,
            "max_seconds": self.limits.max_seconds,
        }


def lite_app(model: Path | None, run: Path | None, limits: Limits):
    """The service of an exported file (`model`), or of a run's `export/<run>.tflite`; SystemExit when it is missing."""
    path = Path(model) if model is not None else exported_tflite(run)
    if not path.is_file():
        hint = "" if model is not None else f"; export it: python -m genre_tf.export --run {run} --format tflite"
        raise SystemExit(f"error: {path}: no such file{hint}")
    predictor = LitePredictor(path, limits)
    return http_app(predictor, predictor.name)
