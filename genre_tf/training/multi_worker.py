"""Distributed training: the tf.distribute strategy of a run, who is chief, and the multi-worker training loop."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from genre_tf.config import ConfigError, TrainConfig
from genre_tf.training.optimization import build_loss


def is_chief() -> bool:
    """True unless TF_CONFIG names this process a non-chief worker of a multi-worker cluster."""
    tf_config = json.loads(os.environ.get("TF_CONFIG", "{}"))
    task = tf_config.get("task", {})
    cluster = tf_config.get("cluster", {})
    if not task or task.get("type") == "chief":
        return True
    return task.get("type") == "worker" and task.get("index", 0) == 0 and "chief" not in cluster


def make_strategy(kind: str) -> tf.distribute.Strategy:
    if kind == "mirrored":
        return tf.distribute.MirroredStrategy()
    if kind == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise ConfigError("train.distribute", "multi_worker needs the TF_CONFIG environment variable")
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def worker_run_dir(run_dir: Path) -> Path:
    """Where a process trains: the run directory for the chief, a scratch folder beside it for other workers."""
    if is_chief():
        return run_dir
    index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    return run_dir.parent / f".{run_dir.name}.worker-{index}"


def fit_multi_worker(
    model: keras.Model,
    train_cfg: TrainConfig,
    strategy: tf.distribute.Strategy,
    ds: tf.data.Dataset | Callable[[tf.distribute.InputContext], tf.data.Dataset],
    valid: tf.data.Dataset | None,
    steps: int,
    global_batch: int,
    epochs: range,
    callbacks: list[keras.callbacks.Callback],
) -> None:
    """`fit` for MultiWorkerMirroredStrategy: Keras 3's own fit fails there (keras-team/keras#20585).

    Each worker takes its share of every global batch: `ds` a dataset is distributed by element; a function of
    the input context (a split streamed from shards) makes each worker's own batches from its own shard files.
    Gradients are all-reduced by the strategy, and every worker validates on the whole valid split
    so all of them make the same early-stopping choice. Callbacks see the logs `fit` would give.
    """
    per_example = build_loss(train_cfg, reduction=None)

    def replica_step(x, y):
        with tf.GradientTape() as tape:
            probs = model(x, training=True)
            loss = tf.nn.compute_average_loss(per_example(y, probs), global_batch_size=global_batch)
        grads = tape.gradient(loss, model.trainable_variables)
        model.optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss, _correct(y, probs)

    @tf.function
    def train_step(x, y):
        loss, correct = strategy.run(replica_step, args=(x, y))
        return strategy.reduce("SUM", loss, axis=None), strategy.reduce("SUM", correct, axis=None)

    @tf.function
    def valid_step(x, y):
        probs = model(x, training=False)
        return tf.reduce_sum(per_example(y, probs)), _correct(y, probs)

    if isinstance(ds, tf.data.Dataset):
        batches = iter(strategy.experimental_distribute_dataset(ds))
    else:
        batches = iter(strategy.distribute_datasets_from_function(ds))
    hooks = keras.callbacks.CallbackList(callbacks, model=model)
    hooks.on_train_begin()
    for epoch in epochs:
        hooks.on_epoch_begin(epoch)
        loss = correct = 0.0
        for _ in range(steps):
            step_loss, step_correct = train_step(*next(batches))
            loss, correct = loss + float(step_loss), correct + float(step_correct)
        logs = {"accuracy": correct / (steps * global_batch), "loss": loss / steps}
        if valid is not None:  # None in a refit, which trains on the valid split
            val = np.sum([[*map(float, valid_step(x, y)), len(y)] for x, y in valid], axis=0)
            logs.update(val_accuracy=val[1] / val[2], val_loss=val[0] / val[2])
        print(f"epoch {epoch + 1}/{epochs.stop}: " + " - ".join(f"{k} {v:.4f}" for k, v in logs.items()))
        hooks.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    hooks.on_train_end()


def _correct(y: tf.Tensor, probs: tf.Tensor) -> tf.Tensor:
    """How many argmax predictions equal their integer label."""
    return tf.reduce_sum(tf.cast(tf.equal(tf.argmax(probs, -1, output_type=tf.int32), y), tf.float32))
