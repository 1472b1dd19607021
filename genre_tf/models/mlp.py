"""Multilayer perceptron over rows of the (already normalised) feature table."""

from __future__ import annotations

import keras

from genre_tf.config import MlpConfig, ModelConfig
from genre_tf.features.representations import FEATURES

__all__ = ["FEATURES", "build_mlp", "describe_mlp"]


def build_mlp(cfg: MlpConfig, input_shape: tuple[int, ...], n_classes: int) -> keras.Model:
    """Dense(units) + [BatchNorm] + ReLU + Dropout blocks, then a softmax layer."""
    inputs = keras.Input(shape=input_shape, name="features")
    x = inputs
    for i in range(cfg.hidden_layers):
        # BatchNorm's beta makes the Dense bias redundant.
        x = keras.layers.Dense(cfg.units, use_bias=not cfg.batch_norm, name=f"dense_{i}")(x)
        if cfg.batch_norm:
            # momentum 0.9: the moving statistics must settle within the few hundred steps small datasets give.
            x = keras.layers.BatchNormalization(momentum=0.9, name=f"bn_{i}")(x)
        x = keras.layers.ReLU(name=f"relu_{i}")(x)
        x = keras.layers.Dropout(cfg.dropout, name=f"dropout_{i}")(x)
    # float32 softmax keeps probabilities exact under a mixed-precision policy.
    outputs = keras.layers.Dense(n_classes, activation="softmax", dtype="float32", name="predictions")(x)
    return keras.Model(inputs, outputs, name="mlp")


def describe_mlp(cfg: ModelConfig) -> str:
    """Rows, layers, width and dropout: what tells MLP runs apart."""
    return f"{cfg.level}, {cfg.mlp.hidden_layers}x{cfg.mlp.units}, dropout {cfg.mlp.dropout}"
