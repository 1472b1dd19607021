"""Benchmark: prepare and read N synthetic demo tracks with both engines, for growing N.

For each N, the demo CNN's input (mel images of 6 s demo tracks, 2 s segments every 1 s: 5 per track) is prepared
by the local engine (a process pool writing cache entries, one file per segment) and by the Beam engine (the
DirectRunner on as many worker processes, writing TFRecord shards), each into a fresh folder. Per engine: wall and
CPU seconds per track (CPU of this process and its workers), files written and bytes per track. Then tf.data reads
every segment's image back, decoded to float32 as training reads it, from the per-segment files and from the shards
(examples/s, the second of two passes, so both read from the page cache), beside the examples/s one training step
of the demo CNN consumes; and what `train` does with `data.shards`: the shards read into memory (seconds), then the
images decoded from the bytes held; and with `data.stream` (pipeline.ShardStream): its table read (seconds, no
image bytes), then one epoch of shuffled train batches and its ordered read for evaluation, each image decoded.
The cost of each track added between successive N, the start-up of either engine taken out, says whether cost
grows linearly. The load average is printed with every line: the machine may
be shared, and the CPU figures are the steadier ones then.

    .venv/bin/python bench/scale.py --tracks 100 1000 [--workers 2] 2>/dev/null   (Beam's workers log to stderr)
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import tensorflow as tf
from result_table import record  # bench/result_table.py, beside this script

from genre_tf import models
from genre_tf.config import Config, load_config
from genre_tf.data.demo import DEMO_GENRES
from genre_tf.extract import beam as engines
from genre_tf.extract import shards
from genre_tf.extract.prepared import config_index, prepare_index
from genre_tf.features.representations import MEL_IMAGE
from genre_tf.inputs import pipeline
from genre_tf.inputs.recipe import InputRecipe

REPO = Path(__file__).resolve().parents[1]
NAMES = (MEL_IMAGE,)


def load() -> str:
    return Path("/proc/loadavg").read_text().split(" ", 1)[0] if Path("/proc/loadavg").exists() else "?"


def cpu_seconds() -> float:
    """CPU seconds of this process and of its waited-for children (the workers of either engine)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def folder_size(folder: Path) -> tuple[int, int]:
    files = [p for p in folder.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def read_rate(ds: tf.data.Dataset) -> tuple[int, float]:
    """(examples, examples/s) of the second full pass over `ds`."""
    for _ in ds:
        pass
    started, n = time.perf_counter(), 0
    for _ in ds:
        n += 1
    return n, n / (time.perf_counter() - started)


def segment_files(paths: list[str]) -> tf.data.Dataset:
    read = pipeline.decoding_reader(paths, pipeline.png_to_unit)
    return tf.data.Dataset.range(len(paths)).map(read, num_parallel_calls=tf.data.AUTOTUNE)


def shard_segments(files: list[str]) -> tf.data.Dataset:
    """Every segment's image streamed from the shards (tracks parsed, their PNGs unbatched and decoded)."""
    ds = shards.track_dataset(files, NAMES).map(lambda r: r[MEL_IMAGE]).unbatch()
    return ds.map(pipeline.png_to_unit, num_parallel_calls=tf.data.AUTOTUNE)


def stream_rates(output: Path, cfg: Config) -> tuple[float, int, float, float]:
    """data.stream's reader over every segment of the shards: (seconds to read its table, examples of one epoch,
    examples/s of that epoch's shuffled train batches, examples/s of the ordered read evaluation makes)."""
    started = time.perf_counter()
    table = shards.read_prepared(str(output), cfg, NAMES, held=False).segments
    table_seconds = time.perf_counter() - started
    files = tuple(shards.shard_files(str(output)))
    labels = np.zeros(len(table), dtype=int)  # the reader's work does not depend on the labels
    stream = pipeline.ShardStream.of_split(files, MEL_IMAGE, table, labels, pipeline.png_to_unit)
    train, _ = stream.train_batches(32, cfg.seed, 0, 1)
    n_train, train_rate = read_rate(train.unbatch())
    n_ordered, ordered_rate = read_rate(stream.batches(32).unbatch())
    assert n_ordered == len(table), (n_ordered, len(table))
    return table_seconds, n_train, train_rate, ordered_rate


def train_step_rate(cfg, n_classes: int, batch_size: int = 32, steps: int = 10) -> float:
    """Examples/s one training step of the config's model consumes (after one step to build it)."""
    model = models.build_model(cfg.model, InputRecipe.of(cfg).shape(), n_classes)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x = np.random.default_rng(0).random((batch_size, *InputRecipe.of(cfg).shape()), dtype=np.float32)
    y = np.arange(batch_size) % n_classes
    model.train_on_batch(x, y)
    started = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    return steps * batch_size / (time.perf_counter() - started)


def run(n_tracks: int, workers: int, tmp: Path) -> tuple[int, dict, Config, dict]:
    """Both engines on N demo tracks: (the tracks indexed, each engine's (wall, CPU) seconds, the config, the
    figures printed)."""
    per_genre = -(-n_tracks // len(DEMO_GENRES))
    base = [f"data.root={tmp / f'demo-{n_tracks}'}", f"data.demo_tracks_per_genre={per_genre}", f"cache.jobs={workers}"]
    cfg = load_config(REPO / "configs" / "demo_cnn.yaml", [*base, f"cache.dir={tmp / f'cache-{n_tracks}'}"])
    index = config_index(cfg, progress=False)  # writes the demo audio (not timed)
    n = len(index.tracks)

    wall, cpu = time.perf_counter(), cpu_seconds()
    prepared = prepare_index(index, cfg, jobs=workers, progress=False, names=NAMES)
    wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
    costs = {"local": (wall, cpu)}
    files, size = folder_size(Path(cfg.cache.dir))
    row = {
        "tracks": n,
        "local ms CPU per track": round(cpu / n * 1000),
        "local ms wall per track": round(wall / n * 1000),
        "local files": files,
        "local KiB per track": round(size / n / 1024, 1),
    }
    print(
        f"N={n} local: {wall / n * 1000:.0f} ms wall, {cpu / n * 1000:.0f} ms CPU per track ({wall:.1f} s); "
        f"{files} files, {size / n / 1024:.1f} KiB per track; load {load()}",
        flush=True,
    )

    output = tmp / f"shards-{n_tracks}"
    options = f"--runner=DirectRunner --direct_num_workers={workers} --direct_running_mode=multi_processing"
    wall, cpu = time.perf_counter(), cpu_seconds()
    manifest = engines.run_pipeline(index, cfg, NAMES, str(output), options)
    wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
    costs["beam"] = (wall, cpu)
    files, size = folder_size(output)
    row |= {
        "Beam ms CPU per track": round(cpu / n * 1000),
        "Beam ms wall per track": round(wall / n * 1000),
        "Beam files (shards)": f"{files} ({len(manifest['files'])})",
        "Beam KiB per track": round(size / n / 1024, 1),
    }
    print(
        f"N={n} beam:  {wall / n * 1000:.0f} ms wall, {cpu / n * 1000:.0f} ms CPU per track ({wall:.1f} s); "
        f"{files} files ({len(manifest['files'])} shards), {size / n / 1024:.1f} KiB per track; load {load()}",
        flush=True,
    )

    n_files, files_rate = read_rate(segment_files(prepared.segments["mel_path"].tolist()))
    n_shards, shards_rate = read_rate(shard_segments([str(output / name) for name in manifest["files"]]))
    started = time.perf_counter()
    held = shards.read_prepared(str(output), cfg, NAMES).segments["mel_path"].tolist()
    load_seconds = time.perf_counter() - started
    n_held, held_rate = read_rate(segment_files(held))
    assert n_files == n_shards == n_held == len(prepared.segments), (n_files, n_shards, n_held)
    print(
        f"N={n} tf.data read ({n_files} examples): per-segment files {files_rate:.0f} examples/s, shards streamed "
        f"{shards_rate:.0f} examples/s; train's read of the shards {load_seconds:.1f} s, then {held_rate:.0f} "
        f"examples/s from the bytes held; load {load()}",
        flush=True,
    )
    row |= {
        "examples": n_files,
        "read ex/s: segment files": round(files_rate),
        "shards streamed": round(shards_rate),
        "train's read of the shards s": round(load_seconds, 1),
        "then ex/s from the bytes held": round(held_rate),
    }
    table_seconds, n_train, train_rate, ordered_rate = stream_rates(output, cfg)
    print(
        f"N={n} data.stream: its table read {table_seconds:.1f} s, then train batches (shuffled, {n_train} examples) "
        f"{train_rate:.0f} examples/s, the ordered read {ordered_rate:.0f} examples/s; load {load()}",
        flush=True,
    )
    row |= {
        "data.stream: table read s": round(table_seconds, 1),
        "train batches ex/s": round(train_rate),
        "ordered read ex/s": round(ordered_rate),
        "load": load(),
    }
    return n, costs, cfg, row


def marginal_costs(costs: dict[int, dict[str, tuple[float, float]]]) -> list[dict]:
    """The cost of each added track between successive N, per engine: what stays when the fixed start-up is
    taken out (equal figures from N to N say the cost grows linearly)."""
    rows, sizes = [], sorted(costs)
    for small, large in zip(sizes, sizes[1:], strict=False):
        for engine in costs[small]:
            wall, cpu = ((costs[large][engine][k] - costs[small][engine][k]) / (large - small) * 1000 for k in range(2))
            rows.append(
                {
                    "from N": small,
                    "to N": large,
                    "engine": engine,
                    "ms wall per added track": round(wall),
                    "ms CPU per added track": round(cpu),
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--workers", type=int, default=2, help="processes of either engine")
    args = parser.parse_args()
    costs, rows = {}, []
    with tempfile.TemporaryDirectory(prefix="genre_tf_scale_") as folder:
        for n_tracks in args.tracks:
            n, costs[n], cfg, row = run(n_tracks, args.workers, Path(folder))
            rows.append(row)
    marginal = marginal_costs(costs)
    for r in marginal:
        print(
            f"N={r['from N']}->{r['to N']} {r['engine']}: {r['ms wall per added track']} ms wall, "
            f"{r['ms CPU per added track']} ms CPU per added track"
        )
    rate = train_step_rate(cfg, len(DEMO_GENRES))
    print(f"the demo CNN's training step consumes {rate:.0f} examples/s (batch 32); load {load()}")
    record("scale", [row | {"training step ex/s": round(rate)} for row in rows], key=["tracks"])
    record("scale_marginal", marginal, key=["from N", "to N", "engine"])


if __name__ == "__main__":
    main()
