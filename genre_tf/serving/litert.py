"""An exported .tflite file run on LiteRT (`ai-edge-litert`), with neither TensorFlow nor the rest of genre_tf.

`python -m genre_tf.predict --model genres.tflite FOLDER` lands here. The file says what it takes (its `metadata`
output: classes, sample rate, how the run decoded audio); each file is decoded as `audio.load_track` decodes it
(libsndfile through soundfile, mono, the same length limits and checks, soxr at high quality), resampled to the
rate the file's `serving_default` takes, and the exported graph does the rest: segments, model, pooling,
calibration and the unknown score. What this module imports is numpy, soundfile, soxr, ai-edge-litert and the
standard library (`data.paths` names the files as predict does): a venv with only those predicts (`make litert-venv`).
A TFLite file of a table model (the MLP) takes feature rows and is refused here with its reason.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

try:
    from ai_edge_litert.interpreter import Interpreter
except ImportError:  # the `litert` extra is not installed: LiteModel says so
    Interpreter = None

from genre_tf.data.paths import Walk, _dedupe, common_root, track_id, walk_folder
from genre_tf.features.audio import spread_segments
from genre_tf.features.resampling import soxr_hq

PROBE_SECONDS = 1.0  # the call that reads the file's metadata: a second of silence (a short clip fills a segment)
UNKNOWN = "unknown"  # the class of a track unlike the music the run learned (evaluation.unknown)
DECODING_AHEAD = 2  # files decoded in threads while the interpreter runs: one core decodes while the other predicts
# How a run decoded audio where an export does not say it (exports before `decoding` was written)
DEFAULT_DECODING = {"duration": None, "max_duration": 600.0, "min_seconds": 0.5, "silence_rms": 1e-4}


class LiteRTError(Exception):
    """A file that cannot be predicted here; str(err) is one line for a person."""


@dataclass
class Answer:
    """One file's answer: calibrated probabilities, and its unknown score and flag (NaN / False where the export
    has none)."""

    probabilities: np.ndarray
    unknown_score: float
    unknown: bool


class LiteModel:
    """A .tflite export on the LiteRT interpreter: `predict(path)` decodes a file and answers for it."""

    def __init__(self, path: Path, threads: int | None = None):
        if Interpreter is None:
            raise SystemExit("error: LiteRT is not installed: pip install ai-edge-litert (or make litert-venv)")
        try:
            self.interpreter = Interpreter(model_path=str(path), num_threads=threads or os.cpu_count() or 1)
        except (ValueError, RuntimeError) as err:
            raise SystemExit(f"error: {path} is not a TFLite model LiteRT can load ({err})") from None
        signatures = self.interpreter.get_signature_list()
        if "serving_default" not in signatures:
            raise SystemExit(f"error: {path} has no serving_default signature (not a genre_tf export)")
        if "waveform" not in signatures["serving_default"]["inputs"]:
            raise SystemExit(f"error: {path} takes feature-table rows, not audio: predict them with --run")
        self.runner = self.interpreter.get_signature_runner("serving_default")
        self.lock = threading.Lock()
        said = self.runner(waveform=np.zeros(round(PROBE_SECONDS * 16000), np.float32))
        self.metadata = json.loads(np.asarray(said["metadata"]).item())
        self.classes = [c.decode() if isinstance(c, bytes) else str(c) for c in said["classes"]]
        self.rate = int(said["sample_rate"])
        self.decoding = {**DEFAULT_DECODING, **self.metadata.get("decoding", {})}
        self.decode_rate = int(self.decoding.get("sample_rate", self.rate))

    def waveform(self, path: Path) -> np.ndarray:
        """The file as the export takes it: decoded as the run decoded audio, at its rate (LiteRTError)."""
        d = self.decoding
        seconds = d["max_duration"] if d["duration"] is None else min(d["max_duration"], d["duration"])
        try:
            with sf.SoundFile(path) as f:
                native = f.samplerate
                frames = f.read(round(seconds * native), dtype="float32", always_2d=True)
        except (sf.LibsndfileError, sf.SoundFileRuntimeError, RuntimeError) as err:
            raise LiteRTError(f"cannot decode ({str(err).splitlines()[0]})") from None
        if frames.size == 0:
            raise LiteRTError("no audio frames")
        if len(frames) < d["min_seconds"] * native:
            raise LiteRTError(f"too short ({len(frames) / native:.2f} s < {d['min_seconds']:g} s)")
        if not np.isfinite(frames).all():
            raise LiteRTError("contains NaN or inf samples")
        y = frames[:, 0] if frames.shape[1] == 1 else frames.mean(axis=1)
        rms = float(np.sqrt(np.mean(np.square(y), dtype=np.float64)))
        if rms < d["silence_rms"]:
            raise LiteRTError(f"silent (RMS {rms:.3g} < {d['silence_rms']:g})")
        y = soxr_hq(y, native, self.decode_rate)
        if d["duration"] is not None:
            n = round(d["duration"] * self.decode_rate)
            y = y[:n] if len(y) >= n else np.pad(y, (0, n - len(y)))
        return soxr_hq(y, self.decode_rate, self.rate).astype(np.float32, copy=False)

    def outputs(self, waveform: np.ndarray) -> dict[str, np.ndarray]:
        """The file's outputs for a waveform at its rate (one interpreter: callers take turns, `lock`)."""
        with self.lock:
            return self.runner(waveform=waveform)

    def predict(self, path: Path) -> Answer:
        return answer(self.outputs(self.waveform(path)))

    def segment_starts(self, n_samples: int) -> list[float]:
        """Seconds at which the segments the graph keeps of a waveform of `n_samples` start, as the export cuts them
        (`frontend.fit_waveform`, `audio.spread_segments`); consecutive where the export does not say."""
        layout = self.metadata.get("segments")
        hop = self.metadata.get("segment_hop_seconds", 0.0)
        if layout is None:
            return []
        max_samples = round(self.decoding["max_duration"] * self.rate)
        n = max(min(n_samples, max_samples), layout["segment_samples"])  # a short clip is repeated to fill one
        if self.decoding["duration"] is not None:
            n = max(round(self.decoding["duration"] * self.rate), layout["segment_samples"])
        n_segments = (n - layout["segment_samples"]) // layout["hop_samples"] + 1
        return [round(k * hop, 3) for k in spread_segments(n_segments, layout["max_segments"])]


