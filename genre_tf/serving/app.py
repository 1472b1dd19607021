"""Serve a run over HTTP: a page to drop an audio file on, and the JSON API behind it.

    POST /predict   multipart form field `file`: top-k genres, per-segment probabilities, duration, model
    GET  /health    the model's name, classes and the upload limits
    GET  /          the page (genre_tf/serving/web/: plain HTML, CSS and JS, nothing fetched from elsewhere)

The model is loaded once. Each upload is streamed into a temporary folder of its own, deleted once the answer is
sent, and decoded once (`audio.load_track`); nothing is cached. An audio model (CNN, keras.applications or musicnn
transfer) is served from the graph `export` builds: the waveform is taken as the exported model takes it
(`frontend.read_waveform`), its segments' inputs are made by the exported preprocessing (`frontend.audio_frontend`,
`cut_segments`: pinned to the cache's recipe by tests/test_export.py). A table model (the MLP) reads feature rows: they
are made from the decoded waveform by the cache's functions (`audio_graph.FeatureRows`, `features.analyse_track`) and
scaled by the run's scaler, as predict makes them. Either way concurrent requests' segments go to the model in shared
batches (genre_tf.serving.batching), and a track's probabilities are pooled by predict's `track_probabilities`, so the
service answers as predict does. An ensemble run (`genre_tf.training.ensemble`) is served by its members, each loaded
as above (`EnsemblePredictor`): the upload is decoded once per decoding setting for all of them, table members
included, each distinct input made once, and the answer is `predict --run ENSEMBLE`'s, with a line per member.
Bad input is answered with a 4xx and the one-line reason the command line gives (`{"detail": "not an audio file
(text)"}`).
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
from fastapi import FastAPI
from threadpoolctl import threadpool_limits

from genre_tf.evaluation.calibration import calibrated
from genre_tf.evaluation.pooling import aggregate_tracks, weighted_mean
from genre_tf.evaluation.predictions import track_probabilities
from genre_tf.evaluation.unknown import combined_unknown, unknown_scores
from genre_tf.features import audio
from genre_tf.models import musicnn
from genre_tf.run import RunDir
from genre_tf.serving.audio_graph import waveform_inputs, waveform_model
from genre_tf.serving.batching import Batcher, BatchLimits, Busy
from genre_tf.serving.compute import use_compute
from genre_tf.serving.frontend import read_waveform
from genre_tf.serving.http import http_app
from genre_tf.serving.predict import expand_runs, tagger
from genre_tf.serving.submission import UNKNOWN
from genre_tf.serving.uploads import BadInput, Limits, Upload, checked_duration


class Predictor:
    """The run's model, loaded once, and the answer for one stored upload."""

    def __init__(self, run: RunDir, limits: Limits, batching: BatchLimits | None = None):
        self.run, self.limits = run, limits
        self.model = run.load_model()
        self.tagger = tagger(run) if run.recipe.reads_patches else None
        self._analysing = threading.BoundedSemaphore(limits.analysing)
        self._preparing = 0  # requests decoding or waiting to: their segments are on their way to the batcher
        self._preparing_lock = threading.Lock()
        self.graph = waveform_model(run, self.model, self.tagger)
        self.batcher = Batcher(self.graph.batch, batching, expecting=lambda: self._preparing > 0)
        self.graph.trace_at_once()  # now, not at the first lone request

    def predict(self, upload: Upload, top_k: int) -> dict:
        """The answer for an upload: genres of the whole file, per segment, and musicnn tags where the run has them."""
        seconds = self.duration(upload.path)
        segments, probs, tags, embeddings = self.graph_probabilities(upload.path)
        no_labels = np.zeros(len(probs), int)
        _, track = track_probabilities(self.run, no_labels, probs, no_labels)  # one track: every segment's id is 0
        track = calibrated(track, self.run.temperature)  # as predict answers
        scores, flags = unknown_scores(self.run, embeddings.astype(np.float64).mean(axis=0, keepdims=True))
        return with_unknown(self.answer(upload.name, seconds, track[0], segments, probs, top_k, tags), scores, flags)

    def graph_probabilities(self, path: Path) -> tuple[np.ndarray, np.ndarray, list | None, np.ndarray]:
        """(segment positions, their probabilities, tags, their embeddings) from the run's graph (a table run's: its
        feature rows), the model call batched."""
        self._count_preparing(+1)
        try:
            with self._analysing:
                waveform = read_waveform(path, self.run.recipe)
                if self._alone():  # no batch to gather: the model in this thread, with the front end
                    outputs, positions = self.graph.at_once(waveform)
                else:
                    (inputs, positions), outputs = self.graph.segments(waveform), None
        except audio.AudioError as err:
            raise BadInput(422, str(err)) from None
        finally:
            self._count_preparing(-1)
        try:
            outputs = outputs if outputs is not None else self.batcher.predict(inputs)
        except Busy as err:
            raise BadInput(503, str(err)) from None
        tags = self.top_tags(outputs["tags"]) if self.tagger else None
        return positions, outputs["probabilities"], tags, outputs["embedding"]

    def _alone(self) -> bool:
        """Whether this request is the only one preparing its segments and none waits in the batcher."""
        return self._preparing == 1 and self.batcher.idle

    def _count_preparing(self, change: int) -> None:
        with self._preparing_lock:
            self._preparing += change

    def top_tags(self, scores: np.ndarray, k: int = 5) -> list[tuple[str, float]]:
        """The musicnn tagger's top-k (tag, probability) over the track, segments averaged as `predict --tags` does."""
        names = musicnn.TAGS[self.run.config.model.transfer.backbone]
        _, mean, _ = aggregate_tracks(np.zeros(len(scores), int), scores)
        return [(names[i], float(mean[0][i])) for i in np.argsort(mean[0])[::-1][:k]]

    def duration(self, path: Path) -> float:
        """Seconds of audio in the file, from its header; BadInput when it cannot be opened or is too long."""
        return checked_duration(path, self.limits)

    def answer(
        self,
        name: str,
        seconds: float,
        track: np.ndarray,
        segments: np.ndarray,
        probs: np.ndarray,
        top_k: int,
        tags: list[tuple[str, float]] | None,
    ) -> dict:
        """The JSON body: whole-file genres best first, then per segment, in the run's class order."""
        classes, cfg = self.run.classes, self.run.config.audio
        hop = audio.segment_hop_samples(cfg) / cfg.sample_rate
        best = np.argsort(track)[::-1][:top_k]
        body = {
            "file": name,
            "model": self.run.path.name,
            "kind": self.run.config.model.kind,
            "duration": round(seconds, 3),
            "genre": classes[best[0]],
            "confidence": float(track[best[0]]),  # calibrated on the run's valid split
            "top": [{"genre": classes[i], "probability": float(track[i])} for i in best],
            "classes": classes,
            "probabilities": [float(p) for p in track],
            "segment_seconds": cfg.segment_seconds,
            "segments": [
                {"start": round(float(k) * hop, 3), "probabilities": [float(p) for p in row]}
                for k, row in zip(segments, probs, strict=True)
            ],
        }
        if tags is not None:
            body["tags"] = [{"tag": tag, "probability": p} for tag, p in tags]
        return body

    def health(self) -> dict:
        return {
            "status": "ok",
            "model": self.run.path.name,
            "kind": self.run.config.model.kind,
            "classes": self.run.classes,
            "max_bytes": self.limits.max_bytes,
            "max_seconds": self.limits.max_seconds,
        }


