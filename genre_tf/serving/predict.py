"""Predict genres with a trained run: audio files, folders or a feature table; a Kaggle-style submission.

The run's saved config decides all preprocessing (sample rate, segments, features, scaler, image
size), so predictions are made exactly as in training. A track's segments are aggregated by mean
probability. An ensemble may mix runs of any families and settings (an MLP and a linear model on one
feature table, a CNN and a transfer model on audio): each run prepares the inputs its own way, and
the per-track probabilities are matched by track id before they are averaged. An ensemble run
(genre_tf.training.ensemble) stands for its members, each weighted as the ensemble chose; beside other runs it counts
as one of them.

With `--output`, audio inputs are indexed once and then analysed, predicted and appended to the output a chunk
of tracks at a time (`--chunk-tracks`), so a library of thousands of files loses at most one chunk to a kill, and
the same command again predicts only the tracks the output lacks (genre_tf.serving.submission: the sidecar that keeps
two models' rows out of one file, and the cut-short row a kill leaves).

An audio run (CNN, keras.applications or musicnn transfer) reads and writes no cache: each file is decoded once for
all the audio runs given, `cache.jobs` files at a time in threads (0: one per core), its segments' inputs are made by
the graph `export` builds (genre_tf.serving.audio_graph; tests/test_export.py pins it to the cache's recipe), and each
run's model is called on a chunk's segments `train.batch_size` at a time. A table run (the MLP) reads feature rows
through the cache.
"""

from __future__ import annotations

import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from genre_tf.config import CacheConfig, ConfigError
from genre_tf.config.console import Progress
from genre_tf.data.index import Index, index_paths
from genre_tf.evaluation.calibration import calibrated
from genre_tf.evaluation.pooling import weighted_mean
from genre_tf.evaluation.predictions import PROBABILITIES, in_track_order, predict_frame
from genre_tf.evaluation.unknown import combined_unknown, frame_unknown, not_measured
from genre_tf.extract.pool import extraction_pool
from genre_tf.extract.prepared import SKIPPED_COLUMNS
from genre_tf.inputs.examples import (
    Examples,
    examples_for_index,
    examples_from_table,
)
from genre_tf.models import musicnn
from genre_tf.run import RunDir
from genre_tf.serving.audio_graph import AudioGraph, waveform_inputs
from genre_tf.serving.submission import SubmissionFile, changed, file_keys, skipped_path, submission

if TYPE_CHECKING:
    from genre_tf.inputs.examples import Examples

CHUNK_TRACKS = 64  # tracks per chunk with --output: 64 clips of 30 s are 640 segments of 3 s, 20 batches of 32
TAGS = "tags"  # the column of the musicnn tagger's outputs per segment, beside evaluation's PROBABILITIES


def reads_table(inputs: list[Path]) -> bool:
    """Whether the inputs are one feature table CSV (rows of features, not audio)."""
    return len(inputs) == 1 and inputs[0].suffix.lower() == ".csv"


def load_inputs(run: RunDir, inputs: list[Path], cache: CacheConfig | None = None, progress: bool = True) -> Examples:
    """Examples for the inputs: a feature table CSV, or audio prepared with the run's recipe.

    `cache` replaces the run's cache settings (where entries go, how many processes extract them).
    """
    if reads_table(inputs):
        cfg = run.config  # shared by every use of the run: changed copies only
        return examples_from_table(inputs[0], replace(cfg, data=replace(cfg.data, split_file=None)))
    return load_index(run, audio_index(inputs), cache, progress)


def audio_index(inputs: list[Path]) -> Index:
    """The inputs' index (`dataset.index_paths`); SystemExit, before any audio is read, when it holds no audio."""
    index = index_paths(inputs)
    if index.tracks.empty and not index.problems:
        ignored = sum(index.ignored.values())
        found = f" ({ignored} files that are not audio)" if ignored else ""
        raise SystemExit(f"error: nothing to predict: no audio files in {', '.join(map(str, inputs))}{found}")
    return index


