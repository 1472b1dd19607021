"""Small convolutional network over log-mel images scaled to [0, 1]."""

from __future__ import annotations

import keras

from genre_tf.config import CnnConfig, ModelConfig


def build_cnn(cfg: CnnConfig, input_shape: tuple[int, ...], n_classes: int) -> keras.Model:
    """Conv2D + BatchNorm + ReLU + pooling blocks (filters doubling), global average pooling, softmax head."""
    inputs = keras.Input(shape=input_shape, name="mel_image")
    pool = keras.layers.MaxPooling2D if cfg.pooling == "max" else keras.layers.AveragePooling2D
    x = inputs
    for i in range(cfg.conv_blocks):
        x = keras.layers.Conv2D(
            cfg.filters * 2**i, cfg.kernel_size, padding="same", use_bias=False, name=f"block{i + 1}_conv"
        )(x)
        # momentum 0.9: the moving statistics must settle within the few hundred steps small datasets give.
        x = keras.layers.BatchNormalization(momentum=0.9, name=f"block{i + 1}_bn")(x)
        x = keras.layers.ReLU(name=f"block{i + 1}_relu")(x)
        # "same" padding lets deep stacks run on small images: a 1x1 map stays 1x1.
        x = pool(2, padding="same", name=f"block{i + 1}_pool")(x)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = keras.layers.Dropout(cfg.dropout, name="dropout")(x)
    outputs = keras.layers.Dense(n_classes, activation="softmax", dtype="float32", name="predictions")(x)
    return keras.Model(inputs, outputs, name="cnn")


def describe_cnn(cfg: ModelConfig) -> str:
    """Blocks, filters, kernel and image size: what tells CNN runs apart."""
    c = cfg.cnn
    return f"{c.conv_blocks} blocks, {c.filters} filters, k{c.kernel_size}, {cfg.image_size[0]}x{cfg.image_size[1]}"
