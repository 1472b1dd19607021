"""What a model is compiled with: the loss and the optimizer, built once from the config for every training path.

The learning rate schedule is a function of the optimizer's iteration count, which the epoch backup saves and
restores with the optimizer's other variables, so a resumed phase continues on the same curve.
"""

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


def build_schedule(
    train: TrainConfig, learning_rate: float, steps_per_epoch: int, epochs: int
) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """The learning rate over one phase of `epochs` x `steps_per_epoch` steps, as train.schedule says.

    A warm-up rises linearly from 0 to `learning_rate` over train.warmup_epochs (cut to the phase); then "cosine"
    decays to train.min_learning_rate (at most `learning_rate`) at the phase's last step, and "constant" stays.
    Without a warm-up, "constant" is the plain number, as before schedules existed.
    """
    total = max(epochs * steps_per_epoch, 1)
    warmup = min(round(train.warmup_epochs * steps_per_epoch), total)
    if train.schedule == "constant" and warmup == 0:
        return learning_rate
    floor = min(train.min_learning_rate / learning_rate, 1.0) if learning_rate > 0 else 0.0
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0,
        decay_steps=max(total - warmup, 1),
        alpha=1.0 if train.schedule == "constant" else floor,  # alpha 1: the cosine stays at its start
        warmup_target=learning_rate,
        warmup_steps=warmup,
    )


def build_optimizer(
    train: TrainConfig, learning_rate: float, steps_per_epoch: int, epochs: int
) -> keras.optimizers.Optimizer:
    """The optimizer of one training phase: `learning_rate` scheduled over its `epochs` of `steps_per_epoch`."""
    schedule = build_schedule(train, learning_rate, steps_per_epoch, epochs)
    if train.optimizer == "adamw":
        return keras.optimizers.AdamW(schedule, weight_decay=train.weight_decay)
    return keras.optimizers.Adam(schedule)