def load_index(
    run: RunDir, index: Index, cache: CacheConfig | None = None, progress: bool = True, pool=None
) -> Examples:
    """Examples for the audio of an index, prepared with the run's recipe (`pool`: see `prepare_index`)."""
    cfg = run.config if cache is None else replace(run.config, cache=cache)
    # A clip shorter than one segment (a 2 s excerpt, say) is repeated to fill one, not skipped.
    tiling = replace(cfg, audio=replace(cfg.audio, short_clips="tile"))
    return examples_for_index(index, tiling, progress=progress, pool=pool)


def run_cache(run: RunDir, cache_dir: Path | None) -> CacheConfig | None:
    """The run's cache settings with entries in `cache_dir` instead (None: the run's own)."""
    return None if cache_dir is None else CacheConfig(cache_dir, run.config.cache.jobs)


def expand_runs(runs: list[RunDir]) -> tuple[list[RunDir], np.ndarray]:
    """The model runs the given runs stand for, and each one's weight: an ensemble run its members with their weights,
    any other run itself; each given run weighs alike."""
    expanded, weights = [], []
    for run in runs:
        members = run.members() if run.is_ensemble else []
        expanded += [member.run for member in members] or [run]
        weights += [member.weight / len(runs) for member in members] or [1 / len(runs)]
    return expanded, np.array(weights)


def run_temperatures(given: list[RunDir]) -> tuple[np.ndarray, float]:
    """The temperatures (`evaluation.calibration`) of the given runs' predictions: one per model run of
    `expand_runs(given)`, applied to its track probabilities, and one applied to their average. A single ensemble run
    calibrates its average (it was fitted so); any other run calibrates its own probabilities."""
    if len(given) == 1 and given[0].is_ensemble:
        return np.ones(len(given[0].members())), given[0].temperature
    return np.array([run.temperature for run in expand_runs(given)[0]]), 1.0


@dataclass
class Predictions:
    """Per track: its id, calibrated probabilities, unknown score and whether it is unknown; and the inputs skipped."""

    tracks: np.ndarray
    probs: np.ndarray
    skipped: pd.DataFrame
    unknown: tuple[np.ndarray, np.ndarray]  # (scores, flags), `evaluation.unknown`: NaN / False where not measured


def predict_tracks(
    runs: list[RunDir], inputs: list[Path], cache_dir: Path | None = None, examples: list[Examples] | None = None
) -> Predictions:
    """Calibrated per-track probabilities averaged over runs (an ensemble run: over its members, by its weights),
    each run preprocessing the inputs its own way; and each track's unknown score (`track_unknown`). `examples`:
    the models' examples of the inputs made already (`tag_examples`), so that the audio is analysed once."""
    temperatures = run_temperatures(runs)
    runs, weights = expand_runs(runs)
    if examples is None:
        examples = runs_examples(runs, inputs, cache_dir)
    for run_examples in examples:
        if run_examples.frame.empty:  # the reasons first: they are what a person needs to fix
            print_skipped(run_examples.skipped)
            raise SystemExit("error: nothing to predict (every input was skipped)")
    tracks, probs = average_runs(runs, examples, weights=weights, temperatures=temperatures)
    return Predictions(tracks, probs, all_skipped(examples), track_unknown(runs, examples, tracks, None, weights))


def ensemble(
    runs: list[RunDir], inputs: list[Path], cache_dir: Path | None = None
) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """(tracks, calibrated probabilities, skipped inputs) of `predict_tracks`."""
    made = predict_tracks(runs, inputs, cache_dir)
    return made.tracks, made.probs, made.skipped


