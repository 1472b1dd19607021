"""Benchmark: the musicnn probe's network as TFLite on LiteRT, float32 and post-training quantized, against Keras.

The network alone (the front end stays float: the patches are the run's cached ones), converted from the run's
model in each mode the TFLite converter offers: float32; float16 weights; dynamic-range (int8 weights, float
activations); full integer (int8 weights and activations, calibrated on `--representative` of the run's cached
train patches). Each runs on LiteRT (XNNPACK, 2 threads) over the test tracks of the fold, one track's patches per
call, and is compared with the Keras model on TensorFlow: milliseconds per 30 s clip (the calls alternate clip by
clip, so the load falls on all), track accuracy, top-1 agreement with Keras float32, and the largest difference
of a track's probabilities. Rows go to bench/results/quantize.csv and .md.

    .venv/bin/python bench/quantize.py [--folds 0] [--representative 200]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import result_table  # noqa: E402
from unknown import MODEL, train_run  # noqa: E402

MODES = ("float32", "float16", "dynamic", "int8")


def tflite_models(model, shape: tuple, representative: np.ndarray, folder: Path) -> dict[str, bytes]:
    """The network as TFLite flatbuffers, one per mode."""
    import tensorflow as tf

    module = tf.Module()
    module.variables_ = [v.value for v in model.variables]  # frozen into constants (see serving.export)
    module.serve = tf.function(lambda x: model(x, training=False), input_signature=[tf.TensorSpec([None, *shape])])
    tf.saved_model.save(module, str(folder), signatures={"serving_default": module.serve})
    made = {}
    for mode in MODES:
        converter = tf.lite.TFLiteConverter.from_saved_model(str(folder))
        if mode != "float32":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if mode == "float16":
            converter.target_spec.supported_types = [tf.float16]
        if mode == "int8":
            converter.representative_dataset = lambda: ([row[None]] for row in representative)
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        made[mode] = converter.convert()
    return made


def fold_rows(fold: int, n_representative: int) -> list[dict]:
    from ai_edge_litert.interpreter import Interpreter

    from genre_tf.evaluation.predictions import track_probabilities
    from genre_tf.inputs.examples import load_examples, split_data

    run = train_run(f"{MODEL}_fold{fold}", [f"data.fold={fold}"])
    model, examples = run.load_model(), load_examples(run.config, progress=False)

    def patches(split: str):
        data = split_data(examples.split(split), run.recipe, run.classes, None)
        return data.track_ids, np.concatenate([x for x, _ in data.batches(256)]).astype(np.float32), data.labels

    _, train, _ = patches("train")
    representative = train[np.random.default_rng(0).permutation(len(train))[:n_representative]]
    track_ids, test, labels = patches("test")
    with tempfile.TemporaryDirectory() as folder:
        flatbuffers = tflite_models(model, test.shape[1:], representative, Path(folder))
    runners = {}
    for mode, flatbuffer in flatbuffers.items():
        interpreter = Interpreter(model_content=flatbuffer, num_threads=2)
        runners[mode] = interpreter.get_signature_runner("serving_default")
    keras_call = model.predict_on_batch
    tracks = list(dict.fromkeys(track_ids))
    seconds = dict.fromkeys(["keras", *MODES], 0.0)
    probs = {name: [] for name in seconds}
    for i, track in enumerate(tracks):
        rows = track_ids == track
        x = test[rows]
        order = ["keras", *MODES]
        for name in order[i % len(order) :] + order[: i % len(order)]:  # each first in turn
            started = time.perf_counter()
            out = keras_call(x) if name == "keras" else next(iter(runners[name](x=x).values()))
            seconds[name] += time.perf_counter() - started
            none = np.zeros(len(out), int)
            probs[name].append(track_probabilities(run, none, np.asarray(out, np.float64), none)[1][0])
    truth = np.array([labels[track_ids == t][0] for t in tracks])
    reference = np.stack(probs["keras"])
    rows = []
    for name in seconds:
        got = np.stack(probs[name])
        rows.append({
            "model": MODEL, "fold": fold, "network": "Keras on TensorFlow" if name == "keras" else f"TFLite {name}",
            "size MB": round(model.count_params() * 4 / 1e6, 1) if name == "keras" else
                       round(len(flatbuffers[name]) / 1e6, 1),
            "ms per clip": round(1000 * seconds[name] / len(tracks)),
            "track accuracy": round(float(np.mean(got.argmax(1) == truth)), 3),
            "top-1 agreement with Keras": round(float(np.mean(got.argmax(1) == reference.argmax(1))), 3),
            "max probability difference": round(float(np.abs(got - reference).max()), 4),
            "load average": round(os.getloadavg()[0], 1),
        })  # fmt: skip
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", default="0")
    parser.add_argument("--representative", type=int, default=200, help="train patches that calibrate int8")
    args = parser.parse_args()
    for fold in [int(f) for f in args.folds.split(",")]:
        result_table.record("quantize", fold_rows(fold, args.representative), key=["model", "fold", "network"])


if __name__ == "__main__":
    main()
