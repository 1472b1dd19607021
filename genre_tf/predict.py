"""Predict genres with a trained run: audio files, folders or a feature table; a Kaggle-style submission.

    python -m genre_tf.predict --run saved_models/demo_cnn song.mp3            # top-k genres of one file
    python -m genre_tf.predict --run DIR data/test/ --output submission.csv   # id,class per track
    python -m genre_tf.predict --run DIR features_30_sec_test.csv --output submission.csv
    python -m genre_tf.predict --run A --run B --run C INPUT...              # average several runs

The run's saved config decides all preprocessing (sample rate, segments, features, scaler, image
size), so predictions are made exactly as in training. A track's segments are aggregated by mean
probability. An ensemble may mix runs of any families and settings (an MLP and a linear model on one
feature table, a CNN and a transfer model on audio): each run prepares the inputs its own way, and
the per-track probabilities are matched by track id before they are averaged.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from genre_tf.config import CacheConfig, ConfigError
from genre_tf.evaluate import aggregate_tracks
from genre_tf.run import RunDir


def predict_frame(run: RunDir, frame: pd.DataFrame, model=None) -> tuple[np.ndarray, np.ndarray]:
    """(track ids, per-track probabilities) for a frame of examples, segments averaged per track."""
    from genre_tf.evaluate import predict_examples

    model = model or run.load_model()
    return track_probabilities(run, *predict_examples(run, model, frame, run.config.train.batch_size))


def track_probabilities(
    run: RunDir, track_ids: np.ndarray, probs: np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(track ids, per-track probabilities) from per-example ones: the mean of a track's segments, or for a
    track-level model the softmax of their mean logits."""
    from genre_tf.evaluate import pool_track_level

    tracks, mean, _ = aggregate_tracks(*pool_track_level(run, track_ids, probs, labels)[:2])
    return tracks, mean


def load_inputs(run: RunDir, inputs: list[Path], cache: CacheConfig | None = None, progress: bool = True):
    """Examples for the inputs: a feature table CSV, or audio prepared with the run's recipe.

    `cache` replaces the run's cache settings (where entries go, how many processes extract them).
    """
    from genre_tf.dataset import index_paths
    from genre_tf.inputs import examples_for_index, examples_from_table

    cfg = run.config  # shared by every use of the run: changed copies only
    if cache is not None:
        cfg = replace(cfg, cache=cache)
    if len(inputs) == 1 and inputs[0].suffix.lower() == ".csv":
        return examples_from_table(inputs[0], replace(cfg, data=replace(cfg.data, split_file=None)))
    index = index_paths(inputs)
    if index.tracks.empty and not index.problems:
        ignored = sum(index.ignored.values())
        found = f" ({ignored} files that are not audio)" if ignored else ""
        raise SystemExit(f"error: nothing to predict: no audio files in {', '.join(map(str, inputs))}{found}")
    # A clip shorter than one segment (a 2 s excerpt, say) is repeated to fill one, not skipped.
    tiling = replace(cfg, audio=replace(cfg.audio, short_clips="tile"))
    return examples_for_index(index, tiling, progress=progress)


def ensemble(runs: list[RunDir], inputs: list[Path]) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """Per-track probabilities averaged over runs (each run preprocesses the inputs its own way)."""
    tracks, total, skipped = None, None, []
    for run in runs:
        try:
            examples = load_inputs(run, inputs)
        except ConfigError as err:  # a feature table given to a run that reads audio
            raise SystemExit(f"error: {run.path} cannot read these inputs: {err}") from None
        skipped.append(examples.skipped)
        if examples.frame.empty:  # the reasons first: they are what a person needs to fix
            print_skipped(examples.skipped)
            raise SystemExit("error: nothing to predict (every input was skipped)")
        run_tracks, probs = predict_frame(run, examples.frame)
        if tracks is None:
            tracks, total = run_tracks, probs
        else:
            total = total + in_track_order(tracks, run_tracks, probs, run)
    return tracks, total / len(runs), pd.concat(skipped).drop_duplicates(ignore_index=True)


def print_skipped(skipped: pd.DataFrame) -> None:
    """One line per skipped input on stderr: `skipped PATH: REASON`."""
    for row in skipped.itertuples():
        print(f"skipped {row.path}: {row.reason}", file=sys.stderr)


def in_track_order(tracks: np.ndarray, run_tracks: np.ndarray, probs: np.ndarray, run: RunDir) -> np.ndarray:
    """A run's per-track probabilities (rows in `run_tracks` order) reordered to `tracks`, the first run's order."""
    if set(run_tracks) != set(tracks):
        differ = sorted(set(run_tracks) ^ set(tracks))
        raise SystemExit(
            f"error: {run.path} predicted other tracks than the first run ({', '.join(map(str, differ[:5]))} "
            "differ): its recipe skipped or found other inputs, so the runs cannot be averaged"
        )
    return pd.DataFrame(probs, index=run_tracks).loc[tracks].to_numpy()