def track_unknown(
    runs: list[RunDir],
    examples: list[Examples],
    tracks: np.ndarray,
    models: list | None = None,
    weights: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(unknown scores, flags) of the tracks (`evaluation.unknown.frame_unknown`); several runs combined by their
    `weights` (default: alike) as `evaluation.unknown.combined_unknown` does."""
    if len({run.path.resolve() for run in runs}) == 1:
        return frame_unknown(runs[0], examples[0].frame, (models or [None])[0], tracks)
    scores = [
        frame_unknown(run, run_examples.frame, model, tracks)[0]
        for run, run_examples, model in zip(runs, examples, models or [None] * len(runs), strict=True)
    ]
    return combined_unknown(runs, scores, np.full(len(runs), 1.0) if weights is None else weights)


def runs_examples(runs: list[RunDir], inputs: list[Path], cache_dir: Path | None = None) -> list[Examples]:
    """Each run's examples of the inputs: a feature table's rows, or the audio's (`index_examples`)."""
    if not reads_table(inputs):
        index = audio_index(inputs)
        return index_examples(runs, index, audio_graphs(runs), run_workers(runs), cache_dir)
    examples = []
    for run in runs:
        try:
            examples.append(load_inputs(run, inputs, run_cache(run, cache_dir)))
        except ConfigError as err:  # a feature table given to a run that reads audio
            raise SystemExit(f"error: {run.path} cannot read these inputs: {err}") from None
    return examples


def index_examples(
    runs: list[RunDir],
    index: Index,
    graphs: list,
    workers: int,
    cache_dir: Path | None = None,
    pool=None,
    progress: bool = True,
) -> list[Examples]:
    """Each run's examples of the audio of an index: an audio run's segments predicted by its graph (`graphs`: the
    runs' AudioGraphs, None for a table run), every file decoded once for all of them; a table run's feature rows
    through the cache (`pool`: see `prepare_index`)."""
    audio = [i for i, graph in enumerate(graphs) if graph is not None]
    predicted = (
        graph_examples([runs[i] for i in audio], [graphs[i] for i in audio], index, workers, progress) if audio else []
    )
    by_run = dict(zip(audio, predicted, strict=True))
    return [
        by_run[i] if i in by_run else load_index(run, index, run_cache(run, cache_dir), progress, pool)
        for i, run in enumerate(runs)
    ]


def audio_graphs(runs: list[RunDir], models: list | None = None) -> list:
    """Each run's AudioGraph, built at its first use (`DeferredGraph`; its model: `models`, else loaded then), None
    for a table run."""
    models = models or [None] * len(runs)
    return [
        None if run.recipe.reads_features else DeferredGraph(run, model)
        for run, model in zip(runs, models, strict=True)
    ]


class DeferredGraph:
    """A run's AudioGraph built (its model loaded, its functions traced) when a decoded file first needs it, once,
    whichever thread comes first: inputs whose every file is unreadable are answered without model work."""

    def __init__(self, run: RunDir, model=None):
        self._run, self._model, self._graph = run, model, None
        self._lock = threading.Lock()
        self.reads_backbone = run.recipe.reads_patches  # as its AudioGraph, which has no tagger here, will say

    def graph(self):
        """The AudioGraph, built by the first call."""
        with self._lock:
            if self._graph is None:
                self._graph = AudioGraph(self._run, self._model or self._run.load_model())
            return self._graph

    def segments(self, waveform: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.graph().segments(waveform)

    def batch(self, inputs: np.ndarray) -> dict[str, np.ndarray]:
        return self.graph().batch(inputs)


def run_workers(runs: list[RunDir]) -> int:
    """Files analysed at once: the largest `cache.jobs` of the runs (0: one per core)."""
    return max(run.config.cache.jobs or os.cpu_count() or 1 for run in runs)


def graph_examples(
    runs: list[RunDir], graphs: list, index: Index, workers: int, progress: bool = True
) -> list[Examples]:
    """Each audio run's examples of the audio of an index, predicted by its AudioGraph: one row per segment
    (track_id, segment, PROBABILITIES, and TAGS where the graph has a tagger), and the files it skipped with their
    one-line reasons, as `prepare_index` lists them. The files are analysed `workers` at a time in threads (decoding
    and resampling release the GIL), CHUNK_TRACKS at a time, so that only a chunk's model inputs are held; each
    chunk's segments go to each run's model together, `train.batch_size` at a time."""

    tracks = index.tracks
    segments, skipped = [[] for _ in runs], [[] for _ in runs]
    bar = Progress(total=len(tracks), desc="predicting", unit="track", disable=not progress or len(tracks) < 2)
    with bar, ThreadPoolExecutor(max(1, workers)) as threads:
        for start in range(0, len(tracks), CHUNK_TRACKS):
            chunk = tracks.iloc[start : start + CHUNK_TRACKS]
            analysed = list(threads.map(partial(waveform_inputs, runs=runs, graphs=graphs), chunk["path"]))
            for r, graph in enumerate(graphs):
                frames, inputs = [], []
                for track, results in zip(chunk.itertuples(), analysed, strict=True):
                    if isinstance(results[r], str):
                        skipped[r].append((track.path, track.track_id, results[r]))
                    else:
                        inputs.append(results[r][0])
                        frames.append(pd.DataFrame({"track_id": track.track_id, "segment": results[r][1]}))
                if frames:
                    segments[r].append(predicted_segments(graph, frames, inputs))
            bar.update(len(chunk))
    problems = [(p, index.problem_id(p), reason) for p, reason in index.problems]  # reported while indexing
    empty = pd.DataFrame({"track_id": [], "segment": [], PROBABILITIES: []})
    examples = []
    for run_segments, run_skipped in zip(segments, skipped, strict=True):
        frame = pd.concat(run_segments, ignore_index=True) if run_segments else empty
        examples.append(Examples(frame, [], pd.DataFrame(run_skipped + problems, columns=SKIPPED_COLUMNS)))
    return examples


def predicted_segments(graph, frames: list[pd.DataFrame], inputs: list[np.ndarray]) -> pd.DataFrame:
    """The segments of some files (a frame per file) with the graph's outputs for their inputs, an array per row."""
    frame = pd.concat(frames, ignore_index=True)
    for name, values in graph.batch(np.concatenate(inputs)).items():  # PROBABILITIES, and TAGS
        frame[name] = list(values)
    return frame


def average_runs(
    runs: list[RunDir],
    examples: list[Examples],
    models: list | None = None,
    weights: np.ndarray | None = None,
    temperatures: tuple[np.ndarray, float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(track ids, probabilities): each run's per-track probabilities for its own examples of the same tracks,
    matched by track id and averaged (by `weights`, summing to 1; default: alike), in the first run's track order;
    `models`: the runs' loaded models; `temperatures`: `run_temperatures` (default: none applied)."""
    if all(e.frame.empty for e in examples):  # a chunk of skipped inputs only
        return np.array([], dtype=object), np.zeros((0, len(runs[0].classes)))
    weights = np.full(len(runs), 1 / len(runs)) if weights is None else weights
    each, average = temperatures if temperatures is not None else (np.ones(len(runs)), 1.0)
    tracks, aligned = None, []
    for run, run_examples, model, t in zip(runs, examples, models or [None] * len(runs), each, strict=True):
        run_tracks, probs = predict_frame(run, run_examples.frame, model)
        tracks = run_tracks if tracks is None else tracks
        aligned.append(calibrated(in_track_order(tracks, run_tracks, probs, run), t))
    return tracks, calibrated(weighted_mean(aligned, weights), average)


def all_skipped(examples: list[Examples]) -> pd.DataFrame:
    """The inputs some run skipped, each once (path, track_id, reason)."""
    return pd.concat([e.skipped for e in examples]).drop_duplicates(ignore_index=True)


def predict_to_file(
    runs: list[RunDir],
    inputs: list[Path],
    output: SubmissionFile,
    chunk_tracks: int,
    cache_dir: Path | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Predict the audio inputs into `output` a chunk of tracks at a time, after the tracks it already holds; the
    (track ids, probabilities) of this call's predictions (of an ensemble run's members, by its weights). SystemExit
    when no track gets a row."""
    temperatures = run_temperatures(runs)
    runs, weights = expand_runs(runs)

    kept = output.resume()  # first: a refusal comes before any work
    index = audio_index(inputs)  # once: the one source of track ids, and of the order of the rows
    if stale := changed(index.tracks, kept):
        output.forget(set(stale))
        print(f"{len(stale)} files changed since their rows were written: predicting them again")
    done = set(kept) - set(stale)
    todo = index.tracks[~index.tracks.track_id.isin(done)].reset_index(drop=True)
    if len(todo) < len(index.tracks):
        print(f"resuming: {len(index.tracks) - len(todo)} of {len(index.tracks)} tracks already in {output.path}")
    models = [run.load_model() for run in runs]
    graphs, workers = audio_graphs(runs, models), run_workers(runs)
    predicted = []
    bar = Progress(total=len(index.tracks), initial=len(index.tracks) - len(todo), desc="predicting", unit="track")
    with bar, extraction_pool(workers) as pool:  # workers start once
        for start in range(0, len(todo), chunk_tracks):
            problems = index.problems if start + chunk_tracks >= len(todo) else []  # reported with the last chunk
            chunk = Index(todo.iloc[start : start + chunk_tracks].reset_index(drop=True), problems, root=index.root)
            examples = index_examples(runs, chunk, graphs, workers, cache_dir, pool, progress=False)
            skipped = all_skipped(examples)
            print_skipped(skipped)
            tracks, probs = average_runs(runs, examples, models, weights, temperatures)
            unknown = track_unknown(runs, examples, tracks, models, weights)
            rows = submission(output.classes, tracks, probs, output.with_probabilities, True, unknown)
            output.append(rows, skipped, file_keys(chunk.tracks[chunk.tracks.track_id.isin(rows["id"])]))
            predicted.append((tracks, probs))
            bar.update(len(chunk.tracks))
    if output.rows == 0:
        raise SystemExit("error: nothing to predict (every input was skipped)")
    if not predicted:
        return np.array([], dtype=object), np.zeros((0, len(output.classes)))
    return np.concatenate([t for t, _ in predicted]), np.concatenate([p for _, p in predicted])


def print_skipped(skipped: pd.DataFrame) -> None:
    """One line per skipped input on stderr: `skipped PATH: REASON` (above a progress bar, if one is shown)."""
    for row in skipped.itertuples():
        Progress.write(f"skipped {row.path}: {row.reason}", file=sys.stderr)


def check_tagged(run: RunDir) -> None:
    """SystemExit for a run without a musicnn tagger, before any input is read."""
    if not run.recipe.reads_patches:
        raise SystemExit(f"error: --tags needs a musicnn run (backbone MSD_musicnn or MTT_musicnn); {run.path} is none")


def tagger(run: RunDir):
    """The pretrained tagger of the run's musicnn backbone; SystemExit for a run without one."""
    check_tagged(run)
    cfg = run.config
    return musicnn.tagger(cfg.model.transfer.backbone, run.recipe.shape()[0])


def top_k_lines(
    classes: list[str], tracks: np.ndarray, probs: np.ndarray, k: int, unknown: tuple | None = None
) -> list[str]:
    """Per track its top-k genres with their calibrated probabilities; a track unlike the music the run learned is
    `unknown`, with its score, before its nearest genres."""
    scores, flagged = unknown if unknown is not None else not_measured(len(tracks))
    lines = []
    for track, p, score, out in zip(tracks, probs, scores, flagged, strict=True):
        best = np.argsort(p)[::-1][:k]
        genres = ", ".join(f"{classes[i]} {p[i]:.3f}" for i in best)
        lines.append(f"{track}: unknown (unlike the music the run learned: score {score:.3f}); nearest {genres}"
                     if out else f"{track}: {genres}")  # fmt: skip
    return lines


def write_at_once(output: Path, table: pd.DataFrame, skipped: pd.DataFrame) -> None:
    """The one-shot output of a feature table's predictions, and its skipped.csv when inputs were skipped."""
    output.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(output, index=False)
    if not skipped.empty:
        skipped.to_csv(skipped_path(output), index=False)
