"""Benchmark: the exported signatures for other rates (`waveform_<rate>`) against `predict` on gtzan_mini's clips.

`predict` resamples with soxr (`audio.load_track`, and for musicnn `musicnn_input.to_musicnn_rate`); an exported
model resamples in its graph (`preprocessing.layers.Resample`), which is close to soxr but not equal. For each
family a run is made from the shipped config (`configs/musicnn.yaml`: the pretrained MSD backbone under a new head;
`configs/cnn.yaml`) by bench/predict.py's `make_run`, and its softmax layer is then fitted (logistic regression on
the layer's inputs) to the clips' segments, so that its answers are confident and differ from clip to clip: what is
measured is the preprocessing, not accuracy. Then every clip, decoded as predict decodes it (22050 Hz), is resampled
with soxr to each rate and given to the exported SavedModel's signature for that rate (at the model's own rate,
serving_default's graph, which has no resampler). Printed per family and rate, over the clips' track
probabilities: top-1 agreement and the largest and mean probability difference against predict on the clip, and
against predict on the same audio at that rate (written as a float WAV file, which predict resamples with soxr:
both then start from the same samples and differ by their resamplers alone); and the signature's median time per
30 s clip.

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
from predict import SHARED_DATA, make_run, spread_clips  # bench/predict.py, beside this script
from result_table import record  # bench/result_table.py, beside this script

FAMILIES = {"musicnn": "musicnn.yaml", "cnn": "cnn.yaml"}


def fit_head(run_path: Path, paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """Fit the run's softmax layer to the clips' segments; returns predict's (track ids, track probabilities)."""
    import keras
    from sklearn.linear_model import LogisticRegression

    from genre_tf.evaluation.predictions import predict_frame
    from genre_tf.inputs.examples import split_data
    from genre_tf.run import RunDir
    from genre_tf.serving.predict import load_inputs

    run = RunDir(run_path)
    model = run.load_model()
    frame = load_inputs(run, paths, progress=False).frame
    data = split_data(frame, run.recipe, run.classes, None)
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
    """The clips as predict decodes them (the run's rate), resampled with soxr to `rate` as genre_tf.features.audio
    does."""
    import librosa

    from genre_tf.features.audio import load_track
    from genre_tf.run import RunDir

    audio = RunDir(run_path).config.audio
    decoded = [load_track(path, audio) for path in paths]
    return [librosa.resample(y, orig_sr=audio.sample_rate, target_sr=rate, res_type="soxr_hq") for y in decoded]


def predicted_at_rate(run_path: Path, paths: list[Path], waveforms: list[np.ndarray], rate: int, folder: Path):
    """predict's track probabilities for the waveforms written as float WAV files at `rate`, in clip order."""
    import soundfile as sf

    from genre_tf.data.index import index_paths
    from genre_tf.evaluation.predictions import predict_frame
    from genre_tf.run import RunDir
    from genre_tf.serving.predict import load_inputs

    files = []
    for path, y in zip(paths, waveforms, strict=True):
        (folder / path.parent.name).mkdir(parents=True, exist_ok=True)
        files.append(folder / path.parent.name / f"{path.stem}.wav")
        sf.write(files[-1], y, rate, subtype="FLOAT")
    run = RunDir(run_path)
    tracks, probs = predict_frame(run, load_inputs(run, files, progress=False).frame)
    by_track = dict(zip(tracks, probs, strict=True))
    return np.stack([by_track[track] for track in index_paths(files).tracks.track_id])


def agreement_figures(got: np.ndarray, want: np.ndarray) -> tuple[float, float, float]:
    """Top-1 agreement, largest and mean absolute probability difference."""
    diff = np.abs(got - want)
    return float(np.mean(got.argmax(axis=1) == want.argmax(axis=1))), float(diff.max()), float(diff.mean())


def agreement(got: np.ndarray, want: np.ndarray) -> str:
    top1, most, mean = agreement_figures(got, want)
    return f"top-1 {top1:6.1%}, max {most:.4f}, mean {mean:.5f}"


def agreement_cell(got: np.ndarray, want: np.ndarray) -> str:
    """The figures of `agreement` as a table shows them: top-1, max, mean."""
    top1, most, mean = agreement_figures(got, want)
    return f"{top1:.0%}, {most:.2g}, {mean:.2g}"


def bench_family(name: str, paths: list[Path], classes: list[str], tmp: Path) -> list[dict]:
    """Print, per rate, the agreement of the run's exported signature for that rate with predict; a row each."""
    import tensorflow as tf

    from genre_tf.data.index import index_paths
    from genre_tf.run import RunDir
    from genre_tf.serving.export import export
    from genre_tf.serving.frontend import EXPORT_RATES, rate_signature

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
    rows = []
    for rate in EXPORT_RATES:
        key = rate_signature(rate)
        serve = signatures[key]
        waveforms = rate_inputs(run_path, paths, rate)
        got, seconds = [], []
        for y in waveforms:
            started = time.perf_counter()
            got.append(serve(waveform=tf.constant(y, tf.float32))["probabilities"].numpy())
            seconds.append(time.perf_counter() - started)
        same_audio = predicted_at_rate(run_path, paths, waveforms, rate, tmp / f"{name}_{rate}")
        to = metadata["sample_rate"]
        graph = "no resampler in the graph" if rate == to else f"resampled in the graph to {to} Hz"
        print(f"  {key}: {1000 * np.median(seconds[1:]):4.0f} ms per clip ({graph})", flush=True)
        print(f"    against predict on the clip:                 {agreement(np.stack(got), expected)}")
        print(f"    against predict on the same audio at {rate}: {agreement(np.stack(got), same_audio)}", flush=True)
        rows.append(
            {
                "run": name,
                "clips": len(paths),
                "mean top probability": round(float(expected.max(axis=1).mean()), 2),
                "signature": key + (" (serving_default)" if rate == to else ""),
                "in the graph": "no resampler" if rate == to else f"{rate} -> {to} Hz",
                "against predict on the clip: top-1, max, mean": agreement_cell(np.stack(got), expected),
                "against predict on the same audio at that rate": agreement_cell(np.stack(got), same_audio),
                "ms per 30 s clip": round(1000 * np.median(seconds[1:])),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=100, help="clips of gtzan_mini (default all 100)")
    parser.add_argument("--data", type=Path, default=SHARED_DATA / "gtzan_mini", help="folder of <genre>/*.flac")
    parser.add_argument("--families", nargs="*", default=list(FAMILIES), choices=list(FAMILIES))
    args = parser.parse_args()
    if not args.data.is_dir():
        raise SystemExit(f"no clips: {args.data} is not a folder")
    paths = spread_clips(args.data, args.clips)
    classes = sorted({p.parent.name for p in paths})
    with tempfile.TemporaryDirectory() as tmp_name:
        rows = [row for name in args.families for row in bench_family(name, paths, classes, Path(tmp_name))]
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"(cores: {len(os.sched_getaffinity(0))}; load average now {load})")
    record("export_rates", [row | {"load average at the end": load} for row in rows], key=["run", "clips"])


if __name__ == "__main__":
    main()
