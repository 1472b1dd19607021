"""Benchmark: how to predict a clip shorter than one segment, measured on tracks no model heard.

For each gtzan_mini fold, a run that `make results` trained on the other folds (default: frozen MSD_musicnn
and the augmented CNN, `saved_models/results/<model>_fold<k>`) predicts excerpts of its test tracks (2.0 and
2.5 s, cut at 5, 12 and 20 s into each track, shorter than the 3 s segments), made into its input three ways:
- tile: the excerpt repeated end to end to fill a segment (what `predict` does, `audio.short_clips: tile`);
- pad: the excerpt followed by silence up to a segment;
- native: the excerpt at its own length through the same weights (both networks are convolutional up to a
  global pooling: a musicnn patch of fewer frames; for the CNN, a mel image of fewer frames resized in
  proportion, so time keeps its scale).
Prints the accuracy of each way per model and excerpt length, over all folds.

An ensemble run of `make results` (`--ensembles`, default the musicnn probe with the refitted CNN, its members
weighted by valid's greedy choice and alike) is measured the way `predict` meets a short file: each excerpt is
written as a file and predicted by `predict --run ENSEMBLE` (tiled, every member preprocessing it its own way), beside
each of its candidates (kept by the selection or not) predicting the same files alone.

    .venv/bin/python bench/short_clips.py [--models musicnn_msd_frozen,cnn_augmented]
                                          [--ensembles ensemble_probe_cnn_greedy,ensemble_probe_cnn_equal]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from result_table import record  # bench/result_table.py, beside this script

from genre_tf.features.analysis import analyse_track
from genre_tf.features.audio import load_track, segment_samples, tile_to_segment

RESULTS = Path(__file__).resolve().parents[1] / "saved_models" / "results"
LENGTHS = (2.0, 2.5)
OFFSETS = (5.0, 12.0, 20.0)
WAYS = ("tile", "pad", "native")


def made(y: np.ndarray, way: str, cfg) -> np.ndarray:
    """The excerpt tiled or padded to one segment, or as it is."""
    if way == "tile":
        return tile_to_segment(y, cfg.audio)
    if way == "pad":
        return np.pad(y, (0, segment_samples(cfg.audio) - len(y)))
    return y


def model_input(y: np.ndarray, cfg, kind: str) -> np.ndarray:
    """(1, ...) input of a waveform as one segment: the musicnn patch, or the mel image at the model's height."""
    from genre_tf.features.mel import db_to_unit
    from genre_tf.inputs.layers import MelImage
    from genre_tf.models import MUSICNN_PATCH

    analysis = analyse_track(y, cfg.audio.sample_rate, cfg.features, cfg.mel, [(0, len(y))])
    if kind == MUSICNN_PATCH:
        return analysis.musicnn_segments.astype(np.float32)
    unit = db_to_unit(analysis.mel_segments[0], cfg.mel)[::-1][None, ..., None]  # row 0 = highest band, as PNGs
    full_frames = 1 + segment_samples(cfg.audio) // cfg.mel.hop_length
    height, width = cfg.model.image_size
    width = round(width * unit.shape[2] / full_frames)  # the same time scale as a whole segment's image
    return MelImage((height, width), cfg.model.channels, cfg.model.channel_mode)(unit).numpy()


def fold_rows(run_dir: Path) -> list[dict]:
    """One row per (test track, excerpt length, offset, way): whether the run's top genre is the track's."""
    from genre_tf.extract.prepared import prepare
    from genre_tf.models import MUSICNN_PATCH, build_model
    from genre_tf.run import RunDir

    run = RunDir(run_dir)
    cfg = run.config
    kind = run.recipe.representation
    trained = run.load_model()
    shape = run.recipe.shape(run.scaler)
    native_shape = (None, shape[1]) if kind == MUSICNN_PATCH else (shape[0], None, shape[2])
    native = build_model(cfg.model, native_shape, len(run.classes))  # the same weights, any length
    native.set_weights(trained.get_weights())
    tracks = prepare(cfg, progress=False).tracks
    rows = []
    for track in tracks[tracks.split == "test"].itertuples():
        y = load_track(track.path, cfg.audio)
        for length in LENGTHS:
            for offset in OFFSETS:
                start = round(offset * cfg.audio.sample_rate)
                excerpt = y[start : start + round(length * cfg.audio.sample_rate)]
                for way in WAYS:
                    x = model_input(made(excerpt, way, cfg), cfg, kind)
                    probs = (native if way == "native" else trained).predict(x, verbose=0)[0]
                    rows.append({"length": length, "way": way, "correct": run.classes[probs.argmax()] == track.label})
    return rows


