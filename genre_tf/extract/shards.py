"""Sharded records of prepared tracks: the output of `prepare --engine beam`, and how `train` reads it.

A shard is a TFRecord file of whole tracks, one tf.train.Example each: the track's place in the index, its id,
path, label, split and file digest, its skip reason (empty for a usable track), the meta of its analysis, and per
representation the files a cache entry of it would hold, in the same bytes (`cache.entry_files`): feature rows as
`.npy`, one 16-bit mel PNG or raw float16 musicnn patch per segment. So the file count grows with the number of
shards, not with segments, and a track read from shards is byte for byte the track read from the local cache.

A folder of shards holds `tracks-SSSSS-of-NNNNN.tfrecord`, `index.csv` (what the pipeline read) and `shards.json`
(the manifest: its shard files, representations and their cache keys, the split note, what indexing reported). It
may be anywhere tf.io.gfile reads (a local folder, `gs://`, `s3://`). `train` reads it when `data.shards` names it:
whole into memory (`read_prepared`), or with `data.stream` a table of its tracks and segments without their files,
the segments then streamed split by split (`split_segments`, genre_tf.inputs.pipeline.ShardStream).
"""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import tensorflow as tf

from genre_tf.config import Config, ConfigError
from genre_tf.data.index import INDEX_COLUMNS, Index
from genre_tf.data.split import split_decodable
from genre_tf.extract.cache import Recipe, TrackResult, entry_files, segment_positions
from genre_tf.extract.prepared import SKIPPED_COLUMNS, Prepared, genre_counts
from genre_tf.features import analysis as features
from genre_tf.features import representations
from genre_tf.features.representations import PATH_COLUMNS

MANIFEST = "shards.json"
INDEX = "index.csv"
PREFIX = "tracks"
SUFFIX = ".tfrecord"
INDEX_FIELDS = ["position", *INDEX_COLUMNS]  # index.csv: each track's place in the index, then the index's columns
TEXT_FIELDS = ("track_id", "path", "label", "split", "digest", "reason", "meta")


def shard_name(shard: int, n_shards: int) -> str:
    """The file name Beam's WriteToTFRecord gives shard `shard` of `n_shards`."""
    return f"{PREFIX}-{shard:05d}-of-{n_shards:05d}{SUFFIX}"


def _bytes(values: list[bytes]) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))


def track_record(
    track: dict,
    digest: str | None,
    recipe: Recipe,
    names: tuple[str, ...],
    analysed: tuple[features.TrackAnalysis, dict] | str,
) -> bytes:
    """One track as a serialized tf.train.Example: `track` is its index row (with `position`); `analysed` is
    `track.analyse_file`'s (analysis, meta), or the skip reason (a str) where the file was bad."""
    fields = {key: str(track[key]) for key in INDEX_COLUMNS}
    fields["digest"] = digest or ""
    if isinstance(analysed, str):
        fields["reason"], fields["meta"], files = analysed, "", {}
    else:
        analysis, meta = analysed
        fields["reason"], fields["meta"] = "", json.dumps(meta, sort_keys=True)
        files = {name: list(entry_files(name, analysis, recipe.mel).values()) for name in names}
    feature = {key: _bytes([value.encode()]) for key, value in fields.items()}
    feature["position"] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(track["position"])]))
    feature.update({name: _bytes(data) for name, data in files.items()})
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def _parser(names: tuple[str, ...]):
    spec = {key: tf.io.FixedLenFeature([], tf.string, default_value="") for key in TEXT_FIELDS}
    spec["position"] = tf.io.FixedLenFeature([], tf.int64)
    spec.update({name: tf.io.RaggedFeature(tf.string) for name in names})
    return lambda record, file: tf.io.parse_single_example(record, spec) | {"shard": file}


