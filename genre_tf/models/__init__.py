"""Model families by name (`model.kind`), and `build_model`: the one place that turns a ModelConfig into a model.

Everything that depends on the kind (whether it has a backbone to freeze and cut, how a run of it is described) is
asked of its `Family` here, never tested by string elsewhere; which input it reads is `representations.read_by`,
which needs no TensorFlow.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras

from genre_tf.config import ConfigError, ModelConfig
from genre_tf.models.backbone import MEL_IMAGE, MUSICNN_PATCH, WeightsUnavailable
from genre_tf.models.cnn import build_cnn, describe_cnn
from genre_tf.models.mlp import FEATURES, build_mlp, describe_mlp
from genre_tf.models.transfer import build_transfer, check_transfer, describe_transfer


@dataclass(frozen=True)
class Family:
    """A model family: its builder, the ModelConfig section the builder reads, and what callers ask of it."""

    section: str
    builder: Callable[..., keras.Model]
    describe: Callable[[ModelConfig], str]  # the parameters that tell its runs apart
    has_backbone: bool = False  # a pretrained part that can be frozen, fine-tuned by blocks and cut at a boundary
    check: Callable[[ModelConfig], None] = lambda cfg: None  # raises ConfigError for settings the family refuses

    def build(self, cfg: ModelConfig, input_shape: tuple[int, ...], n_classes: int) -> keras.Model:
        self.check(cfg)
        return self.builder(getattr(cfg, self.section), tuple(input_shape), n_classes)

    def track_level(self, cfg: ModelConfig) -> bool:
        """Whether a model of this config predicts whole tracks from its segments' pooled features (a probe)."""
        return self.has_backbone and cfg.level == "track"


FAMILIES: dict[str, Family] = {
    "mlp": Family("mlp", build_mlp, describe_mlp),
    "cnn": Family("cnn", build_cnn, describe_cnn),
    "transfer": Family("transfer", build_transfer, describe_transfer, True, check_transfer),
}

__all__ = [
    "FAMILIES",
    "FEATURES",
    "MEL_IMAGE",
    "MUSICNN_PATCH",
    "Family",
    "WeightsUnavailable",
    "build_model",
    "family",
]


def family(cfg: ModelConfig) -> Family:
    """The family of `cfg.kind`."""
    if cfg.kind not in FAMILIES:
        raise ConfigError("model.kind", f"must be one of {', '.join(FAMILIES)}, got {cfg.kind!r}")
    return FAMILIES[cfg.kind]


def build_model(cfg: ModelConfig, input_shape: tuple[int, ...], n_classes: int) -> keras.Model:
    """Build (not compile) the `cfg.kind` model for inputs of `input_shape` (no batch axis) and n_classes."""
    return family(cfg).build(cfg, input_shape, n_classes)


HEAD = "predictions"  # every family's last layer: Dense(n_classes, softmax)


def with_embedding(model: keras.Model, *extra) -> keras.Model:
    """The model with two outputs, `probabilities` and `embedding` (what its softmax layer reads: the features a
    track is judged by), and `extra` tensors of its graph after them."""
    return keras.Model(model.inputs[0], [model.outputs[0], model.get_layer(HEAD).input, *extra])


def load_saved_model(path: Path) -> keras.Model:
    """A saved model.keras, its custom layers registered by importing this package; uncompiled: a saved run is for
    predicting, and its training loss may be one this process never imported."""
    return keras.models.load_model(path, compile=False)