def with_unknown(body: dict, scores: np.ndarray, flags: np.ndarray) -> dict:
    """The answer with its `unknown` (the upload's score, None where not measured, and the flag); an upload unlike
    the music the run learned has genre `unknown`, as predict answers."""
    body["unknown"] = {"score": None if np.isnan(scores[0]) else round(float(scores[0]), 6), "unknown": bool(flags[0])}
    if flags[0]:
        body["genre"] = UNKNOWN
    return body


class EnsemblePredictor:
    """An ensemble run's members, each loaded as it is served alone (a `Predictor`), answering as one: the upload is
    decoded once per decoding setting, each distinct input (`export.input_key`) made once, each member's track
    probabilities pooled as that member pools them, and the ensemble's are their weighted mean, as `predict --run
    ENSEMBLE` makes them."""

    def __init__(self, run: RunDir, limits: Limits, batching: BatchLimits | None = None):
        self.run, self.limits = run, limits
        self.members = run.members()
        self.parts = [Predictor(member.run, limits, batching) for member in self.members]
        self._analysing = threading.BoundedSemaphore(limits.analysing)

    def predict(self, upload: Upload, top_k: int) -> dict:
        """The ensemble's genres of an upload, and each member's top genre and weight."""
        seconds = checked_duration(upload.path, self.limits)
        answers = self.graph_outputs(upload.path)
        tracks = []
        for part, (_, probs, _, _) in zip(self.parts, answers, strict=True):
            no_labels = np.zeros(len(probs), int)
            tracks.append(track_probabilities(part.run, no_labels, probs, no_labels)[1][0])
        weights = np.array([member.weight for member in self.members])
        track = weighted_mean(tracks, weights)
        track = calibrated(track[None], self.run.temperature)[0]  # an ensemble calibrates its average
        heaviest = int(np.argmax(weights))  # its segments make the strip
        tags = next((tags for _, _, tags, _ in answers if tags is not None), None)
        body = self.parts[heaviest].answer(upload.name, seconds, track, *answers[heaviest][:2], top_k, tags)
        each = [
            unknown_scores(p.run, e.astype(np.float64).mean(axis=0, keepdims=True))[0]
            for p, (*_, e) in zip(self.parts, answers, strict=True)
        ]
        body = with_unknown(body, *combined_unknown([part.run for part in self.parts], each, weights))
        classes = self.run.classes
        body.update(
            model=self.run.path.name,
            kind="ensemble",
            segments_of=self.members[heaviest].run.path.name,
            members=[
                {
                    "name": member.run.path.name,
                    "kind": part.run.config.model.kind,
                    "weight": member.weight,
                    "pooling": member.pooling,
                    "genre": classes[int(np.argmax(probs))],
                    "probability": float(np.max(probs)),
                    "probabilities": [float(p) for p in probs],
                }
                for member, part, probs in zip(self.members, self.parts, tracks, strict=True)
            ],
        )
        return body

    def graph_outputs(
        self, path: Path
    ) -> list[tuple[np.ndarray, np.ndarray, list[tuple[str, float]] | None, np.ndarray]]:
        """Per member: (segment positions, their probabilities, tags, their embeddings), from the upload decoded once
        per decoding setting for every member (a table member's feature rows too), each member's model call batched
        with other requests'."""
        for part in self.parts:
            part._count_preparing(+1)  # their batchers wait for this request's segments
        try:
            with self._analysing:
                made = waveform_inputs(path, [part.run for part in self.parts], [part.graph for part in self.parts])
        finally:
            for part in self.parts:
                part._count_preparing(-1)
        reason = next((result for result in made if isinstance(result, str)), None)
        if reason is not None:
            raise BadInput(422, reason)
        outputs = []
        for part, (segments, positions) in zip(self.parts, made, strict=True):
            try:
                out = part.batcher.predict(segments)
            except Busy as err:
                raise BadInput(503, str(err)) from None
            tags = part.top_tags(out["tags"]) if part.tagger else None
            outputs.append((positions, out["probabilities"], tags, out["embedding"]))
        return outputs

    def health(self) -> dict:
        return {
            "status": "ok",
            "model": self.run.path.name,
            "kind": "ensemble",
            "classes": self.run.classes,
            "members": [
                {"name": member.run.path.name, "kind": part.run.config.model.kind, "weight": member.weight}
                for member, part in zip(self.members, self.parts, strict=True)
            ],
            "max_bytes": self.limits.max_bytes,
            "max_seconds": self.limits.max_seconds,
        }


def run_app(run_path: Path, limits: Limits, compute: str = "float32") -> FastAPI:
    """The `serve --run` command's app: the run (an ensemble: its members too) checked, one BLAS thread for the
    process, the `compute` precision set (`compute.use_compute`), then the model loaded."""
    run = RunDir(run_path)
    for model_run in [run, *expand_runs([run])[0]]:
        if problem := model_run.problem:
            raise SystemExit(f"error: {problem}")
    # One BLAS thread for the whole process: requests are the parallelism, and extraction's per-call limit, entered
    # and left by several threads at once, would otherwise leave some extractions with more threads (other bytes).
    threadpool_limits(1)
    use_compute(compute)
    return create_app(run, limits)


def create_app(run: RunDir, limits: Limits | None = None, batching: BatchLimits | None = None) -> FastAPI:
    """The service for one run; its model is loaded here, once."""
    predictor = (EnsemblePredictor if run.is_ensemble else Predictor)(run, limits or Limits(), batching)
    return http_app(predictor, run.path.name)