def decoded(
    model: LiteModel, files: list[tuple[str, Path]], ahead: int = DECODING_AHEAD
) -> Iterator[tuple[str, Path, np.ndarray | LiteRTError]]:
    """(id, path, the waveform or why it has none) of each file in order, the next `ahead` decoded in threads while
    the caller runs the interpreter on this one (libsndfile, soxr and numpy leave the GIL while they work)."""
    queued, rest = deque(), iter(files)
    with ThreadPoolExecutor(ahead) as pool:

        def submit() -> None:
            if (item := next(rest, None)) is not None:
                queued.append((*item, pool.submit(model.waveform, item[1])))

        for _ in range(ahead + 1):
            submit()
        while queued:
            track, path, future = queued.popleft()
            submit()
            try:
                yield track, path, future.result()
            except LiteRTError as err:
                yield track, path, err


def answer(out: dict[str, np.ndarray]) -> Answer:
    score = float(out["unknown_score"]) if "unknown_score" in out else float("nan")
    return Answer(np.asarray(out["probabilities"], np.float64), score, bool(out.get("unknown", False)))


def exported_tflite(run: Path) -> Path:
    """Where `export --format tflite` writes a run's file unless told otherwise: <run>/export/<run name>.tflite."""
    return Path(run) / "export" / f"{Path(run).name}.tflite"


def audio_files(inputs: list[Path]) -> tuple[list[tuple[str, Path]], list[str]]:
    """(id, path) of every audio file given or below a folder given, named as predict's index names them
    (`data.paths`: ids below the inputs' common folder, GTZAN's own kept; hidden files skipped; one row per file and
    per id); and a line for each file left out, with its reason."""
    root, walk, found = common_root(inputs), Walk(), []
    for given in map(Path, inputs):
        found += walk_folder(given, walk) if given.is_dir() else [given]
    rows, problems = _dedupe([{"path": str(path), "track_id": track_id(path, root)} for path in found])
    problems = [(str(path), f"unsupported audio format {path.suffix.lower()}") for path in walk.unreadable] + problems
    return [(row["track_id"], Path(row["path"])) for row in rows], [f"skipped {p}: {why}" for p, why in problems]


def predict_files(
    model_path: Path, inputs: list[Path], output: Path | None, top_k: int, probabilities: bool = False
) -> int:
    """The `predict --model X.tflite` command: each file's top genres (or `unknown`), and with `output` a CSV of id,
    class, confidence, unknown_score (and with `probabilities` one column per class); files that cannot be decoded
    are named with their reason. Returns the count of files answered."""
    model = LiteModel(model_path)
    files, skipped = audio_files(inputs)
    if not files and not skipped:
        raise SystemExit(f"error: nothing to predict: no audio files in {', '.join(map(str, inputs))}")
    rows = []
    for i, (track, path, waveform) in enumerate(decoded(model, files), 1):
        if isinstance(waveform, LiteRTError):
            skipped.append(f"skipped {path}: {waveform}")
            continue
        said = answer(model.outputs(waveform))
        best = int(np.argmax(said.probabilities))
        genre = UNKNOWN if said.unknown else model.classes[best]
        rows.append((track, genre, float(said.probabilities[best]), said.unknown_score, said.probabilities))
        if output is None or len(files) <= 10:
            order = np.argsort(said.probabilities)[::-1][:top_k]
            nearest = ", ".join(f"{model.classes[j]} {said.probabilities[j]:.2f}" for j in order)
            print(f"{track}: {'unknown (unlike the music the run learned); nearest ' if said.unknown else ''}{nearest}")
        elif i % 50 == 0:
            print(f"predicting: {i}/{len(files)} files", file=sys.stderr, flush=True)
    for line in skipped:
        print(line, file=sys.stderr)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        temporary = output.with_name(f".{output.name}.tmp")
        with temporary.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(
                ["id", "class", "confidence", "unknown_score", *(f"p_{c}" for c in model.classes if probabilities)]
            )
            for track, genre, confidence, score, probs in rows:
                each = [f"{p:.6f}" for p in probs] if probabilities else []
                writer.writerow([track, genre, f"{confidence:.6f}", "" if np.isnan(score) else f"{score:.6f}", *each])
        os.replace(temporary, output)
        print(f"{len(rows)} rows written to {output}")
    if not rows:
        raise SystemExit("error: nothing to predict (every input was skipped)")
    return len(rows)
