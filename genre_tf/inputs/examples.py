"""From a config to model inputs: one row per example (a track or a segment), per split, as tf.data.

Train, evaluate, predict and tune all come through here, so a model always sees its inputs made
the same way: the run's saved config and scaler decide everything.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf

from genre_tf import models
from genre_tf.config import Config, ConfigError
from genre_tf.data.index import Index, index_table
from genre_tf.extract.pool import SharedPool
from genre_tf.extract.prepared import SKIPPED_COLUMNS, Prepared, prepare, prepare_index
from genre_tf.extract.shards import read_prepared, shard_files
from genre_tf.features import musicnn_input, representations
from genre_tf.features.analysis import feature_columns
from genre_tf.features.scaling import Scaler
from genre_tf.inputs import augment, pipeline
from genre_tf.inputs.recipe import caches_boundary


@dataclass
class Examples:
    """Model examples with their track, label and split; feature columns or a mel image path each."""

    frame: pd.DataFrame
    feature_columns: list[str]
    skipped: pd.DataFrame
    split_note: str = ""  # which split the tracks got and why (dataset.split_note)

    def split(self, name: str) -> pd.DataFrame:
        return self.frame[self.frame.split == name].reset_index(drop=True)

    @property
    def classes(self) -> list[str]:
        return sorted(self.frame.loc[self.frame.label != "", "label"].unique())


def model_input(cfg: Config) -> str:
    """The input representation the configured model reads (models.FEATURES, models.MEL_IMAGE, ...)."""
    return representations.read_by(cfg.model)


def reads_features(cfg: Config) -> bool:
    return model_input(cfg) == models.FEATURES


def model_feature_columns(cfg: Config) -> list[str]:
    """The feature-table columns a features model reads: the published names, with features.n_mfcc MFCCs."""
    return feature_columns(cfg.features.n_mfcc) if reads_features(cfg) else []


def examples_from_prepared(prepared: Prepared, cfg: Config) -> Examples:
    """Pick the rows the model family trains on: whole tracks for a track-level features model, else segments."""
    whole_tracks = reads_features(cfg) and cfg.model.level == "track"
    frame = prepared.tracks if whole_tracks else prepared.segments
    return Examples(frame, model_feature_columns(cfg), prepared.skipped, prepared.stats.get("split", ""))


def examples_from_table(csv_path: Path, cfg: Config) -> Examples:
    """A GTZAN-style feature table: one example per row; only a features model (the MLP) can use it."""
    if not reads_features(cfg):
        raise ConfigError("model.kind", f"{cfg.model.kind} needs audio; a feature table only feeds the mlp")
    index, table = index_table(csv_path, cfg.data, cfg.seed)
    columns = model_feature_columns(cfg)
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ConfigError("data.csv", f"{csv_path} lacks feature column(s) {', '.join(missing[:5])}")
    frame = index.tracks.join(table, on="track_id")
    skipped = pd.DataFrame([(p, p, r) for p, r in index.problems], columns=SKIPPED_COLUMNS)
    return Examples(frame, columns, skipped, index.split_note)


def load_examples(cfg: Config, progress: bool = True) -> Examples:
    """The labeled examples of a training config (audio is prepared through the cache, or read from data.shards)."""
    if cfg.data.source == "table":
        examples = examples_from_table(cfg.data.csv, cfg)
        if progress:
            print(f"split: {examples.split_note}", flush=True)
        return examples
    if cfg.data.shards:
        return examples_from_prepared(read_prepared(cfg.data.shards, cfg, held=not streams(cfg)), cfg)
    return examples_from_prepared(prepare(cfg, progress=progress), cfg)


def examples_for_index(index: Index, cfg: Config, progress: bool = True, pool: SharedPool | None = None) -> Examples:
    """Examples for arbitrary (e.g. unlabeled) audio, made with a run's recipe (`pool`: see `prepare_index`)."""
    return examples_from_prepared(prepare_index(index, cfg, progress=progress, pool=pool), cfg)


