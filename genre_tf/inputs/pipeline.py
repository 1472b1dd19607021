"""tf.data pipelines: feature-table rows and mel images to (input, label) batches.

Every dataset comes with the track id of each element, in element order (evaluation sets are never
shuffled), so predictions can be aggregated per track afterwards. A loader reads an element as cached
(a `Reader`), then makes it the model's input; training augmentation (genre_tf.inputs.augment) works between the two.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import tensorflow as tf

from genre_tf.config import ConfigError, ModelConfig
from genre_tf.extract import shards
from genre_tf.features.mel import PNG_MAX
from genre_tf.inputs.layers import MelImage

AUTOTUNE = tf.data.AUTOTUNE


def label_ids(labels: pd.Series, classes: list[str]) -> np.ndarray:
    """Class indices; unlabeled rows (and labels unseen in training) become -1."""
    lookup = {name: i for i, name in enumerate(classes)}
    return np.array([lookup.get(label, -1) for label in labels], dtype=np.int32)


Loader = Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor]]
Reader = Callable[[tf.Tensor], Any]  # element index -> the element as cached (a tensor, or a tuple of them)


def table_reader(x: np.ndarray | tuple[np.ndarray, ...]) -> Reader:
    """Element i -> row i of `x`: scaled feature rows, or any (n, ...) array such as activations; a tuple of such
    arrays (the inputs of a multi-input model) gives the tuple of their rows i."""
    xs = tf.nest.map_structure(lambda a: tf.constant(a, tf.float32), x)
    return lambda i: tf.nest.map_structure(lambda a: tf.gather(a, i), xs)


def file_reader(sources: list[str] | list[bytes]) -> Reader:
    """Element i -> the bytes of its cached file: read from its path, or held already (tracks read from shards,
    genre_tf.extract.shards, hold their files' bytes)."""
    if sources and isinstance(sources[0], bytes):
        held = tf.constant(sources, tf.string)
        return lambda i: tf.gather(held, i)
    ps = tf.constant([str(p) for p in sources])
    return lambda i: tf.io.read_file(tf.gather(ps, i))


def decoding_reader(sources: list[str] | list[bytes], decode: Callable[[tf.Tensor], Any]) -> Reader:
    """Element i -> `decode` of its cached file's bytes (a path, or its bytes): `png_to_unit` for a mel PNG,
    `patch_from_bytes` for a musicnn patch."""
    read_file = file_reader(sources)
    return lambda i: decode(read_file(i))


def patch_from_bytes(data: tf.Tensor, frames: int, n_mels: int) -> tf.Tensor:
    """A raw little-endian float16 musicnn patch -> (frames, n_mels) float32 mel power."""
    raw = tf.io.decode_raw(data, tf.float16, little_endian=True)
    return tf.cast(tf.reshape(raw, (frames, n_mels)), tf.float32)


def reading_loader(read: Reader, y: np.ndarray, model_input: Callable | None = None) -> Loader:
    """Element i -> (model_input(read(i)), label i); without `model_input` the element is the input as read."""
    ys = tf.constant(y, tf.int32)
    if model_input is None:
        return lambda i: (read(i), tf.gather(ys, i))
    return lambda i: (model_input(read(i)), tf.gather(ys, i))


def mel_model_input(model: ModelConfig) -> MelImage:
    """What makes a [0, 1] mel image the model's input: its size and channels."""
    return MelImage(model.image_size, model.channels, model.channel_mode)


def table_loader(x: np.ndarray | tuple[np.ndarray, ...], y: np.ndarray) -> Loader:
    """Element i -> (row i of `x`, label); see `table_reader`."""
    return reading_loader(table_reader(x), y)


@dataclass(frozen=True)
class Augmentation:
    """Training-only changes to the inputs (genre_tf.inputs.augment), drawn from each element's seed.

    `load` takes the place of the split's loader; `mix`, where set, runs on each batch (mixup), which it gets with
    the seeds of its elements, and returns the batch's inputs and soft labels.
    """

    load: Callable[[tf.Tensor, tf.Tensor], tuple[Any, tf.Tensor]]  # (element index, seed) -> (input, label)
    mix: Callable[[Any, tf.Tensor, tf.Tensor], tuple[Any, tf.Tensor]] | None = None


def element_seed(seed: int, epoch: tf.Tensor, element: tf.Tensor) -> tf.Tensor:
    """The stateless seed of one element in one epoch: a function of (seed, epoch, element index) alone."""
    epoch_seed = tf.stack([tf.constant(seed, tf.int64), tf.cast(epoch, tf.int64)])
    return tf.random.experimental.stateless_fold_in(epoch_seed, tf.cast(element, tf.int64))


def _deterministic(ds: tf.data.Dataset) -> tf.data.Dataset:
    options = tf.data.Options()
    options.deterministic = True
    # In-memory sources have no files to shard: workers of a multi-worker run split by element.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options)


def eval_dataset(loader: Loader, n: int, batch_size: int) -> tf.data.Dataset:
    """All n elements in order (never shuffled), batched."""
    ds = tf.data.Dataset.range(n).map(loader, num_parallel_calls=AUTOTUNE, deterministic=True)
    return _deterministic(ds.batch(batch_size).prefetch(AUTOTUNE))


def train_dataset(
    loader: Loader,
    n: int,
    batch_size: int,
    seed: int,
    first_epoch: int,
    epochs: int,
    augmentation: Augmentation | None = None,
) -> tuple[tf.data.Dataset, int]:
    """Shuffled training batches for epochs [first_epoch, epochs) and the steps per epoch.

    Epoch e's order is a stateless function of (seed, e), so a run resumed at epoch e sees exactly
    the batches an uninterrupted run sees there. Each epoch is cut to whole batches (the few
    elements left over differ from epoch to epoch), so no batch spans two epochs. With `augmentation`,
    element i of epoch e is loaded by `augmentation.load(i, element_seed(seed, e, i))` instead: the
    draws are stateless too, so a resumed run needs no saved state to repeat them.
    """
    batch_size = min(batch_size, n)
    steps = n // batch_size

    def epoch_order(epoch: tf.Tensor) -> tf.data.Dataset:
        keys = tf.random.stateless_uniform([n], seed=tf.stack([tf.constant(seed, tf.int64), epoch]))
        order = tf.argsort(keys)[: steps * batch_size]
        if augmentation is None:
            return tf.data.Dataset.from_tensor_slices(order)
        return tf.data.Dataset.from_tensor_slices((order, tf.fill(tf.shape(order), epoch)))

    ds = tf.data.Dataset.range(first_epoch, max(epochs, first_epoch)).flat_map(epoch_order)
    if augmentation is None:
        ds = ds.map(loader, num_parallel_calls=AUTOTUNE, deterministic=True).batch(batch_size)
    else:

        def load(i: tf.Tensor, epoch: tf.Tensor) -> tuple:
            element = element_seed(seed, epoch, i)
            return (*augmentation.load(i, element), element)

        mix = augmentation.mix or (lambda x, y, seeds: (x, y))
        ds = ds.map(load, num_parallel_calls=AUTOTUNE, deterministic=True).batch(batch_size)
        ds = ds.map(mix, num_parallel_calls=AUTOTUNE, deterministic=True)
    return _deterministic(ds.prefetch(AUTOTUNE)), steps


STREAM_SHUFFLE_SEGMENTS = 2048  # a streamed train split's shuffle buffer, in encoded segments (PNG: ~30 KiB each)


@dataclass(frozen=True)
class ShardStream:
    """A split whose segments are streamed from shard files (genre_tf.extract.shards, data.stream), never held in
    memory.

    `track_ids` and `labels` are the split's tracks and their class indices, in the order the shards are read
    (`shards.read_prepared(..., held=False)`), `track_files` the shard file each is in; `decode` makes a segment's
    bytes (`representation`) the model's input; `n`: the split's segments.
    """

    files: tuple[str, ...]
    representation: str
    track_ids: tuple[str, ...]
    labels: tuple[int, ...]
    track_files: tuple[str, ...]
    decode: Callable[[tf.Tensor], Any]
    n: int

    @classmethod
    def of_split(
        cls,
        files: tuple[str, ...],
        representation: str,
        segments: pd.DataFrame,
        labels: np.ndarray,
        decode: Callable[[tf.Tensor], Any],
    ) -> ShardStream:
        """The stream of a split's `segments` (rows of `shards.read_prepared(..., held=False)`, in the order the
        shards are read, with their class indices `labels`): its tracks, their labels and shard files, in that
        order."""
        first = ~segments["track_id"].duplicated().to_numpy()
        track_ids = tuple(segments["track_id"].to_numpy()[first])
        track_labels = tuple(int(label) for label in np.asarray(labels)[first])
        track_files = tuple(segments["shard"].to_numpy()[first])
        return cls(files, representation, track_ids, track_labels, track_files, decode, len(segments))

    def segments(self, files) -> tf.data.Dataset:
        """(track id, k, bytes, label) of the split's segments in `files`, in the order they are read."""
        rows = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(self.track_ids, tf.string), tf.range(len(self.track_ids), dtype=tf.int64)
            ),
            default_value=-1,
        )
        labels = tf.constant(self.labels, tf.int32)
        ds = shards.split_segments(shards.track_dataset(files, (self.representation,)), self.representation, rows)
        return ds.map(lambda track_id, k, data, row: (track_id, k, data, tf.gather(labels, row)))

    def _examples(self, ds: tf.data.Dataset) -> tf.data.Dataset:
        decode = self.decode
        return ds.map(lambda track_id, k, data, y: (decode(data), y), num_parallel_calls=AUTOTUNE, deterministic=True)

    def batches(self, batch_size: int) -> tf.data.Dataset:
        """Every segment of the split, batched, in the order of `track_ids` (evaluation: never shuffled)."""
        ds = self._examples(self.segments(list(self.files))).batch(batch_size)
        # Known to be n segments: Keras then validates without running out of data to find the end of it.
        ds = ds.apply(tf.data.experimental.assert_cardinality(-(-self.n // batch_size)))
        return _deterministic(ds.prefetch(AUTOTUNE))

    def steps(self, batch_size: int) -> int:
        """Training steps per epoch at `batch_size` (at most the split's segments), as `train_dataset` counts them."""
        return self.n // min(batch_size, self.n)

    def check_shares(self, n_pipelines: int) -> None:
        """ConfigError where the shard files of one of `n_pipelines` input pipelines hold none of the split's
        tracks: that pipeline would give no batches and leave the other workers waiting for it. Every worker checks
        every share, so all of them stop with the same line, before training."""
        held = set(self.track_files)
        for pipeline_id in range(n_pipelines):
            share = shards.pipeline_files(list(self.files), pipeline_id, n_pipelines)
            if not held & set(share):
                names = ", ".join(file.rsplit("/", 1)[-1] for file in share)
                problem = (
                    f"worker {pipeline_id} of {n_pipelines} would read {names}, which hold(s) none of the split's "
                    f"{len(self.track_ids)} tracks: prepare with fewer --shards (each worker needs some of them)"
                )
                raise ConfigError("data.shards", problem)

    def train_batches(
        self,
        batch_size: int,
        seed: int,
        first_epoch: int,
        epochs: int,
        context: tf.distribute.InputContext | None = None,
    ) -> tuple[tf.data.Dataset, int]:
        """Shuffled training batches for epochs [first_epoch, epochs) and the steps per epoch, as `train_dataset`.

        An epoch reads its shard files in an order drawn from (seed, epoch), by parallel interleave, through a
        shuffle buffer seeded the same way: a function of (seed, epoch) alone, so a resumed run sees what an
        uninterrupted one sees. Under tf.distribute `context` names the input pipeline: it reads its own files
        (`shards.worker_files`) and makes its replicas' batches; every pipeline gives each epoch `steps` batches
        per replica, cycling through its files' segments when it holds fewer than the split's share (and leaving
        some out, others each epoch, when it holds more). Pipelines whose files hold none of the split are a config
        error (`check_shares`).
        """
        if context is not None and context.num_input_pipelines > 1:
            self.check_shares(context.num_input_pipelines)
        steps = self.steps(batch_size)
        batch_size = min(batch_size, self.n)
        files = tf.constant(shards.worker_files(list(self.files), context))
        per_replica, replicas = batch_size, 1
        if context is not None:
            per_replica = context.get_per_replica_batch_size(batch_size)
            replicas = context.num_replicas_in_sync // context.num_input_pipelines
        per_epoch = steps * replicas * per_replica

        def epoch_segments(epoch: tf.Tensor) -> tf.data.Dataset:
            epoch_seed = tf.stack([tf.constant(seed, tf.int64), epoch])
            order = tf.argsort(tf.random.stateless_uniform(files.shape, seed=epoch_seed))
            shuffle_seed = tf.random.stateless_uniform([], epoch_seed, maxval=2**31 - 1, dtype=tf.int64)
            ds = self.segments(tf.gather(files, order))
            return ds.shuffle(STREAM_SHUFFLE_SEGMENTS, seed=shuffle_seed).repeat().take(per_epoch)

        ds = tf.data.Dataset.range(first_epoch, max(epochs, first_epoch)).flat_map(epoch_segments)
        ds = self._examples(ds).batch(per_replica, drop_remainder=True)
        options = tf.data.Options()
        options.deterministic = True
        # The input pipeline has picked its files already: a distributed run must not split it again.
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
        return ds.prefetch(AUTOTUNE).with_options(options), steps


def png_to_unit(data: tf.Tensor) -> tf.Tensor:
    """A 16-bit mel PNG to float32 (n_mels, frames, 1) in [0, 1] (0 = mel.db_floor, 1 = mel.db_ceiling)."""
    return tf.cast(tf.io.decode_png(data, channels=1, dtype=tf.uint16), tf.float32) / float(PNG_MAX)


def image_input_shape(model: ModelConfig) -> tuple[int, int, int]:
    return (*model.image_size, model.channels)
