"""Benchmark: clips/s of `predict` on a folder of 30 s clips, per model family, cold cache, against the floor.

For each family (MLP on feature rows, CNN on mel images, musicnn), a run is made from the shipped config
(`configs/mlp.yaml`, `cnn.yaml`, `musicnn.yaml`: 3 s segments every 1.5 s) with its weights drawn from a fixed seed
(musicnn: the pretrained MSD backbone under a new head; the MLP's scaler fitted on the published feature table's
rows). Untrained weights cost what trained ones cost: this measures time, not accuracy.

1. `predict --run RUN FOLDER --output results.csv` on an empty cache, in this process (TensorFlow already
   imported, the model loaded by predict itself), with the runs' default workers (one per core): extraction
   processes for the MLP's feature rows, decoding threads for the audio models, which predict from the exported
   preprocessing graph and write no cache file (the count of cache files per clip printed says so);
2. the floor, for the audio models: every file decoded as the exported model takes it (`frontend.read_waveform`)
   and the run's exported SavedModel called on it, one clip after another in the same process. What predict
   does beyond that (loading the model and tracing its graph, the CSV) is the overhead the ratio shows; its
   decoding threads decode two files at once on two cores, which the floor, one clip after another, does not.
   Wall and CPU seconds are both printed: on a machine shared with other work the wall ratio moves with the load,
   and the CPU ratio (this process and its children, every thread) is the steadier figure.

    .venv/bin/python bench/predict.py --clips 100
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import tempfile
import time
from pathlib import Path

import pandas as pd
from result_table import record  # bench/result_table.py, beside this script

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
FAMILIES = {"MLP (feature rows)": "mlp.yaml", "CNN (mel images)": "cnn.yaml", "musicnn (patches)": "musicnn.yaml"}


def spread_clips(folder: Path, n: int) -> list[Path]:
    """n of the <genre>/*.flac clips in `folder`, taken at an even step through the sorted list, so spread over the
    genres."""
    paths = sorted(folder.glob("*/*.flac"))
    return paths[:: max(1, len(paths) // n)][:n]


def make_run(path: Path, config: str, classes: list[str], cache_dir: Path) -> Path:
    """A run directory as `train` leaves it, with weights from a fixed seed."""
    import keras

    from genre_tf import models
    from genre_tf.config import load_config, save_config
    from genre_tf.features.scaling import fit_scaler
    from genre_tf.inputs.recipe import InputRecipe

    overrides = [f"cache.dir={cache_dir}", f"output_dir={path.parent}", f"data.root={SHARED_DATA / 'gtzan_mini'}"]
    cfg = load_config(REPO / "configs" / config, overrides)
    keras.utils.set_random_seed(0)
    scaler = None
    recipe = InputRecipe.of(cfg)
    if recipe.reads_features:
        table = pd.read_csv(SHARED_DATA / "gtzan_features" / "features_30_sec_labeled.csv")
        scaler = fit_scaler(cfg.model.mlp.scaler, table, list(recipe.feature_columns), cfg.seed)
    model = models.build_model(cfg.model, recipe.shape(scaler), len(classes))
    path.mkdir(parents=True, exist_ok=True)
    save_config(cfg, path / "config.yaml")
    (path / "classes.json").write_text(json.dumps(classes))
    if scaler is not None:
        scaler.save(path / "scaler.json")
    model.save(path / "model.keras")
    return path


def cpu_seconds() -> float:
    """CPU seconds of this process (every thread) and of its children that have ended."""
    return sum(os.times()[:4])


def time_predict(run: Path, folder: Path, cache_dir: Path, out: Path) -> tuple[float, float]:
    """(wall, CPU) seconds of one `predict --output` over the folder on an empty cache, its printout swallowed."""
    from genre_tf import predict

    started, cpu = time.perf_counter(), cpu_seconds()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        predict.main(["--run", str(run), str(folder), "--output", str(out), "--cache-dir", str(cache_dir)])
    return time.perf_counter() - started, cpu_seconds() - cpu


def time_floor(run: Path, paths: list[Path], tmp: Path) -> tuple[float, float]:
    """(wall, CPU) seconds to decode every file as the exported model takes it and call the exported SavedModel on
    it."""
    import tensorflow as tf

    from genre_tf.run import RunDir
    from genre_tf.serving.export import export
    from genre_tf.serving.frontend import read_waveform

    run_dir = RunDir(run)
    saved = tmp / f"{run.name}_saved_model"
    with contextlib.redirect_stdout(io.StringIO()):
        export(run_dir, "saved_model", saved, progress=lambda line: None)
    serve = tf.saved_model.load(str(saved)).signatures["serving_default"]
    serve(waveform=tf.constant(read_waveform(paths[0], run_dir.recipe)))  # traced and warm before timing
    started, cpu = time.perf_counter(), cpu_seconds()
    for path in paths:
        serve(waveform=tf.constant(read_waveform(path, run_dir.recipe)))["probabilities"].numpy()
    return time.perf_counter() - started, cpu_seconds() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=100, help="clips of gtzan_mini to predict (default all 100)")
    parser.add_argument("--data", type=Path, default=SHARED_DATA / "gtzan_mini", help="folder of <genre>/*.flac")
    parser.add_argument("--families", nargs="*", default=list(FAMILIES), choices=list(FAMILIES))
    args = parser.parse_args()
    if not args.data.is_dir():
        raise SystemExit(f"no clips: {args.data} is not a folder")
    paths = spread_clips(args.data, args.clips)
    classes = sorted({p.parent.name for p in paths})
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        folder = tmp / "clips"
        for path in paths:  # the clips, in a folder of their own
            (folder / path.parent.name).mkdir(parents=True, exist_ok=True)
            (folder / path.parent.name / path.name).symlink_to(path)
        print(f"{len(paths)} clips of 30 s (gtzan_mini), predict on an empty cache against the floor:")
        start_load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        print(f"(load average at the start: {start_load})", flush=True)
        table = []
        for name in args.families:
            run = make_run(tmp / "runs" / Path(FAMILIES[name]).stem, FAMILIES[name], classes, tmp / "unused")
            seconds, cpu = time_predict(run, folder, tmp / f"cold_{run.name}", tmp / f"{run.name}.csv")
            rows = len(pd.read_csv(tmp / f"{run.name}.csv"))
            line = f"  {name:20s} predict {len(paths) / seconds:5.2f} clips/s ({seconds:5.1f} s, CPU {cpu:5.1f} s, "
            line += f"{rows} rows)"
            files = sum(1 for p in (tmp / f"cold_{run.name}").rglob("*") if p.is_file())
            line += f", {files / len(paths):.0f} cache files per clip"
            row = {
                "family": name,
                "clips": len(paths),
                "predict clips/s": round(len(paths) / seconds, 2),
                "wall s": round(seconds, 1),
                "CPU s": round(cpu, 1),
                "cache files per clip": round(files / len(paths)),
            }
            if name != "MLP (feature rows)":  # a table model's export takes feature rows, not audio
                floor, floor_cpu = time_floor(run, paths, tmp)
                line += f"; floor {len(paths) / floor:5.2f} clips/s (CPU {floor_cpu:5.1f} s); predict takes "
                line += f"{seconds / floor:.2f}x the floor's wall, {cpu / floor_cpu:.2f}x its CPU"
                row |= {
                    "floor clips/s": round(len(paths) / floor, 2),
                    "x the floor's wall": round(seconds / floor, 2),
                    "x its CPU": round(cpu / floor_cpu, 2),
                }
            print(line, flush=True)
            table.append(row)
    end_load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"(cores: {len(os.sched_getaffinity(0))}; load average now {end_load})")
    loads = {"load average (start; end)": f"{start_load}; {end_load}"}
    record("predict", [row | loads for row in table], key=["family", "clips"])


if __name__ == "__main__":
    main()
