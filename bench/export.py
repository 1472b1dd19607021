"""Benchmark: exported SavedModel and TFLite files against `predict`, on the 100 real clips of gtzan_mini.

For each run: export both formats (to a temporary folder), then for every clip compare the track probabilities of
`predict` (load_inputs + predict_frame, inputs from the feature cache) with those of the SavedModel
(tf.saved_model.load) and of the TFLite file (tf.lite.Interpreter). Prints, per run and format, the top-1
agreement with predict, the largest probability difference, and the latency per clip: one call of the exported
signature on the decoded waveform, its in-graph preprocessing included (for a table model, on the clip's feature
rows). The default runs are fold 0 of the cross-validation that `make results` trains (saved_models/results/).

With --ensemble DIR it measures instead what an exported ensemble costs against its members: for the ensemble and
each member alone, both formats' size (bytes) and latency (median of --repeats calls, after one warm-up) on one
gtzan_mini clip, and the member that chose it best on valid (ensemble.json; the heaviest where it says nothing).
--stand-ins makes that ensemble first, in a temporary folder: the MSD musicnn linear probe and the augmented CNN of
`make results` (bench/results.py), untrained, equal weights; size and latency depend on the architecture alone.

    .venv/bin/python bench/export.py [--run DIR ...] [--clips 100]
    .venv/bin/python bench/export.py --ensemble DIR | --stand-ins [--repeats 20]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from result_table import record  # bench/result_table.py, beside this script

from genre_tf.evaluation.predictions import predict_frame
from genre_tf.inputs.recipe import InputRecipe
from genre_tf.run import RunDir
from genre_tf.serving.export import artefact_bytes, export
from genre_tf.serving.frontend import read_waveform
from genre_tf.serving.predict import load_inputs

REPO = Path(__file__).resolve().parents[1]
CLIPS = REPO.parent / "shared" / "data" / "gtzan_mini"
RUNS = REPO / "saved_models" / "results"
DEFAULT_RUNS = [
    "cnn_augmented_fold0",
    "musicnn_msd_frozen_fold0",
    "musicnn_msd_probe_fold0",
    "mlp_3s_augmented_fold0",
    "mlp_30s_quantile_refit_fold0",
]


def saved_model_predictor(path: Path):
    """(input -> track probabilities) of a SavedModel's serving signature."""
    import tensorflow as tf

    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    name = next(iter(serve.structured_input_signature[1]))
    return lambda x: serve(**{name: tf.constant(x)})["probabilities"].numpy()


def tflite_predictor(path: Path):
    """(input -> track probabilities) of a TFLite file's serving signature: TensorFlow's interpreter, every core."""
    import tensorflow as tf

    interpreter = tf.lite.Interpreter(model_path=str(path), num_threads=os.cpu_count())
    runner = interpreter.get_signature_runner("serving_default")
    (name,) = runner.get_input_details()
    return lambda x: runner(**{name: x})["probabilities"]


def clip_inputs(run: RunDir, paths: list[Path], examples) -> dict[str, np.ndarray]:
    """Per track id, what the exported model takes: the decoded waveform, or the clip's feature rows."""
    if not run.recipe.reads_features:
        return {path.stem: read_waveform(path, run.recipe) for path in paths}
    rows = examples.frame.groupby("track_id", sort=False)[run.scaler.columns]
    return {track: group.to_numpy(np.float32) for track, group in rows}


def track_probabilities(predictor, x: np.ndarray, per_row: bool) -> tuple[np.ndarray, float]:
    """(track probabilities, seconds): a table model's rows are averaged as predict averages segments."""
    started = time.perf_counter()
    probs = predictor(x)
    seconds = time.perf_counter() - started
    return (probs.mean(axis=0) if per_row else probs), seconds


