"""Benchmark: where one upload's time goes in the service, part by part, against the floor.

In this process, as `serve --run RUN` sets it up (one BLAS thread, the run's model loaded once), a real 30 s clip
copied to a temporary folder as an upload is stored, then timed `--repeats` times (median) through each part of
`app.Predictor.predict`: the header read (`checked_duration`), decoding (`frontend.read_waveform`), the segments'
inputs (`AudioGraph.segments`), the model called directly and through the batcher (its hand-over to the batching
thread and back), inputs and model in one graph call as a lone request makes them (`AudioGraph.at_once`), the
pooling of a track's segments (`track_probabilities`), the unknown score, and the whole `predict`; then the floor
(the same file decoded and the run's exported SavedModel called on it). Last, the HTTP round trip of the same 0.93
MB multipart upload to the service's routes (`serving.http.http_app`) in a server of its own whose predictor answers
without a model: what the HTTP layer adds to any answer. Rows go to bench/results/serve_parts.csv and .md.

    .venv/bin/python bench/serve_parts.py [--run saved_models/demo_cnn] [--repeats 30]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
from result_table import record  # bench/result_table.py, beside this script
from serve import CLIP, free_port, multipart, post  # bench/serve.py

REPO = Path(__file__).resolve().parent.parent

# The service's routes over a predictor that answers at once: the HTTP layer alone (run with `python -c`).
NO_MODEL_SERVER = """
import sys, uvicorn
from genre_tf.serving.http import http_app
from genre_tf.serving.uploads import Limits

class Answering:
    limits = Limits()
    def predict(self, upload, top_k):
        return {"file": upload.name, "bytes": upload.size}
    def health(self):
        return {"status": "ok"}

uvicorn.run(http_app(Answering(), "no model"), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


def median_ms(call, repeats: int) -> float:
    call()  # warm
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return round(1000 * statistics.median(times), 2)


def parts(run_path: Path, clip: Path, repeats: int, tmp: Path) -> dict[str, float]:
    import tensorflow as tf
    from threadpoolctl import threadpool_limits

    from genre_tf.evaluation.predictions import track_probabilities
    from genre_tf.evaluation.unknown import unknown_scores
    from genre_tf.run import RunDir
    from genre_tf.serving.app import Predictor
    from genre_tf.serving.export import export
    from genre_tf.serving.frontend import read_waveform
    from genre_tf.serving.uploads import Limits, Upload, checked_duration

    threadpool_limits(1)  # as run_app sets the service's process
    run = RunDir(run_path)
    predictor = Predictor(run, Limits())
    stored = tmp / f"upload{clip.suffix}"
    shutil.copy(clip, stored)
    upload = Upload(stored, clip.name, stored.stat().st_size)
    waveform = read_waveform(stored, run.recipe)
    inputs, _ = predictor.graph.segments(waveform)
    outputs = predictor.graph.batch(inputs)
    none = np.zeros(len(inputs), int)
    embedding = outputs["embedding"].astype(np.float64).mean(axis=0, keepdims=True)
    export(run, "saved_model", tmp / "saved_model", progress=lambda line: None)
    serve = tf.saved_model.load(str(tmp / "saved_model")).signatures["serving_default"]

    def floor() -> None:
        serve(waveform=tf.constant(read_waveform(stored, run.recipe)))["probabilities"].numpy()

    figures = {
        "header ms": median_ms(lambda: checked_duration(stored, predictor.limits), repeats),
        "decode ms": median_ms(lambda: read_waveform(stored, run.recipe), repeats),
        "segments' inputs ms": median_ms(lambda: predictor.graph.segments(waveform), repeats),
        "model ms": median_ms(lambda: predictor.graph.batch(inputs), repeats),
        "model through the batcher ms": median_ms(lambda: predictor.batcher.predict(inputs), repeats),
        "inputs + model in one call ms": median_ms(lambda: predictor.graph.at_once(waveform), repeats),
        "pooling ms": median_ms(lambda: track_probabilities(run, none, outputs["probabilities"], none), repeats),
        "unknown score ms": median_ms(lambda: unknown_scores(run, embedding), repeats),
        "predict ms": median_ms(lambda: predictor.predict(upload, 3), repeats),
        "floor ms": median_ms(floor, repeats),
    }
    figures["segments"] = len(inputs)
    return figures


def http_round_trip(clip: Path, repeats: int, deadline: float) -> float:
    """Median ms of the upload's round trip to the routes over a predictor that answers without a model."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    server = subprocess.Popen([sys.executable, "-c", NO_MODEL_SERVER, str(port)], env=env)
    try:
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("error: the no-model server did not answer") from None
                time.sleep(0.2)
        body, url = multipart(clip), f"http://127.0.0.1:{port}/predict"
        return median_ms(lambda: post(url, body, 10.0), repeats)
    finally:
        server.terminate()
        server.wait(timeout=20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=REPO / "saved_models" / "demo_cnn")
    parser.add_argument("--clip", type=Path, default=CLIP, help="the audio uploaded (a real 30 s GTZAN clip)")
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    if not args.clip.is_file():
        raise SystemExit(f"error: no clip at {args.clip} (../shared/data/gtzan_mini absent?)")
    if not (args.run / "model.keras").is_file():
        raise SystemExit(f"error: {args.run} has no model.keras (make demo creates saved_models/demo_cnn)")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    with tempfile.TemporaryDirectory() as tmp:
        figures = parts(args.run, args.clip, args.repeats, Path(tmp))
    figures["HTTP round trip, no model ms"] = http_round_trip(args.clip, args.repeats, time.monotonic() + 120)
    for name, value in figures.items():
        print(f"  {name:32s} {value}")
    row = {"run": args.run.name, "clip": args.clip.name, **figures, "load average": load}
    record("serve_parts", [row], ["run"])


if __name__ == "__main__":
    main()
