"""The loss and optimizer every training path compiles with, and train.label_smoothing reaching the loss."""

import keras
import numpy as np
import pandas as pd
import pytest

from genre_tf.config import TrainConfig
from genre_tf.inputs.pipeline import label_ids
from genre_tf.run import RunDir
from genre_tf.training.fit import class_weights, train
from genre_tf.training.optimization import (
    SparseSmoothedCrossentropy,
    build_loss,
    build_optimizer,
    build_schedule,
    build_soft_loss,
)

LABELS = np.array([0, 2, 1])
PROBS = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.25, 0.5, 0.25]], dtype=np.float32)


def smoothed_crossentropy(labels: np.ndarray, probs: np.ndarray, smoothing: float) -> np.ndarray:
    """Per example: -sum_k t_k log p_k with t = (1 - smoothing) one_hot + smoothing / K, as Keras clips p."""
    k = probs.shape[1]
    targets = np.eye(k)[labels] * (1 - smoothing) + smoothing / k
    return -(targets * np.log(np.clip(probs, 1e-7, 1 - 1e-7))).sum(axis=1)


def test_without_smoothing_the_loss_is_sparse_crossentropy():
    loss = build_loss(TrainConfig())
    assert isinstance(loss, keras.losses.SparseCategoricalCrossentropy)
    expected = -np.log(PROBS[np.arange(3), LABELS]).mean()
    assert float(loss(LABELS, PROBS)) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("smoothing", [0.1, 0.5])
def test_smoothed_loss_equals_the_hand_computed_value(smoothing):
    loss = build_loss(TrainConfig(label_smoothing=smoothing))
    assert isinstance(loss, SparseSmoothedCrossentropy) and loss.label_smoothing == smoothing
    expected = smoothed_crossentropy(LABELS, PROBS, smoothing)
    assert float(loss(LABELS, PROBS)) == pytest.approx(expected.mean(), rel=1e-6)
    assert float(loss(LABELS[:, None], PROBS)) == pytest.approx(expected.mean(), rel=1e-6)  # (batch, 1) labels too
    per_example = build_loss(TrainConfig(label_smoothing=smoothing), reduction=None)
    np.testing.assert_allclose(per_example(LABELS, PROBS), expected, rtol=1e-6)


def test_smoothed_loss_survives_serialization():
    loss = build_loss(TrainConfig(label_smoothing=0.2))
    again = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(again, SparseSmoothedCrossentropy) and again.label_smoothing == 0.2
    assert float(again(LABELS, PROBS)) == pytest.approx(float(loss(LABELS, PROBS)), rel=1e-7)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_soft_loss_takes_one_hot_and_mixed_targets(smoothing):
    """mixup's loss: on one-hot targets it is the integer-label loss; on soft ones, -sum_k t_k log p_k, smoothed."""
    loss = build_soft_loss(TrainConfig(label_smoothing=smoothing))
    one_hot = np.eye(3)[LABELS]
    assert float(loss(one_hot, PROBS)) == pytest.approx(
        float(build_loss(TrainConfig(label_smoothing=smoothing))(LABELS, PROBS)), rel=1e-6
    )
    soft = 0.7 * one_hot + 0.3 * one_hot[::-1]
    targets = soft * (1 - smoothing) + smoothing / 3
    expected = -(targets * np.log(np.clip(PROBS, 1e-7, 1 - 1e-7))).sum(axis=1)
    assert float(loss(soft, PROBS)) == pytest.approx(expected.mean(), rel=1e-6)
    per_example = build_soft_loss(TrainConfig(label_smoothing=smoothing), reduction=None)
    np.testing.assert_allclose(per_example(soft, PROBS), expected, rtol=1e-6)


def test_optimizer_is_adam_at_the_phase_learning_rate():
    optimizer = build_optimizer(TrainConfig(learning_rate=0.5), 0.01, steps_per_epoch=10, epochs=3)
    assert type(optimizer) is keras.optimizers.Adam
    assert float(optimizer.learning_rate) == pytest.approx(0.01)
    assert build_schedule(TrainConfig(), 0.01, steps_per_epoch=10, epochs=3) == 0.01, "constant: a plain number"


def one_step(train: TrainConfig, weight: float, gradient: float) -> float:
    """The weight after one step of the configured optimizer at learning rate 0.5."""
    variable = keras.Variable(weight)
    build_optimizer(train, 0.5, steps_per_epoch=1, epochs=1).apply_gradients([(keras.ops.array(gradient), variable)])
    return float(variable)