def track_dataset(files, names: tuple[str, ...], cycle_length: int = 4) -> tf.data.Dataset:
    """The tracks of shard files (a list, or a string tensor), parsed (with `shard`, the file each came from), read
    by parallel interleave.

    The order is a function of the files' order alone (the interleave is deterministic), so two reads of the same
    files give the tracks in the same order: a streamed split's examples line up with its table
    (`read_prepared(..., held=False)`). Under tf.distribute multi-worker its auto-sharding is by file."""
    n_files = len(files) if isinstance(files, (list, tuple)) else int(files.shape[0])
    ds = tf.data.Dataset.from_tensor_slices(files).interleave(
        lambda file: tf.data.TFRecordDataset(file).map(lambda record: (record, file)),
        cycle_length=max(1, min(cycle_length, n_files)),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    ds = ds.map(_parser(names), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.FILE
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def shard_files(folder: str) -> list[str]:
    """The shard files of a folder, in its manifest's order."""
    folder = folder.rstrip("/")
    return [f"{folder}/{name}" for name in read_manifest(folder)["files"]]


def worker_files(files: list[str], context: tf.distribute.InputContext | None) -> list[str]:
    """The shard files one input pipeline of a tf.distribute run reads: every n-th file from its id, so the
    workers' files are disjoint and together all of them. None (no distribution): all files."""
    if context is None or context.num_input_pipelines == 1:
        return list(files)
    return pipeline_files(files, context.input_pipeline_id, context.num_input_pipelines)


def pipeline_files(files: list[str], pipeline_id: int, n_pipelines: int) -> list[str]:
    """Input pipeline `pipeline_id`'s share of `files` among `n_pipelines` (see `worker_files`)."""
    if len(files) < n_pipelines:
        problem = f"{len(files)} shard file(s) for {n_pipelines} workers: prepare with --shards {n_pipelines} or more"
        raise ConfigError("data.shards", problem)
    return list(files[pipeline_id::n_pipelines])


def split_segments(tracks: tf.data.Dataset, name: str, rows: tf.lookup.StaticHashTable) -> tf.data.Dataset:
    """Parsed tracks -> (track id, k, the k-th segment's bytes of `name`, track row) for the tracks `rows` maps to
    a row (>= 0) of a split's track table; the others (other splits, skipped tracks) are left out."""
    tracks = tracks.map(lambda r: (r["track_id"], r[name], rows.lookup(r["track_id"])))
    tracks = tracks.filter(lambda track_id, data, row: row >= 0)

    def segments(track_id: tf.Tensor, data: tf.Tensor, row: tf.Tensor) -> tf.data.Dataset:
        n = tf.shape(data, out_type=tf.int64)[0]
        return tf.data.Dataset.from_tensor_slices((tf.fill([n], track_id), tf.range(n), data, tf.fill([n], row)))

    return tracks.flat_map(segments)


def read_manifest(folder: str) -> dict:
    path = f"{folder.rstrip('/')}/{MANIFEST}"
    if not tf.io.gfile.exists(path):
        raise ConfigError("data.shards", f"{folder} holds no {MANIFEST}: run prepare --engine beam --output {folder}")
    with tf.io.gfile.GFile(path, "rb") as f:
        return json.loads(f.read())


def write_manifest(folder: str, manifest: dict) -> None:
    """The manifest, written last: a folder with it holds whole output (tf.io.gfile writes local files in place,
    so it goes to a temporary name first and is renamed)."""
    path, tmp = f"{folder}/{MANIFEST}", f"{folder}/.tmp-{MANIFEST}"
    with tf.io.gfile.GFile(tmp, "wb") as f:
        f.write(json.dumps(manifest, indent=1).encode())
    tf.io.gfile.rename(tmp, path, overwrite=True)


def check_recipe(manifest: dict, folder: str, cfg: Config, names: tuple[str, ...]) -> None:
    """ConfigError unless the shards hold `names` made with the config's recipe (same cache keys)."""
    keys = Recipe.from_config(cfg).keys(names)
    for name, key in keys.items():
        held = manifest["cache_keys"].get(name)
        if held is None:
            raise ConfigError("data.shards", f"{folder} holds no {name} (it has {', '.join(manifest['cache_keys'])})")
        if held != key:
            raise ConfigError(
                "data.shards", f"{folder} holds {name} made with other settings (key {held}, the config's {key})"
            )


def _npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def _track_tables(r: dict, names: tuple[str, ...], columns: list[str], audio) -> tuple[dict, pd.DataFrame]:
    """A usable track's record -> its row of the tracks table and its rows of the segments table."""
    text = {key: r[key].decode() for key in TEXT_FIELDS}
    meta = json.loads(text["meta"])
    track = {key: text[key] for key in INDEX_COLUMNS} | {"digest": text["digest"], "n_segments": meta["n_segments"]}
    segments = pd.DataFrame({"track_id": track["track_id"], "segment": segment_positions(meta, audio)})
    segments["label"], segments["split"], segments["shard"] = track["label"], track["split"], r["shard"].decode()
    for name, column in PATH_COLUMNS.items():
        if name in names:
            segments[column] = list(r[name])
    if representations.FEATURES in names:
        track_row, segment_rows = (_npy(data) for data in r[representations.FEATURES])
        track |= dict(zip(columns, track_row, strict=True))
        segments = pd.concat([segments, pd.DataFrame(segment_rows, columns=columns)], axis=1)
    return track, segments


def _skip_reason(r: dict, audio) -> str | None:
    """Why a record's track is not used (a bad file, or a short clip under audio.short_clips: skip), or None."""
    meta = json.loads(r["meta"]) if r["meta"] else {}
    path, digest, reason = (r[key].decode() for key in ("path", "digest", "reason"))
    n_segments, short_seconds = meta.get("n_segments", 0), meta.get("short_seconds")
    result = TrackResult(path, digest, n_segments, hit=True, reason=reason or None, short_seconds=short_seconds)
    return result.under_policy(audio).reason


def _split_decodable(tables: list, records: list[dict], decoded: list[bool], method: str, cfg: Config) -> list:
    """The tables of the decoded tracks with the splits `split_decodable` gives them (stratified and k-fold splits
    are made again over the tracks that decoded)."""
    rows = [[r[name].decode() for name in INDEX_COLUMNS] for r in records]
    index = Index(pd.DataFrame(rows, columns=INDEX_COLUMNS), split_method=method)
    split = split_decodable(index, np.array(decoded), cfg.data, cfg.seed).tracks.set_index("track_id")["split"]
    for track, frame in tables:
        track["split"] = frame["split"] = split[track["track_id"]]
    return tables


def read_prepared(folder: str, cfg: Config, names: tuple[str, ...] | None = None, held: bool = True):
    """The Prepared tables (genre_tf.extract.prepared) of shards, as the local engine makes them from the cache: the
    same tracks in index order, with the same feature rows; a segment's `mel_path` / `musicnn_path` holds its file's
    bytes instead of a path (genre_tf.inputs.pipeline's readers take either). `names`: default what the model reads.

    `held=False` (data.stream): the segments' files are not read into the table (it has no `mel_path` /
    `musicnn_path`; `shard` names the file a segment's track is in), and the tracks come in the order
    `track_dataset` reads them, the order a streamed split's examples come in (genre_tf.inputs.pipeline.ShardStream);
    feature rows are held still."""
    folder = folder.rstrip("/")
    manifest = read_manifest(folder)
    names = (representations.read_by(cfg.model),) if names is None else representations.check(names)
    check_recipe(manifest, folder, cfg, names)
    read = names if held else tuple(name for name in names if name not in PATH_COLUMNS)
    records = list(track_dataset(shard_files(folder), read).as_numpy_iterator())
    if held:
        records.sort(key=lambda r: r["position"])
    columns = features.feature_columns(cfg.features.n_mfcc) if representations.FEATURES in names else []
    tables, skipped, decoded = [], [], []
    for r in records:
        reason = _skip_reason(r, cfg.audio)
        decoded.append(reason is None)
        if reason is None:
            tables.append(_track_tables(r, read, columns, cfg.audio))
        else:
            skipped.append((r["path"].decode(), r["track_id"].decode(), reason))
    n_failed = len(skipped)
    if manifest.get("split_method") and not all(decoded):  # as the local engine: failed tracks take no slot
        tables = _split_decodable(tables, records, decoded, manifest["split_method"], cfg)
    skipped += [tuple(problem) for problem in manifest["problems"]]
    tracks = pd.DataFrame([track for track, _ in tables], columns=[*INDEX_COLUMNS, "digest", "n_segments", *columns])
    segment_columns = [
        "track_id",
        "segment",
        "label",
        "split",
        *(PATH_COLUMNS[n] for n in read if n in PATH_COLUMNS),
    ]
    segment_columns += [] if held else ["shard"]
    segment_columns += columns
    frames = [frame for _, frame in tables]
    segments = (
        pd.concat(frames, ignore_index=True)[segment_columns] if frames else pd.DataFrame(columns=segment_columns)
    )
    stats = {
        "tracks": len(tracks),
        "segments": len(segments),
        "skipped": n_failed,
        "reported": len(skipped) - n_failed,
        "split": manifest["split"],
        "splits": tracks["split"].value_counts().sort_index().to_dict(),
        "genres": genre_counts(tracks),
        "representations": list(names),
        "cache_keys": {name: manifest["cache_keys"][name] for name in names},
        "shards": folder,
    }
    return Prepared(tracks, segments, pd.DataFrame(skipped, columns=SKIPPED_COLUMNS), stats)