def bench_run(run: RunDir, paths: list[Path]) -> list[dict]:
    """Agreement, largest difference and latency of both formats of one run, a row each."""
    print(f"{run.path.name}: predicting {len(paths)} clips with predict", flush=True)
    examples = load_inputs(run, paths)
    tracks, expected = predict_frame(run, examples.frame)
    inputs = clip_inputs(run, paths, examples)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for fmt, suffix, load in (("saved_model", "", saved_model_predictor), ("tflite", ".tflite", tflite_predictor)):
            output = Path(tmp) / f"{run.path.name}{suffix}"
            export(run, fmt, output, progress=lambda line: print(f"  {line}", flush=True))
            predictor = load(output)
            results = [track_probabilities(predictor, inputs[t], run.recipe.reads_features) for t in tracks]
            got = np.stack([probs for probs, _ in results])
            agree = np.mean(got.argmax(axis=1) == expected.argmax(axis=1))
            ms = 1000 * np.array([seconds for _, seconds in results])
            rows.append(
                {
                    "run": run.path.name,
                    "format": fmt,
                    "clips": len(tracks),
                    "top-1 agreement": f"{agree:.1%}",
                    "max prob diff": f"{np.abs(got - expected).max():.2e}",
                    "median ms/clip": f"{np.median(ms):.1f}",
                    "mean ms/clip": f"{ms.mean():.1f}",
                }
            )
    return rows


def latencies_ms(predictors: list, inputs: list[np.ndarray], repeats: int) -> list[float]:
    """Median milliseconds of one call of each predictor on its input, after a warm-up call each; the calls go round
    the predictors in turn, so that a change of load on a shared machine falls on all of them alike."""
    times = [[] for _ in predictors]
    for predictor, x in zip(predictors, inputs, strict=True):
        predictor(x)
    for _ in range(repeats):
        for predictor, x, measured in zip(predictors, inputs, times, strict=True):
            started = time.perf_counter()
            predictor(x)
            measured.append(time.perf_counter() - started)
    return [1000 * float(np.median(measured)) for measured in times]


def best_member(ensemble: RunDir) -> tuple[str, str]:
    """(name, why) of the member with the best valid track accuracy alone (ensemble.json's candidates), else of the
    heaviest."""
    members = ensemble.members()
    alone = {c["name"]: c.get("valid_track_accuracy") for c in ensemble.ensemble().get("candidates", [])}
    scores = [alone.get(m.run.path.name) for m in members]
    if all(score is not None for score in scores):
        return members[int(np.argmax(scores))].run.path.name, "best alone on valid"
    return members[int(np.argmax([m.weight for m in members]))].run.path.name, "heaviest"


def bench_ensemble(ensemble: RunDir, clip: Path, repeats: int) -> list[dict]:
    """Size and latency of the exported ensemble and of each member exported alone, on one clip, a row each."""
    best, why = best_member(ensemble)
    runs = [ensemble, *(member.run for member in ensemble.members())]
    labels, sizes, predictors, waveforms = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for run in runs:
            label = f"{run.path.name} (ensemble)" if run is ensemble else run.path.name
            label += f" ({why})" if run.path.name == best else ""
            for fmt, suffix, load in (
                ("saved_model", "", saved_model_predictor),
                ("tflite", ".tflite", tflite_predictor),
            ):
                output = Path(tmp) / f"{run.path.name}{suffix}"
                rate = export(run, fmt, output, progress=lambda line: print(f"  {line}", flush=True))["sample_rate"]
                waveforms.append(waveform_at(clip, runs[1:] if run is ensemble else [run], rate))
                labels.append({"artefact": label, "takes": f"{rate} Hz", "format": fmt})
                sizes.append(artefact_bytes(output))
                predictors.append(load(output))
        times = latencies_ms(predictors, waveforms, repeats)
    return [
        {"ensemble": ensemble.path.name, **label, "bytes": f"{size:,}", "median ms/clip": f"{ms:.1f}"}
        for label, size, ms in zip(labels, sizes, times, strict=True)
    ]