def test_adamw_decays_weights_apart_from_the_gradient_and_adam_does_not():
    """AdamW's decay is decoupled: w <- w - lr * weight_decay * w, even where Adam's own step is 0 (zero gradient)."""
    adamw = TrainConfig(optimizer="adamw", weight_decay=0.1)
    assert isinstance(build_optimizer(adamw, 0.5, 1, 1), keras.optimizers.AdamW)
    assert one_step(adamw, 2.0, 0.0) == pytest.approx(2.0 - 0.5 * 0.1 * 2.0)
    assert one_step(TrainConfig(optimizer="adam", weight_decay=0.1), 2.0, 0.0) == 2.0, "weight_decay is adamw's"
    # With a gradient, Adam's first step is lr * sign(g); AdamW's decay comes on top.
    assert one_step(adamw, 2.0, 3.0) == pytest.approx(2.0 - 0.5 * 0.1 * 2.0 - 0.5, rel=1e-5)


def schedule_at(train: TrainConfig, learning_rate: float, steps: list[int]) -> list[float]:
    schedule = build_schedule(train, learning_rate, steps_per_epoch=10, epochs=5)  # 50 steps
    return [float(schedule(step)) for step in steps]


def test_cosine_warms_up_linearly_then_decays_to_the_floor_at_the_phase_end():
    train = TrainConfig(schedule="cosine", warmup_epochs=1, min_learning_rate=0.1)
    # 10 warm-up steps from 0, then 40 of cosine from 1.0 to 0.1: halfway (step 30) is 0.1 + 0.9 / 2.
    values = schedule_at(train, 1.0, [0, 5, 10, 30, 50, 80])
    assert values == pytest.approx([0.0, 0.5, 1.0, 0.55, 0.1, 0.1], abs=1e-6)
    no_warmup = schedule_at(TrainConfig(schedule="cosine"), 2.0, [0, 25, 50])
    assert no_warmup == pytest.approx([2.0, 1.0, 0.0], abs=1e-6)
    # The floor is capped at the phase's rate: a fine-tune phase at 1e-5 under a floor of 1e-4 stays at 1e-5.
    assert schedule_at(TrainConfig(schedule="cosine", min_learning_rate=1e-4), 1e-5, [0, 50]) == pytest.approx(
        [1e-5, 1e-5]
    )


def test_constant_with_warmup_and_a_warmup_longer_than_the_phase():
    assert schedule_at(TrainConfig(warmup_epochs=0.5), 1.0, [0, 1, 5, 20, 50]) == pytest.approx([0, 0.2, 1, 1, 1])
    assert schedule_at(TrainConfig(warmup_epochs=10), 1.0, [0, 25, 50]) == pytest.approx([0, 0.5, 1.0])


def table_config(tmp_path, make_config, csv, name: str, *overrides):
    """A run `name` under tmp_path/runs on a feature table."""
    return make_config(
        tmp_path, f"name={name}", f"output_dir={tmp_path / 'runs'}", "data.source=table", f"data.csv={csv}", *overrides
    )


def train_softmax_layer(tmp_path, make_config, write_feature_table, name: str, rows_per_class: int, *overrides):
    """One epoch of a softmax layer on a tiny feature table: (run, its epoch's history, valid labels, valid probs)."""
    csv = write_feature_table(tmp_path / "table.csv", ["blues", "jazz", "rock"], rows_per_class=rows_per_class)
    layer = ["model.kind=mlp", "model.mlp.hidden_layers=0", "train.epochs=1"]
    cfg = table_config(tmp_path, make_config, csv, name, *layer, *overrides)
    train(cfg, tmp_path / "runs" / name, verbose=0, eval_splits=("valid",))
    run = RunDir(tmp_path / "runs" / name)
    (epoch,) = run.history()
    table = pd.read_csv(csv)
    valid = table[table.split == "valid"]
    probs = run.load_model().predict(run.scaler.transform(valid), verbose=0)
    return run, epoch, label_ids(valid.label, run.classes), probs


def test_training_reads_label_smoothing(tmp_path, make_config, write_feature_table):
    """Defect (96ac9d4): training compiled plain sparse cross-entropy, whatever train.label_smoothing said.

    One epoch of a softmax layer on a tiny table: the valid loss Keras records is the smoothed cross-entropy of the
    saved model's valid predictions, and no loss can go below the entropy of the smoothed targets.
    """
    run, epoch, labels, probs = train_softmax_layer(
        tmp_path, make_config, write_feature_table, "smooth", 4, "train.batch_size=8", "train.label_smoothing=0.5"
    )
    smoothed = smoothed_crossentropy(labels, probs, 0.5).mean()
    plain = smoothed_crossentropy(labels, probs, 0.0).mean()
    assert abs(smoothed - plain) > 0.05, "the check needs predictions where smoothing matters"
    assert epoch["val_loss"] == pytest.approx(smoothed, rel=1e-5)
    assert run.metrics()["split"].startswith("the split column of "), "the run records which split it used"

    targets = np.full(3, 0.5 / 3) + np.eye(3)[0] * 0.5  # 2/3 on the true class, 1/6 on each other
    entropy = -(targets * np.log(targets)).sum()
    assert epoch["loss"] >= entropy and epoch["val_loss"] >= entropy


