"""How a run's model reads its inputs, built once from its config and passed down: the representation it reads, its
shape, how a cached segment's bytes become its input, the examples' column, and whether training can run on a
cached frozen boundary (keras-hub's preprocessor plays this part)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import tensorflow as tf

from genre_tf import models
from genre_tf.config import AudioConfig, AugmentConfig, Config, FeatureConfig, MelConfig, ModelConfig
from genre_tf.features import musicnn_input, representations
from genre_tf.features.analysis import feature_columns
from genre_tf.features.scaling import Scaler
from genre_tf.inputs import pipeline

AUGMENTED = "boundary cache off: augmentation changes what the frozen backbone sees"


@dataclass(frozen=True)
class InputRecipe:
    """What a model reads and how its examples are made, from the config sections that decide it.

    `representation` is one of models.FEATURES, models.MEL_IMAGE, models.MUSICNN_PATCH; `feature_columns` are
    the feature-table columns a features model reads (empty otherwise); `shards` is data.shards, where a
    streamed split reads its inputs; `caches_boundary` says whether training runs on cached boundary activations.
    """

    representation: str
    feature_columns: tuple[str, ...]
    model: ModelConfig
    audio: AudioConfig
    features: FeatureConfig
    mel: MelConfig
    augment: AugmentConfig
    shards: str | None = None
    caches_boundary: bool = False

    @classmethod
    def of(cls, cfg: Config) -> InputRecipe:
        representation = representations.read_by(cfg.model)
        reads = representation == models.FEATURES
        return cls(
            representation=representation,
            feature_columns=tuple(feature_columns(cfg.features.n_mfcc)) if reads else (),
            model=cfg.model,
            audio=cfg.audio,
            features=cfg.features,
            mel=cfg.mel,
            augment=cfg.augment,
            shards=cfg.data.shards,
            caches_boundary=caches_boundary(cfg),
        )

    @property
    def reads_features(self) -> bool:
        return self.representation == models.FEATURES

    @property
    def reads_patches(self) -> bool:
        return self.representation == models.MUSICNN_PATCH

    @property
    def whole_tracks(self) -> bool:
        """Whether an example is a whole track's feature row (a track-level features model), else a segment."""
        return self.reads_features and self.model.level == "track"

    @property
    def column(self) -> str | None:
        """The examples' column of cached input files the model reads (their content-addressed paths); None for a
        features model, which reads `feature_columns`."""
        return representations.PATH_COLUMNS.get(self.representation)

    def shape(self, scaler: Scaler | None = None) -> tuple[int, ...]:
        """The model's input shape without the batch axis (a features model's is its scaler's column count)."""
        if self.reads_features:
            return (len(scaler.columns),)
        if self.reads_patches:
            return (musicnn_input.patch_frames(self.audio.segment_seconds), musicnn_input.N_MELS)
        return pipeline.image_input_shape(self.model)

    def decoding(self) -> tuple[Callable[[tf.Tensor], tf.Tensor], pipeline.MelImage | None]:
        """How a cached segment file's bytes become the model's input: decode them (a musicnn patch's mel power, or
        a mel PNG's [0, 1] image), then, for an image model, make the image its size and channels. Augmentation
        works between the two, on the decoded segment."""
        if self.reads_patches:
            frames, n_mels = self.shape()
            return partial(pipeline.patch_from_bytes, frames=frames, n_mels=n_mels), None
        return pipeline.png_to_unit, pipeline.mel_model_input(self.model)


def caches_boundary(cfg: Config) -> bool:
    """Whether training can run on cached boundary activations: a transfer model cut by blocks, caching on, and
    no augmentation (every item of cfg.augment changes the frozen part's inputs, so its activations too).

    Distributed training keeps the plain path: the cached path is not tested under tf.distribute. So does a
    backbone whose BatchNorm trains.
    """
    return _cacheable(cfg) and not cfg.augment.active


def cache_off_note(cfg: Config) -> str | None:
    """The log line of a run that would train on the cache were it not for its augmentation, else None."""
    return AUGMENTED if _cacheable(cfg) and cfg.augment.active else None


def _cacheable(cfg: Config) -> bool:
    transfer = cfg.model.transfer
    cut_by_blocks = transfer.cache_boundary and transfer.trainable_layers is None
    # With BatchNorm learning the backbone trains in training mode, which the cut (inference mode) does not give.
    frozen_statistics = transfer.batch_norm == "frozen"
    return (
        models.family(cfg.model).has_backbone and cut_by_blocks and frozen_statistics and cfg.train.distribute == "none"
    )
