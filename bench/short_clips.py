"""Benchmark: how to predict a clip shorter than one 3 s patch with musicnn, measured on tracks no model heard.

For each gtzan_mini fold, the musicnn run that `make results` trained on the other folds
(`saved_models/results/musicnn_msd_frozen_fold<k>`) predicts excerpts of its test tracks (2.0 and 2.5 s, cut at
5, 12 and 20 s into each track), made into its input three ways:
- tile: the excerpt repeated end to end to fill 3 s (what `predict` does for short clips, `audio.short_clips: tile`);
- pad: the excerpt followed by silence up to 3 s;
- native: a patch of the excerpt's own length through the same network (musicnn is convolutional up to its
  global pooling, so the weights take any length).
Prints the accuracy of each way per excerpt length, over all folds.

    .venv/bin/python bench/short_clips.py [--model musicnn_msd_frozen]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from genre_tf.audio import load_track, segment_samples, tile_to_segment
from genre_tf.musicnn_input import patch_frames, segment_patches

RESULTS = Path(__file__).resolve().parents[1] / "saved_models" / "results"
LENGTHS = (2.0, 2.5)
OFFSETS = (5.0, 12.0, 20.0)
WAYS = ("tile", "pad", "native")


def excerpt_input(y: np.ndarray, way: str, cfg) -> np.ndarray:
    """(1, frames, 96) mel power patch of an excerpt shorter than one segment, made `way`."""
    sr, full = cfg.audio.sample_rate, segment_samples(cfg.audio)
    if way == "tile":
        y = tile_to_segment(y, cfg.audio)
    elif way == "pad":
        y = np.pad(y, (0, full - len(y)))
    frames = patch_frames(len(y) / sr) if way == "native" else patch_frames(cfg.audio.segment_seconds)
    return segment_patches(y, sr, [(0, len(y))], frames).astype(np.float32)


def fold_rows(run_dir: Path) -> list[dict]:
    """Accuracy inputs of one fold: one row per (test track, excerpt length, offset, way)."""
    from genre_tf.inputs import load_examples
    from genre_tf.models import build_model
    from genre_tf.run import RunDir

    run = RunDir(run_dir)
    cfg = run.config
    trained = run.load_model()
    native = build_model(cfg.model, (None, 96), len(run.classes))  # same weights, any patch length
    native.set_weights(trained.get_weights())
    tracks = load_examples(cfg, progress=False).split("test").drop_duplicates("track_id")
    index = pd.read_csv(Path(cfg.cache.dir) / "prepared" / cfg.name / "index.csv").set_index("track_id")
    rows = []
    for track in tracks.itertuples():
        y = load_track(index.loc[track.track_id, "path"], cfg.audio)
        for length in LENGTHS:
            for offset in OFFSETS:
                start = round(offset * cfg.audio.sample_rate)
                excerpt = y[start : start + round(length * cfg.audio.sample_rate)]
                for way in WAYS:
                    model = native if way == "native" else trained
                    probs = model.predict(excerpt_input(excerpt, way, cfg), verbose=0)[0]
                    correct = run.classes[int(probs.argmax())] == track.label
                    rows.append({"length": length, "way": way, "correct": correct})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="musicnn_msd_frozen", help="experiment name in bench/results.py")
    args = parser.parse_args()
    runs = sorted(RESULTS.glob(f"{args.model}_fold[0-9]"))
    if not runs:
        raise SystemExit(f"error: no {args.model}_fold<k> runs under {RESULTS}; run `make results` first")
    rows = [row for run in runs for row in fold_rows(run)]
    table = pd.DataFrame(rows).pivot_table(index="length", columns="way", values="correct", aggfunc="mean")
    n = len(rows) // (len(LENGTHS) * len(WAYS))
    print(f"{args.model}, {len(runs)} folds, {n} excerpts per length and way (test tracks only): accuracy")
    print(table[list(WAYS)].round(3).to_string())


if __name__ == "__main__":
    main()
