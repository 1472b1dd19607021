"""From a config to model inputs: one row per example (a track or a segment), per split, as tf.data.

Train, evaluate, predict and tune all come through here, so a model always sees its inputs made
the same way: the run's saved config and scaler decide everything.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf

from genre_tf.config import Config, ConfigError
from genre_tf.data.index import Index
from genre_tf.data.split import index_table
from genre_tf.extract.pool import SharedPool
from genre_tf.extract.prepared import SKIPPED_COLUMNS, Prepared, prepare, prepare_index
from genre_tf.extract.shards import read_prepared, shard_files
from genre_tf.features.scaling import Scaler
from genre_tf.inputs import augment, pipeline
from genre_tf.inputs.recipe import InputRecipe, caches_boundary


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


def examples_from_prepared(prepared: Prepared, recipe: InputRecipe) -> Examples:
    """Pick the rows the model family trains on: whole tracks for a track-level features model, else segments."""
    frame = prepared.tracks if recipe.whole_tracks else prepared.segments
    return Examples(frame, list(recipe.feature_columns), prepared.skipped, prepared.stats.get("split", ""))


def examples_from_table(csv_path: Path, cfg: Config) -> Examples:
    """A GTZAN-style feature table: one example per row; only a features model (the MLP) can use it."""
    recipe = InputRecipe.of(cfg)
    if not recipe.reads_features:
        raise ConfigError("model.kind", f"{cfg.model.kind} needs audio; a feature table only feeds the mlp")
    index, table = index_table(csv_path, cfg.data, cfg.seed)
    columns = list(recipe.feature_columns)
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
    recipe = InputRecipe.of(cfg)
    if cfg.data.shards:
        return examples_from_prepared(read_prepared(cfg.data.shards, cfg, held=not streams(cfg)), recipe)
    return examples_from_prepared(prepare(cfg, progress=progress), recipe)


def examples_for_index(index: Index, cfg: Config, progress: bool = True, pool: SharedPool | None = None) -> Examples:
    """Examples for arbitrary (e.g. unlabeled) audio, made with a run's recipe (`pool`: see `prepare_index`)."""
    return examples_from_prepared(prepare_index(index, cfg, progress=progress, pool=pool), InputRecipe.of(cfg))


def streams(cfg: Config) -> bool:
    """Whether the model's inputs are streamed from data.shards (data.stream; a features model holds its rows).

    ConfigError where the run needs a split in memory: augmentation and the cached boundary of a transfer model
    read elements by their index."""
    if not cfg.data.stream or InputRecipe.of(cfg).reads_features:
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
    frame: pd.DataFrame, recipe: InputRecipe, classes: list[str], scaler: Scaler | None, train: bool = False
) -> SplitData:
    """The examples of `frame` as the model reads them; `train`: with the recipe's augmentation for training.

    A frame read from shards without its inputs (data.stream) streams them from the recipe's shards."""
    labels = pipeline.label_ids(frame["label"], classes)
    if not recipe.reads_features and recipe.column not in frame:
        return SplitData(None, labels, frame["track_id"].to_numpy(), stream=shard_stream(frame, recipe, labels))
    if recipe.reads_features:
        read, to_input = pipeline.table_reader(scaler.transform(frame)), None
    else:
        decode, to_input = recipe.decoding()
        read = pipeline.decoding_reader(frame[recipe.column].tolist(), decode)
    loader = pipeline.reading_loader(read, labels, to_input)
    augmented = augment.augmentation(frame, recipe, read, to_input, labels, len(classes)) if train else None
    return SplitData(loader, labels, frame["track_id"].to_numpy(), augmented)


def shard_stream(frame: pd.DataFrame, recipe: InputRecipe, labels: np.ndarray) -> pipeline.ShardStream:
    """The split of `frame` (rows in the order the shards are read, with their class indices `labels`) streamed
    from the shard files of the recipe's data.shards."""
    decode_bytes, to_input = recipe.decoding()

    def decode(data: tf.Tensor) -> tf.Tensor:
        unit = decode_bytes(data)
        return unit if to_input is None else to_input(unit)

    files = tuple(shard_files(recipe.shards))
    return pipeline.ShardStream.of_split(files, recipe.representation, frame, labels, decode)