def test_training_with_mixup_fits_soft_labels_and_validates_on_one_hot_ones(tmp_path, make_config, write_feature_table):
    """With augment.mixup_alpha the loss is categorical cross-entropy: on mixed targets in training, and on the valid
    split's labels made one-hot, where it equals the plain cross-entropy of the saved model's valid predictions."""
    run, epoch, labels, probs = train_softmax_layer(
        tmp_path,
        make_config,
        write_feature_table,
        "mixup",
        6,
        "train.batch_size=4",
        "augment.mixup_alpha=0.4",
        "augment.feature_noise=0.1",
    )
    plain = smoothed_crossentropy(labels, probs, 0.0).mean()
    assert epoch["val_loss"] == pytest.approx(plain, rel=1e-5)
    assert 0.0 <= epoch["val_accuracy"] <= 1.0 and np.isfinite(epoch["loss"])


def test_the_history_logs_the_scheduled_rate_and_a_killed_run_resumes_on_the_same_curve(
    tmp_path, make_config, write_feature_table, killed_after
):
    """Cosine with warm-up under AdamW, an MLP with dropout and BatchNorm: the learning rate in history.json is the
    schedule's at each epoch's last step, and a run killed after epoch 2 resumes (the optimizer's step count comes
    back with the epoch backup) to the same history and weights as a run left alone."""
    csv = write_feature_table(tmp_path / "table.csv", ["blues", "jazz", "rock"], rows_per_class=6)  # 12 train rows
    recipe = ["train.schedule=cosine", "train.warmup_epochs=1", "train.min_learning_rate=1e-4", "train.optimizer=adamw"]
    runs = {}
    for name in ("clean", "killed"):
        cfg = table_config(
            tmp_path,
            make_config,
            csv,
            name,
            "model.mlp.hidden_layers=1",
            "model.mlp.units=8",
            "train.epochs=4",
            "train.batch_size=4",  # 3 steps per epoch
            "train.patience=0",
            *recipe,
        )
        runs[name] = RunDir(tmp_path / "runs" / name)
        if name == "killed":
            with killed_after(2), pytest.raises(RuntimeError, match="killed after epoch 2"):
                train(cfg, runs[name].path, verbose=0, eval_splits=("valid",))
            assert len(runs[name].history()) == 2 and not runs[name].finished
        train(cfg, runs[name].path, verbose=0, eval_splits=("valid",))
    clean, killed = runs["clean"].history(), runs["killed"].history()

    schedule = build_schedule(runs["clean"].config.train, 1e-3, steps_per_epoch=3, epochs=4)
    expected = [float(schedule(3 * epoch)) for epoch in (1, 2, 3, 4)]
    assert expected[0] == pytest.approx(1e-3) and expected[-1] == pytest.approx(1e-4)  # warmed up; at the floor
    assert [h["learning_rate"] for h in clean] == pytest.approx(expected, rel=1e-6)
    for a, b in zip(clean, killed, strict=True):
        assert a.pop("phase") == b.pop("phase") == "train"
        assert a == pytest.approx(b, rel=1e-6), (a, b)
    for a, b in zip(runs["clean"].load_model().weights, runs["killed"].load_model().weights, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, err_msg=a.path)


def test_balanced_class_weight_weights_each_examples_loss_by_its_genres_inverse_frequency(
    tmp_path, make_config, write_feature_table
):
    """A rate of 0 leaves the model as built, so the epoch's training loss is the weighted mean of its examples'."""
    csv = write_feature_table(tmp_path / "table.csv", ["blues", "jazz", "rock"], rows_per_class=6)
    table = pd.read_csv(csv)
    table = table.drop(table[(table.label == "jazz") & (table.split == "train")].index[:3])  # train: 4, 1, 4
    table.to_csv(csv, index=False)
    layer = ["model.kind=mlp", "model.mlp.hidden_layers=0", "train.epochs=1", "train.learning_rate=0"]
    cfg = table_config(
        tmp_path, make_config, csv, "weighted", *layer, "train.batch_size=64", "train.class_weight=balanced"
    )
    train(cfg, tmp_path / "runs" / "weighted", verbose=0, eval_splits=("valid",))
    run = RunDir(tmp_path / "runs" / "weighted")
    (epoch,) = run.history()
    rows = table[table.split == "train"]
    labels = label_ids(rows.label, run.classes)
    losses = smoothed_crossentropy(labels, run.load_model().predict(run.scaler.transform(rows), verbose=0), 0.0)
    weights = np.array([9 / 12, 9 / 3, 9 / 12])[labels]  # n / (genres * count)
    assert class_weights(labels, 3) == pytest.approx({0: 0.75, 1: 3.0, 2: 0.75})
    assert abs((weights * losses).mean() - losses.mean()) > 0.01, "the check needs losses that weighting moves"
    assert epoch["loss"] == pytest.approx((weights * losses).mean(), rel=1e-4)
