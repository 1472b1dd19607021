"""Benchmark: a musicnn probe's predictions four ways, side by side: a backbone pass per patch or timbral
convolutions shared across a clip's overlapping patches, each in float32 and bfloat16.

For each fold of gtzan_mini's grouped 5-fold cross-validation, the musicnn probe of bench/unknown.py (found, or
trained) predicts its 20 test tracks from the same decoded waveforms in four processes, called in turn clip by clip
(the order rotating, so that the load falls on all):
- per patch, float32: the reference, as `predict` ran before the shared pass: the exported front end's patches
  (`frontend.cut_segments`) through the whole model, `train.batch_size` at a time;
- shared, float32: `predict` now (`AudioGraph`: `BackboneFeatures`, `models.musicnn.shared_patches_network`);
- both with `--compute bfloat16` (TensorFlow's oneDNN bfloat16 rewrite, which holds for a whole process).
Per fold and way: track accuracy, top-1 agreement with the reference and the largest track-probability difference,
milliseconds per 30 s clip of decoding (shared) and of the front end + network, clips per second and the speed-up
over the reference; then the network's multiply-adds per patch against this machine's float32 matrix-multiply
rate. Rows go to bench/results/musicnn_compute.csv and .md.

    .venv/bin/python bench/musicnn_compute.py [--folds 0,1,2,3,4]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import result_table  # noqa: E402
from results import SHARED  # noqa: E402
from unknown import MODEL, train_run  # noqa: E402

WAYS = (("per patch", "float32"), ("shared", "float32"), ("per patch", "bfloat16"), ("shared", "bfloat16"))


class ModelProcess:
    """The run's AudioGraph in a process of its own, per segment or whole clip, traced with TensorFlow's oneDNN
    bfloat16 rewrite on or off (the option holds for a whole process): `predict(waveform)` returns the segments'
    probabilities and the call's seconds (front end and network)."""

    def __init__(self, run_path: Path, way: tuple[str, str]):
        import multiprocessing

        self.pipe, child = multiprocessing.get_context("spawn").Pipe()
        self.process = multiprocessing.get_context("spawn").Process(
            target=serve_model, args=(child, run_path, way), daemon=True
        )
        self.process.start()
        self.pipe.recv()  # ready: loaded and traced

    def predict(self, waveform: np.ndarray) -> tuple[np.ndarray, float]:
        self.pipe.send(waveform)
        return self.pipe.recv()

    def close(self) -> None:
        self.pipe.send(None)
        self.process.join(timeout=30)


def serve_model(pipe, run_path: Path, way: tuple[str, str]) -> None:
    from genre_tf.run import RunDir
    from genre_tf.serving.compute import use_compute

    use_compute(way[1])
    run = RunDir(run_path)
    predict = (per_patch if way[0] == "per patch" else shared)(run)
    predict(np.zeros(run.recipe.audio.sample_rate, np.float32))  # traced before the first clip
    pipe.send("ready")
    while (waveform := pipe.recv()) is not None:
        started = time.perf_counter()
        probs = predict(waveform)
        pipe.send((probs, time.perf_counter() - started))


def per_patch(run):
    """The segments' probabilities as `predict` computed them before the shared pass: the exported front end's
    patches through the whole model, `train.batch_size` at a time."""
    import tensorflow as tf

    from genre_tf.serving.audio_graph import in_batches
    from genre_tf.serving.frontend import audio_frontend, cut_segments

    frontend, model, size = audio_frontend(run.recipe), run.load_model(), run.config.train.batch_size
    patches = tf.function(lambda waveform: cut_segments(waveform, frontend))
    call = tf.function(lambda batch: {"probabilities": model(batch, training=False)})
    return lambda waveform: in_batches(call, patches(waveform).numpy(), size)["probabilities"]


def shared(run):
    from genre_tf.serving.audio_graph import AudioGraph

    graph = AudioGraph(run, run.load_model())
    return lambda waveform: graph.batch(graph.segments(waveform)[0])["probabilities"]


