"""What a model is compiled with: the loss and the optimizer, built once from the config for every training path."""

from __future__ import annotations

import keras
from keras import ops

from genre_tf.config import TrainConfig


@keras.saving.register_keras_serializable(package="genre_tf")
class SparseSmoothedCrossentropy(keras.losses.Loss):
    """Cross-entropy of integer labels against probabilities, with the targets smoothed towards uniform.

    Keras' SparseCategoricalCrossentropy has no label smoothing: the integer labels become one-hot rows here.
    """

    def __init__(self, label_smoothing: float = 0.0, reduction="sum_over_batch_size", name="smoothed_crossentropy"):
        super().__init__(reduction=reduction, name=name)
        self.label_smoothing = label_smoothing

    def call(self, y_true, y_pred):
        one_hot = ops.one_hot(ops.cast(ops.reshape(y_true, (-1,)), "int32"), ops.shape(y_pred)[-1])
        return keras.losses.categorical_crossentropy(one_hot, y_pred, label_smoothing=self.label_smoothing)

    def get_config(self) -> dict:
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


def build_loss(train: TrainConfig, reduction: str | None = "sum_over_batch_size") -> keras.losses.Loss:
    """Cross-entropy over integer labels and softmax outputs, smoothed by train.label_smoothing."""
    if train.label_smoothing:
        return SparseSmoothedCrossentropy(train.label_smoothing, reduction=reduction)
    return keras.losses.SparseCategoricalCrossentropy(reduction=reduction)


def build_soft_loss(train: TrainConfig, reduction: str | None = "sum_over_batch_size") -> keras.losses.Loss:
    """Cross-entropy over one-hot or soft targets (mixup's), smoothed by train.label_smoothing."""
    return keras.losses.CategoricalCrossentropy(label_smoothing=train.label_smoothing, reduction=reduction)


def build_optimizer(train: TrainConfig, learning_rate: float) -> keras.optimizers.Optimizer:
    """The optimizer of one training phase at its learning rate."""
    return keras.optimizers.Adam(learning_rate)
