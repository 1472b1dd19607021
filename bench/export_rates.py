"""Benchmark: the exported signatures for other rates (`waveform_<rate>`) against `predict` on gtzan_mini's clips.

`predict` resamples with soxr (`audio.load_track`, and for musicnn `musicnn_input.to_musicnn_rate`); an exported
model resamples in its graph (`preprocessing.layers.Resample`), which is close to soxr but not equal. For each
family a run is made from the shipped config (`configs/musicnn.yaml`: the pretrained MSD backbone under a new head;
`configs/cnn.yaml`) by bench/predict.py's `make_run`, and its softmax layer is then fitted (logistic regression on
the layer's inputs) to the clips' segments, so that its answers are confident and differ from clip to clip: what is
measured is the preprocessing, not accuracy. Then every clip, decoded as predict decodes it (22050 Hz), is resampled
with soxr to each rate and given to the exported SavedModel's signature for that rate (16 kHz for musicnn: the
clip resampled to 16 kHz as the cache does, through serving_default, the path with no resampler in the graph).
Printed per family and rate: top-1 agreement with predict and the largest and mean probability difference over
the clips' track probabilities, and the signature's median time per 30 s clip.

    .venv/bin/python bench/export_rates.py [--clips 100] [--families musicnn cnn]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from predict import SHARED_DATA, make_run  # bench/predict.py, beside this script

FAMILIES = {"musicnn": "musicnn.yaml", "cnn": "cnn.yaml"}


def fit_head(run_path: Path, paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """Fit the run's softmax layer to the clips' segments; returns predict's (track ids, track probabilities)."""
    import keras
    from sklearn.linear_model import LogisticRegression

    from genre_tf.inputs import split_data
    from genre_tf.predict import load_inputs, predict_frame
    from genre_tf.run import RunDir

    run = RunDir(run_path)
    model = run.load_model()
    frame = load_inputs(run, paths, progress=False).frame
    data = split_data(frame, run.config, run.classes, None)
    head = model.get_layer("predictions")
    features = keras.Model(model.inputs, head.input).predict(data.batches(64), verbose=0)
    mean, std = features.mean(axis=0), features.std(axis=0) + 1e-6
    genres = [run.classes.index(track.split(".")[0]) for track in frame["track_id"]]  # GTZAN ids: genre.NNNNN
    fitted = LogisticRegression(C=0.1, max_iter=2000).fit((features - mean) / std, genres)
    kernel = (fitted.coef_ / std).T
    head.set_weights([kernel.astype(np.float32), (fitted.intercept_ - mean @ kernel).astype(np.float32)])
    model.save(run.model_file)
    return predict_frame(run, frame)


def rate_inputs(run_path: Path, paths: list[Path], rate: int) -> list[np.ndarray]:
    """The clips as predict decodes them, resampled with soxr to `rate` (for musicnn's own 16 kHz: as the cache)."""
    import librosa

    from genre_tf.audio import load_track
    from genre_tf.export import read_waveform
    from genre_tf.inputs import model_input
    from genre_tf.models import MUSICNN_PATCH
    from genre_tf.run import RunDir

    cfg = RunDir(run_path).config
    if rate == 16000 and model_input(cfg) == MUSICNN_PATCH:
        return [read_waveform(path, cfg) for path in paths]
    decoded = [load_track(path, cfg.audio) for path in paths]
    return [librosa.resample(y, orig_sr=cfg.audio.sample_rate, target_sr=rate, res_type="soxr_hq") for y in decoded]


def bench_family(name: str, paths: list[Path], classes: list[str], tmp: Path) -> None:
    """Print, per rate, the agreement of the run's exported signature for that rate with predict."""
    import tensorflow as tf

    from genre_tf.dataset import index_paths
    from genre_tf.export import EXPORT_RATES, export, rate_signature
    from genre_tf.run import RunDir

    run_path = make_run(tmp / "runs" / name, FAMILIES[name], classes, tmp / f"cache_{name}")
    print(f"{name}: predicting {len(paths)} clips and fitting the head", flush=True)
    tracks, expected = fit_head(run_path, paths)
    by_track = dict(zip(tracks, expected, strict=True))
    expected = np.stack([by_track[track] for track in index_paths(paths).tracks.track_id])
    saved = tmp / f"{name}_saved_model"
    with contextlib.redirect_stdout(io.StringIO()):
        metadata = export(RunDir(run_path), "saved_model", saved, progress=lambda line: None)
    signatures = tf.saved_model.load(str(saved)).signatures
    print(f"{name}: predict's top-1 spans {len(set(expected.argmax(axis=1)))} classes, mean top probability "
          f"{expected.max(axis=1).mean():.2f}; serving_default takes {metadata['sample_rate']} Hz")  # fmt: skip
    for rate in EXPORT_RATES:
        key = rate_signature(rate)
        serve = signatures[key]
        got, seconds = [], []
        for y in rate_inputs(run_path, paths, rate):
            started = time.perf_counter()
            got.append(serve(waveform=tf.constant(y, tf.float32))["probabilities"].numpy())
            seconds.append(time.perf_counter() - started)
        got = np.stack(got)
        diff = np.abs(got - expected)
        agree = np.mean(got.argmax(axis=1) == expected.argmax(axis=1))
        to = metadata["sample_rate"]
        graph = "no resampler in the graph" if rate == to else f"resampled in the graph to {to} Hz"
        print(f"  {key:15s} top-1 {agree:6.1%}  max |diff| {diff.max():.4f}  mean |diff| {diff.mean():.5f}  "
              f"{1000 * np.median(seconds[1:]):5.0f} ms per clip  ({graph})", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=100, help="clips of gtzan_mini (default all 100)")
    parser.add_argument("--data", type=Path, default=SHARED_DATA / "gtzan_mini", help="folder of <genre>/*.flac")
    parser.add_argument("--families", nargs="*", default=list(FAMILIES), choices=list(FAMILIES))
    args = parser.parse_args()
    if not args.data.is_dir():
        raise SystemExit(f"no clips: {args.data} is not a folder")
    paths = sorted(args.data.glob("*/*.flac"))
    paths = paths[:: max(1, len(paths) // args.clips)][: args.clips]
    classes = sorted({p.parent.name for p in paths})
    with tempfile.TemporaryDirectory() as tmp_name:
        for name in args.families:
            bench_family(name, paths, classes, Path(tmp_name))
    print(f"(cores: {len(os.sched_getaffinity(0))}; load average now {', '.join(f'{x:.1f}' for x in os.getloadavg())})")


if __name__ == "__main__":
    main()
