"""Benchmark: a musicnn probe computed in float32 and in bfloat16 (`--compute bfloat16`), side by side.

For each fold of gtzan_mini's grouped 5-fold cross-validation, the musicnn probe of bench/unknown.py (found, or
trained) predicts its 20 test tracks twice: the same model's AudioGraph in two processes, one with TensorFlow's
oneDNN bfloat16 rewrite off, one with it on (the option holds for a whole process), called alternately clip by clip
on the same decoded segments. Per fold: track accuracy of each, top-1 agreement, the largest track-probability
difference, and the milliseconds per 30 s clip of decoding + front end (shared) and of each model call; and the
network's multiply-adds per patch against this machine's float32 matrix-multiply rate. Rows go to
bench/results/musicnn_compute.csv and .md.

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


class ModelProcess:
    """The run's AudioGraph in a process of its own, traced with TensorFlow's oneDNN bfloat16 rewrite on or off (the
    option holds for a whole process): `batch(inputs)` returns the segments' probabilities and the call's seconds."""

    def __init__(self, run_path: Path, bfloat16: bool):
        import multiprocessing

        self.pipe, child = multiprocessing.get_context("spawn").Pipe()
        self.process = multiprocessing.get_context("spawn").Process(
            target=serve_model, args=(child, run_path, bfloat16), daemon=True
        )
        self.process.start()
        self.pipe.recv()  # ready: loaded and traced

    def batch(self, inputs: np.ndarray) -> tuple[np.ndarray, float]:
        self.pipe.send(inputs)
        return self.pipe.recv()

    def close(self) -> None:
        self.pipe.send(None)
        self.process.join(timeout=30)


def serve_model(pipe, run_path: Path, bfloat16: bool) -> None:
    import tensorflow as tf

    tf.config.optimizer.set_experimental_options({"auto_mixed_precision_onednn_bfloat16": bfloat16})
    from genre_tf.run import RunDir
    from genre_tf.serving.audio_graph import AudioGraph

    run = RunDir(run_path)
    graph = AudioGraph(run, run.load_model())
    pipe.send("ready")
    while (inputs := pipe.recv()) is not None:
        started = time.perf_counter()
        probs = graph.batch(inputs)["probabilities"]
        pipe.send((probs, time.perf_counter() - started))


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


def fold_row(fold: int) -> dict:
    from genre_tf.data.index import index_folder
    from genre_tf.evaluation.predictions import track_probabilities
    from genre_tf.inputs.examples import load_examples
    from genre_tf.serving.frontend import read_waveform

    run = train_run(f"{MODEL}_fold{fold}", [f"data.fold={fold}"])
    test = load_examples(run.config, progress=False).split("test").drop_duplicates("track_id")
    paths = index_folder(SHARED / "gtzan_mini").tracks.set_index("track_id").path
    from genre_tf.serving.audio_graph import AudioGraph

    frontend = AudioGraph(run, run.load_model())  # its segments: the front end both processes take
    exact, fast = ModelProcess(run.path, bfloat16=False), ModelProcess(run.path, bfloat16=True)
    seconds = {"decode + front end": 0.0, "float32": 0.0, "bfloat16": 0.0}
    answers = {"float32": [], "bfloat16": []}
    for i, track in enumerate(test.itertuples()):
        started = time.perf_counter()
        inputs, _ = frontend.segments(read_waveform(Path(paths[track.track_id]), run.recipe))
        seconds["decode + front end"] += time.perf_counter() - started
        order = [("float32", exact), ("bfloat16", fast)]
        for name, graph in order if i % 2 == 0 else order[::-1]:  # alternately first: the load falls on both
            probs, took = graph.batch(inputs)
            seconds[name] += took
            none = np.zeros(len(probs), int)
            answers[name].append(track_probabilities(run, none, probs, none)[1][0])
    exact.close()
    fast.close()
    labels = np.array([run.classes.index(label) for label in test.label])
    exact_probs, fast_probs = np.stack(answers["float32"]), np.stack(answers["bfloat16"])
    n = len(test)
    whole = {name: (seconds["decode + front end"] + seconds[name]) / n for name in ("float32", "bfloat16")}
    return {
        "model": MODEL,
        "fold": fold,
        "test tracks": n,
        "segments per clip": round(len(inputs), 1),
        "track accuracy float32": round(float(np.mean(exact_probs.argmax(1) == labels)), 3),
        "track accuracy bfloat16": round(float(np.mean(fast_probs.argmax(1) == labels)), 3),
        "top-1 agreement": round(float(np.mean(exact_probs.argmax(1) == fast_probs.argmax(1))), 3),
        "max probability difference": round(float(np.abs(exact_probs - fast_probs).max()), 4),
        "decode + front end ms/clip": round(1000 * seconds["decode + front end"] / n),
        "model float32 ms/clip": round(1000 * seconds["float32"] / n),
        "model bfloat16 ms/clip": round(1000 * seconds["bfloat16"] / n),
        "clips/s float32": round(1 / whole["float32"], 2),
        "clips/s bfloat16": round(1 / whole["bfloat16"], 2),
        "speed-up": round(whole["float32"] / whole["bfloat16"], 2),
        "load average": round(os.getloadavg()[0], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", default="0,1,2,3,4")
    args = parser.parse_args()
    rows = []
    for fold in [int(f) for f in args.folds.split(",")]:
        rows.append(fold_row(fold))
        print(rows[-1], flush=True)
    run = train_run(f"{MODEL}_fold0", ["data.fold=0"])
    macs, rate = multiply_adds(run.load_model()), matmul_gflops()
    floor = 2 * macs / (rate * 1e9) * 1000
    print(f"{MODEL}: {macs / 1e9:.2f} G multiply-adds per patch; float32 matrix multiply here: {rate:.0f} GFLOP/s, "
          f"so at least {floor:.1f} ms per patch at that rate")  # fmt: skip
    for row in rows:
        row["G multiply-adds per patch"] = round(macs / 1e9, 2)
        row["ms per patch at the matmul rate"] = round(floor, 1)
    result_table.record("musicnn_compute", rows, key=["model", "fold"])


if __name__ == "__main__":
    main()
