"""The Apache Beam engine of `prepare`: every track of an index analysed on a Beam runner, written as shards.

    python -m genre_tf.prepare --config C --engine beam [--beam-options "--runner=DirectRunner ..."] [--output DIR]

As TFDS runs one `_generate_examples` under its local loop or Beam, both engines call the one analysis of a track
(`track.analyse_file`); only where the result goes differs: the local engine writes cache entries, this one a
record per track into sharded TFRecord files (genre_tf.extract.shards). The pipeline reads the index from the output
folder (written there first), so the workers of a cluster runner need only that folder and the audio's paths.
Imported only for `--engine beam`: the local engine needs no Beam installed.
"""

from __future__ import annotations

import csv
import io
import math
import shlex
import time

import apache_beam as beam
import tensorflow as tf
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import PipelineOptions
from threadpoolctl import threadpool_limits

from genre_tf.config import Config
from genre_tf.data.index import Index
from genre_tf.extract import shards
from genre_tf.extract.cache import Recipe, file_digest
from genre_tf.extract.pool import compile_kernels
from genre_tf.extract.track import analyse_file
from genre_tf.features.audio import AudioError

TRACKS_PER_SHARD = 256  # the default shard count gives shards of about this many tracks


def default_output(cfg: Config) -> str:
    return f"{cfg.cache.dir}/shards/{cfg.name}"


class AnalyseTrack(beam.DoFn):
    """An index row (a line of index.csv) -> the track's serialized record."""

    def __init__(self, recipe: Recipe, names: tuple[str, ...]):
        self.recipe, self.names = recipe, names
        self.tracks = Metrics.counter("prepare", "tracks")
        self.segments = Metrics.counter("prepare", "segments")
        self.skipped = Metrics.counter("prepare", "skipped")

    def setup(self) -> None:
        threadpool_limits(1)  # as the local engine's workers: one BLAS thread keeps the float sums, so the bytes

    def process(self, line: str):
        values = next(csv.reader([line]))
        track = dict(zip(shards.INDEX_FIELDS, values, strict=True))
        digest = None
        try:
            digest = file_digest(track["path"])
            analysed = analyse_file(track["path"], self.recipe, self.names)
        except AudioError as err:
            analysed = str(err)
        if isinstance(analysed, str):
            self.skipped.inc()
        else:
            self.tracks.inc()
            self.segments.inc(analysed[1]["n_segments"])
        yield shards.track_record(track, digest, self.recipe, self.names, analysed)


def _write_index(index: Index, path: str) -> None:
    table = index.tracks[shards.INDEX_FIELDS[1:]].copy()
    table.insert(0, "position", range(len(table)))
    buffer = io.StringIO()
    table.to_csv(buffer, index=False)
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(buffer.getvalue())


def _clear_output(output: str) -> None:
    """Remove an earlier run's shards and manifest, so the folder never mixes two runs' files."""
    if not tf.io.gfile.isdir(output):
        tf.io.gfile.makedirs(output)
        return
    for path in tf.io.gfile.glob(f"{output}/{shards.PREFIX}-*{shards.SUFFIX}") + [f"{output}/{shards.MANIFEST}"]:
        if tf.io.gfile.exists(path):
            tf.io.gfile.remove(path)


def _counter(result, name: str) -> int | None:
    try:
        found = result.metrics().query(beam.metrics.MetricsFilter().with_name(name))["counters"]
    except Exception:  # a runner that reports no metrics: the summary leaves the count out
        return None
    return sum(c.committed or 0 for c in found) if found else 0


def run_pipeline(
    index: Index,
    cfg: Config,
    names: tuple[str, ...],
    output: str,
    beam_options: str = "",
    n_shards: int | None = None,
) -> dict:
    """Analyse every track of `index` on Beam into shards under `output`; returns the manifest written there."""
    started = time.perf_counter()
    output = output.rstrip("/")
    recipe = Recipe.from_config(cfg)
    n_shards = n_shards or max(1, math.ceil(len(index.tracks) / TRACKS_PER_SHARD))
    _clear_output(output)
    _write_index(index, f"{output}/{shards.INDEX}")
    compile_kernels(recipe, names)  # local workers then load numba's kernels instead of compiling them at once
    pipeline = beam.Pipeline(options=PipelineOptions(shlex.split(beam_options)))
    (
        pipeline
        | "read index" >> beam.io.ReadFromText(f"{output}/{shards.INDEX}", skip_header_lines=1)
        | "spread tracks" >> beam.Reshuffle()
        | "analyse" >> beam.ParDo(AnalyseTrack(recipe, names))
        | "write shards"
        >> beam.io.WriteToTFRecord(f"{output}/{shards.PREFIX}", file_name_suffix=shards.SUFFIX, num_shards=n_shards)
    )
    result = pipeline.run()
    result.wait_until_finish()
    manifest = {
        "files": [shards.shard_name(i, n_shards) for i in range(n_shards)],
        "representations": list(names),
        "cache_keys": recipe.keys(names),
        "split": index.split_note,
        "split_method": index.split_method,  # read_prepared splits again over the tracks that decoded
        "problems": [[path, index.problem_id(path), reason] for path, reason in index.problems],
        "ignored": index.ignored,
        "index_tracks": len(index.tracks),
        "counts": {name: _counter(result, name) for name in ("tracks", "segments", "skipped")},
        "seconds": round(time.perf_counter() - started, 2),
    }
    shards.write_manifest(output, manifest)
    return manifest


def summary(manifest: dict, output: str) -> str:
    """What a Beam run did, in two lines (counts the runner did not report are left out)."""
    counts = "  ".join(f"{name} {n}" for name, n in manifest["counts"].items() if n is not None)
    return (
        f"{manifest['index_tracks']} tracks analysed on Beam in {manifest['seconds']:.1f} s: {counts}; computed: "
        f"{', '.join(manifest['representations'])}\n{len(manifest['files'])} shard(s) written to {output}"
    )