def excerpt_files(run_dir: Path, folder: Path) -> pd.DataFrame:
    """Every excerpt of the test tracks of a run's fold as a WAV file at the clip's own rate, named
    <track>@<length>s<offset>; (track_id of the file, length, label)."""
    import soundfile

    from genre_tf.extract.prepared import config_index
    from genre_tf.run import RunDir

    run = RunDir(run_dir)
    tracks = config_index(run.config, progress=False).tracks
    rows = []
    for track in tracks[tracks.split == "test"].itertuples():
        y, rate = soundfile.read(track.path, dtype="float32", always_2d=True)
        for length in LENGTHS:
            for offset in OFFSETS:
                name = f"{track.track_id}@{length}s{offset:g}"
                excerpt = y[round(offset * rate) : round((offset + length) * rate)]
                soundfile.write(folder / f"{name}.wav", excerpt, rate)
                rows.append({"track_id": name, "length": length, "label": track.label})
    return pd.DataFrame(rows)


def ensemble_rows(run_dir: Path) -> list[dict]:
    """One row per (excerpt, predictor): whether `predict` with the ensemble run, or with one of its candidates alone,
    names the excerpt's track's genre. Every candidate is measured, kept or not (from its run directory, as
    ensemble.json names it), so each member column covers the same excerpts on every fold."""
    import tempfile

    from genre_tf.run import RunDir
    from genre_tf.serving.predict import ensemble

    run = RunDir(run_dir)
    candidates = {c["name"]: RunDir(Path(c["source"])) for c in run.ensemble()["candidates"]}
    predictors = {"ensemble": run} | {name.rsplit("_fold", 1)[0]: found for name, found in candidates.items()}
    with tempfile.TemporaryDirectory() as folder:
        excerpts = excerpt_files(run.members()[0].run.path, Path(folder)).set_index("track_id")
        files = sorted(Path(folder).glob("*.wav"))
        rows = []
        for name, predictor in predictors.items():
            tracks, probs, _ = ensemble([predictor], files)
            top = np.array(run.classes)[probs.argmax(axis=1)]
            for track, genre in zip(tracks, top, strict=True):
                truth = excerpts.loc[track]
                rows.append({"predictor": name, "length": truth.length, "correct": genre == truth.label})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="musicnn_msd_frozen,cnn_augmented", help="experiments of bench/results.py")
    parser.add_argument("--ensembles", default="ensemble_probe_cnn_greedy,ensemble_probe_cnn_equal",
                        help="ensembles of bench/results.py, measured through predict ('' for none)")  # fmt: skip
    args = parser.parse_args()
    for name in filter(None, args.ensembles.split(",")):
        runs = sorted(RESULTS.glob(f"{name}_fold[0-9]"))
        if not runs:
            raise SystemExit(f"error: no {name}_fold<k> runs under {RESULTS}; run `make results` first")
        rows = pd.DataFrame([row for run in runs for row in ensemble_rows(run)])
        table = rows.pivot_table(index="length", columns="predictor", values="correct", aggfunc="mean")
        n = len(rows) // (len(LENGTHS) * rows.predictor.nunique())  # every predictor meets every excerpt
        print(f"{name}, {len(runs)} folds, {n} excerpts per length (test tracks only), tiled by predict: accuracy")
        table = table[["ensemble", *[c for c in table.columns if c != "ensemble"]]].round(3)
        print(table.to_string())
        # "ensemble run", since the column "ensemble" is the ensemble's accuracy
        head = {"ensemble run": name, "folds": len(runs), "excerpts per length": n}
        rows = [head | {"length": f"{length:g} s", **accuracy} for length, accuracy in table.iterrows()]
        record("short_clips_ensembles", rows, key=["ensemble run"])
    for model in filter(None, args.models.split(",")):
        runs = sorted(RESULTS.glob(f"{model}_fold[0-9]"))
        if not runs:
            raise SystemExit(f"error: no {model}_fold<k> runs under {RESULTS}; run `make results` first")
        rows = pd.DataFrame([row for run in runs for row in fold_rows(run)])
        table = rows.pivot_table(index="length", columns="way", values="correct", aggfunc="mean")[list(WAYS)]
        n = len(rows) // (len(LENGTHS) * len(WAYS))
        print(f"{model}, {len(runs)} folds, {n} excerpts per length and way (test tracks only): accuracy")
        print(table.round(3).to_string())
        head = {"model": model, "folds": len(runs), "excerpts per length and way": n}
        rows = [head | {"length": f"{length:g} s", **accuracy} for length, accuracy in table.round(3).iterrows()]
        record("short_clips", rows, key=["model"])


if __name__ == "__main__":
    main()