def streams(cfg: Config) -> bool:
    """Whether the model's inputs are streamed from data.shards (data.stream; a features model holds its rows).

    ConfigError where the run needs a split in memory: augmentation and the cached boundary of a transfer model
    read elements by their index."""
    if not cfg.data.stream or reads_features(cfg):
        return False
    if cfg.augment.active:
        raise ConfigError("data.stream", "augmentation reads the train split by element index; turn off augment.*")

    if caches_boundary(cfg):
        raise ConfigError("data.stream", "the cached boundary holds the split; set model.transfer.cache_boundary=false")
    return True


@dataclass
class SplitData:
    """One split as a model sees it: a loader per element, labels and the track of each element.

    The training split also carries its augmentation for `pipeline.train_dataset`; `batches` never augments.
    A split streamed from shards (data.stream) has a `stream` instead of a loader.
    """

    loader: pipeline.Loader | None
    labels: np.ndarray
    track_ids: np.ndarray
    augmentation: pipeline.Augmentation | None = None
    stream: pipeline.ShardStream | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def batches(self, batch_size: int) -> tf.data.Dataset:
        if self.stream is not None:
            return self.stream.batches(batch_size)
        return pipeline.eval_dataset(self.loader, len(self), batch_size)


def split_data(
    frame: pd.DataFrame, cfg: Config, classes: list[str], scaler: Scaler | None, train: bool = False
) -> SplitData:
    """The examples of `frame` as the model reads them; `train`: with cfg.augment's augmentation for training.

    A frame read from shards without its inputs (data.stream) streams them from cfg.data.shards."""
    labels = pipeline.label_ids(frame["label"], classes)
    kind = model_input(cfg)
    if kind != models.FEATURES and input_column(cfg) not in frame:
        return SplitData(None, labels, frame["track_id"].to_numpy(), stream=shard_stream(frame, cfg, labels))
    if kind == models.FEATURES:
        read, to_input = pipeline.table_reader(scaler.transform(frame)), None
    else:
        decode, to_input = segment_decoding(cfg)
        read = pipeline.decoding_reader(frame[input_column(cfg)].tolist(), decode)
    loader = pipeline.reading_loader(read, labels, to_input)
    augmented = augment.augmentation(frame, cfg, kind, read, to_input, labels, len(classes)) if train else None
    return SplitData(loader, labels, frame["track_id"].to_numpy(), augmented)


def shard_stream(frame: pd.DataFrame, cfg: Config, labels: np.ndarray) -> pipeline.ShardStream:
    """The split of `frame` (rows in the order the shards are read, with their class indices `labels`) streamed
    from the shard files of cfg.data.shards."""
    decode_bytes, to_input = segment_decoding(cfg)

    def decode(data: tf.Tensor) -> tf.Tensor:
        unit = decode_bytes(data)
        return unit if to_input is None else to_input(unit)

    files = tuple(shard_files(cfg.data.shards))
    return pipeline.ShardStream.of_split(files, model_input(cfg), frame, labels, decode)


def segment_decoding(cfg: Config) -> tuple[Callable[[tf.Tensor], tf.Tensor], pipeline.MelImage | None]:
    """How a cached segment file's bytes become the model's input: decode them (a musicnn patch's mel power, or a
    mel PNG's [0, 1] image), then, for an image model, make the image its size and channels. Augmentation works
    between the two, on the decoded segment."""
    if model_input(cfg) == models.MUSICNN_PATCH:
        frames, n_mels = input_shape(cfg, None)
        return partial(pipeline.patch_from_bytes, frames=frames, n_mels=n_mels), None
    return pipeline.png_to_unit, pipeline.mel_model_input(cfg.model)


def input_column(cfg: Config) -> str:
    """The examples' column of cached input files the model reads (its content-addressed paths)."""
    return representations.PATH_COLUMNS[model_input(cfg)]


def input_shape(cfg: Config, scaler: Scaler | None) -> tuple[int, ...]:
    kind = model_input(cfg)
    if kind == models.FEATURES:
        return (len(scaler.columns),)
    if kind == models.MUSICNN_PATCH:
        return (musicnn_input.patch_frames(cfg.audio.segment_seconds), musicnn_input.N_MELS)
    return pipeline.image_input_shape(cfg.model)