def multiply_adds(model) -> int:
    """Multiply-adds of one patch through the model's convolutions and dense layers."""
    import keras

    total = 0
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.Conv2D | keras.layers.Conv1D):
            total += int(np.prod(layer.output.shape[1:-1])) * int(np.prod(layer.kernel.shape))
        elif isinstance(layer, keras.layers.Dense):
            total += int(np.prod(layer.output.shape[1:-1] or [1])) * int(np.prod(layer.kernel.shape))
    return total


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    a @ a
    started = time.perf_counter()
    for _ in range(repeats):
        a @ a
    return repeats * 2 * n**3 / (time.perf_counter() - started) / 1e9


def fold_rows(fold: int) -> list[dict]:
    from genre_tf.data.index import index_folder
    from genre_tf.evaluation.predictions import track_probabilities
    from genre_tf.inputs.examples import load_examples
    from genre_tf.serving.frontend import read_waveform

    run = train_run(f"{MODEL}_fold{fold}", [f"data.fold={fold}"])
    test = load_examples(run.config, progress=False).split("test").drop_duplicates("track_id")
    paths = index_folder(SHARED / "gtzan_mini").tracks.set_index("track_id").path
    processes = [ModelProcess(run.path, way) for way in WAYS]
    decoding, seconds, answers, segments = 0.0, np.zeros(len(WAYS)), [[] for _ in WAYS], 0
    for i, track in enumerate(test.itertuples()):
        started = time.perf_counter()
        waveform = read_waveform(Path(paths[track.track_id]), run.recipe)
        decoding += time.perf_counter() - started
        for k in np.roll(np.arange(len(WAYS)), i):  # each way first in turn
            probs, took = processes[k].predict(waveform)
            seconds[k] += took
            none = np.zeros(len(probs), int)
            answers[k].append(track_probabilities(run, none, probs, none)[1][0])
        segments += len(probs)
    for process in processes:
        process.close()
    labels = np.array([run.classes.index(label) for label in test.label])
    probs = [np.stack(a) for a in answers]
    top1 = [p.argmax(1) for p in probs]
    n = len(test)
    per_clip = (decoding + seconds) / n
    return [
        {
            "model": MODEL,
            "fold": fold,
            "pass": way[0],
            "compute": way[1],
            "test tracks": n,
            "segments per clip": round(segments / n, 1),
            "track accuracy": round(float(np.mean(top1[k] == labels)), 3),
            "top-1 agreement with per patch float32": round(float(np.mean(top1[k] == top1[0])), 3),
            "max probability difference": round(float(np.abs(probs[k] - probs[0]).max()), 4),
            "decoding ms/clip": round(1000 * decoding / n),
            "front end + network ms/clip": round(1000 * seconds[k] / n),
            "clips/s": round(1 / per_clip[k], 2),
            "speed-up": round(per_clip[0] / per_clip[k], 2),
            "load average": round(os.getloadavg()[0], 1),
        }
        for k, way in enumerate(WAYS)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", default="0,1,2,3,4")
    args = parser.parse_args()
    rows = []
    for fold in [int(f) for f in args.folds.split(",")]:
        rows += fold_rows(fold)
        for row in rows[-len(WAYS) :]:
            print(row, flush=True)
    run = train_run(f"{MODEL}_fold0", ["data.fold=0"])
    macs, rate = multiply_adds(run.load_model()), matmul_gflops()
    floor = 2 * macs / (rate * 1e9) * 1000
    print(f"{MODEL}: {macs / 1e9:.2f} G multiply-adds per patch; float32 matrix multiply here: {rate:.0f} GFLOP/s, "
          f"so at least {floor:.1f} ms per patch at that rate")  # fmt: skip
    for row in rows:
        row["G multiply-adds per patch"] = round(macs / 1e9, 2)
        row["ms per patch at the matmul rate"] = round(floor, 1)
    result_table.record("musicnn_compute", rows, key=["model", "fold", "pass", "compute"])


if __name__ == "__main__":
    main()