def tagger(run: RunDir):
    """The pretrained tagger of the run's musicnn backbone; SystemExit for a run without one."""
    from genre_tf.inputs import input_shape, model_input
    from genre_tf.models import MUSICNN_PATCH, musicnn

    cfg = run.config
    if model_input(cfg) != MUSICNN_PATCH:
        raise SystemExit(f"error: --tags needs a musicnn run (backbone MSD_musicnn or MTT_musicnn); {run.path} is none")
    return musicnn.tagger(cfg.model.transfer.backbone, input_shape(cfg, None)[0])


def track_tags(run: RunDir, examples, k: int = 5, model=None) -> list[tuple[str, list[tuple[str, float]]]]:
    """Per track, the top-k (tag, probability) of the run's musicnn tagger (`model`, else built), segments averaged."""
    from genre_tf.inputs import split_data
    from genre_tf.models import musicnn

    cfg = run.config
    model = model or tagger(run)
    names = musicnn.TAGS[cfg.model.transfer.backbone]
    data = split_data(examples.frame, cfg, run.classes, None)
    scores = model.predict(data.batches(cfg.train.batch_size), verbose=0)
    tracks, mean, _ = aggregate_tracks(data.track_ids, scores)
    return [
        (track, [(names[i], float(p[i])) for i in np.argsort(p)[::-1][:k]])
        for track, p in zip(tracks, mean, strict=True)
    ]


def tag_lines(run: RunDir, examples, k: int = 5) -> list[str]:
    """Per track, the top-k tags of the run's musicnn backbone (its own pretrained tagger), segments averaged."""
    name = run.config.model.transfer.backbone
    return [
        f"{track}: {name} tags " + ", ".join(f"{tag} {p:.2f}" for tag, p in tags)
        for track, tags in track_tags(run, examples, k)
    ]


def submission(classes: list[str], tracks: np.ndarray, probs: np.ndarray, with_probabilities: bool) -> pd.DataFrame:
    table = pd.DataFrame({"id": tracks, "class": np.array(classes)[probs.argmax(axis=1)]})
    if with_probabilities:
        for i, name in enumerate(classes):
            table[f"p_{name}"] = probs[:, i].round(6)
    return table


def top_k_lines(classes: list[str], tracks: np.ndarray, probs: np.ndarray, k: int) -> list[str]:
    lines = []
    for track, p in zip(tracks, probs, strict=True):
        best = np.argsort(p)[::-1][:k]
        lines.append(f"{track}: " + ", ".join(f"{classes[i]} {p[i]:.3f}" for i in best))
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m genre_tf.predict", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--run", required=True, type=Path, action="append", help="a finished run; several: average them"
    )
    parser.add_argument("inputs", nargs="+", type=Path, help="audio files, folders, or one feature table .csv")
    parser.add_argument("--output", type=Path, help="write id,class CSV here")
    parser.add_argument("--top-k", type=int, default=3, help="genres printed per track")
    parser.add_argument("--probabilities", action="store_true", help="add one probability column per class")
    parser.add_argument("--tags", action="store_true", help="also print the musicnn backbone's own top 5 tags")
    args = parser.parse_args(argv)
    runs = [RunDir(path) for path in args.run]
    for run in runs:
        if not run.model_file.is_file():
            raise SystemExit(f"error: {run.path} has no model.keras (not a finished run directory)")
    classes = runs[0].classes
    if any(run.classes != classes for run in runs):
        raise SystemExit("error: the runs were trained on different classes and cannot be averaged")
    missing = [str(p) for p in args.inputs if not p.exists()]
    if missing:
        raise SystemExit(f"error: no such file or folder: {', '.join(missing)}")
    tracks, probs, skipped = ensemble(runs, args.inputs)
    print_skipped(skipped)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        submission(classes, tracks, probs, args.probabilities).to_csv(args.output, index=False)
        if not skipped.empty:
            skipped.to_csv(args.output.with_suffix(".skipped.csv"), index=False)
        print(f"{len(tracks)} predictions written to {args.output}")
    if not args.output or len(tracks) <= 10:
        print("\n".join(top_k_lines(classes, tracks, probs, args.top_k)))
    if args.tags:
        print("\n".join(tag_lines(runs[0], load_inputs(runs[0], args.inputs))))


if __name__ == "__main__":
    main()
