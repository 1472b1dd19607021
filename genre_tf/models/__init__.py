"""Model builders by name, and `build_model`: the one place that turns a ModelConfig into a Keras model."""

from __future__ import annotations

from collections.abc import Callable

import keras

from genre_tf.config import ConfigError, ModelConfig
from genre_tf.models.cnn import build_cnn
from genre_tf.models.mlp import build_mlp
from genre_tf.models.resnet import (
    WeightsUnavailable,
    apply_trainable,
    boundary_layer_name,
    build_resnet,
    get_backbone,
    set_trainable_blocks,
    set_trainable_layers,
    split_at_boundary,
)

# model.kind -> (builder, the ModelConfig section it reads)
BUILDERS: dict[str, tuple[Callable[..., keras.Model], str]] = {
    "mlp": (build_mlp, "mlp"),
    "cnn": (build_cnn, "cnn"),
    "resnet50": (build_resnet, "resnet"),
}

__all__ = [
    "BUILDERS",
    "WeightsUnavailable",
    "apply_trainable",
    "boundary_layer_name",
    "build_model",
    "get_backbone",
    "set_trainable_blocks",
    "set_trainable_layers",
    "split_at_boundary",
]


def build_model(cfg: ModelConfig, input_shape: tuple[int, ...], n_classes: int) -> keras.Model:
    """Build (not compile) the `cfg.kind` model for inputs of `input_shape` (no batch axis) and n_classes."""
    if cfg.kind not in BUILDERS:
        raise ConfigError("model.kind", f"must be one of {', '.join(BUILDERS)}, got {cfg.kind!r}")
    builder, section = BUILDERS[cfg.kind]
    return builder(getattr(cfg, section), tuple(input_shape), n_classes)