def waveform_at(clip: Path, runs: list[RunDir], rate: int) -> np.ndarray:
    """The clip as an artefact taking `rate` Hz takes it: decoded as the run whose model takes that rate decodes it."""
    from genre_tf.serving.frontend import audio_frontend

    run = next(run for run in runs if audio_frontend(run.recipe).layout.sample_rate == rate)
    return read_waveform(clip, run.recipe)


def stand_in_ensemble(folder: Path) -> RunDir:
    """An ensemble of untrained runs of two `make results` recipes, with equal weights: the MSD musicnn linear probe
    (random weights: its 16 kHz patches are resampled in the ensemble's graph) and the augmented CNN (22050 Hz)."""
    import keras
    from results import EXPERIMENTS  # bench/results.py: the folder of a script run by path is on sys.path

    from genre_tf import models
    from genre_tf.config import load_config, save_config
    from genre_tf.evaluation.pooling import track_pooling

    classes = sorted(p.name for p in CLIPS.iterdir() if p.is_dir())
    members = []
    for name in ("musicnn_msd_probe", "cnn_augmented"):
        overrides = [*EXPERIMENTS[name], f"name={name}", "model.transfer.weights=null"]
        cfg = load_config(REPO / "configs" / "gtzan_mini.yaml", overrides, check_paths=False)
        run = RunDir(folder / "ensemble" / "members" / name)
        run.path.mkdir(parents=True)
        save_config(cfg, run.config_file)
        run.classes_file.write_text(json.dumps(classes))
        keras.utils.set_random_seed(0)
        models.build_model(cfg.model, InputRecipe.of(cfg).shape(), len(classes)).save(run.model_file)
        members.append({"name": name, "weight": 0.5, "pooling": track_pooling(run), "source": "untrained stand-in"})
    ensemble = RunDir(folder / "ensemble")
    shutil.copyfile(ensemble.members_dir / members[0]["name"] / "classes.json", ensemble.classes_file)
    ensemble.ensemble_file.write_text(json.dumps({"selection": "equal", "members": members}))
    return ensemble


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, action="append", help=f"default: {', '.join(DEFAULT_RUNS)} in {RUNS}")
    parser.add_argument("--clips", type=int, default=100)
    parser.add_argument("--ensemble", type=Path, help="an ensemble run: its export's cost against its members'")
    parser.add_argument("--stand-ins", action="store_true", help="--ensemble of untrained results recipes")
    parser.add_argument("--repeats", type=int, default=20, help="with --ensemble: timed calls per artefact")
    args = parser.parse_args()
    paths = sorted(CLIPS.glob("*/*.flac"))[: args.clips]
    if not paths:
        raise SystemExit(f"error: no gtzan_mini clips under {CLIPS}")
    if args.ensemble or args.stand_ins:
        with tempfile.TemporaryDirectory() as tmp:
            ensemble = stand_in_ensemble(Path(tmp)) if args.stand_ins else RunDir(args.ensemble)
            rows = bench_ensemble(ensemble, paths[0], args.repeats)
        load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
        print(f"\none clip: {paths[0].name}; load average {load}")
        print("| run | takes | format | bytes | median ms/clip |\n|---|---|---|---|---|")
        print("\n".join(f"| {r['artefact']} | {r['takes']} | {r['format']} | {r['bytes']} | {r['median ms/clip']} |"
                        for r in rows))  # fmt: skip
        record("export_ensemble", [row | {"clip": paths[0].name, "load average": load} for row in rows], ["ensemble"])
        return
    runs = [RunDir(p) for p in args.run or [RUNS / name for name in DEFAULT_RUNS]]
    missing = [str(run.path) for run in runs if not run.model_file.is_file()]
    if missing:
        raise SystemExit(f"error: no trained run at {', '.join(missing)} (make results trains them, or give --run)")
    rows = [row for run in runs for row in bench_run(run, paths)]
    print("\n| run | format | clips | top-1 agreement | max prob diff | median ms/clip | mean ms/clip |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join("| " + " | ".join(str(v) for v in row.values()) + " |" for row in rows))
    record("export", rows, key=["run"])


if __name__ == "__main__":
    main()
