"""Training machinery shared by `train` and `tune`: phases, resumable fit, run directories.

A run directory gets config.yaml, model.keras (best epoch on the valid split), history.csv,
metrics.json, report.md, confusion_matrix.png, loss_curves.png, skipped.csv and TensorBoard logs.
Killed and started again, a run resumes after its last completed epoch (an epoch backup of the
weights, optimizer and dropout random state; history.json for the choices made so far). The test split is used once,
after training, for the final report.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from genre_tf import boundary, models
from genre_tf.cache import write_atomic
from genre_tf.config import (
    Config,
    ConfigError,
    save_config,
    to_dict,
)
from genre_tf.evaluate import evaluate_run
from genre_tf.inputs import Examples, input_shape, load_examples, split_data, uses_images
from genre_tf.pipeline import FeatureScaler, train_dataset
from genre_tf.run import RunDir


@dataclass(frozen=True)
class Phase:
    """One `fit`: how many epochs, at which learning rate, with how much of a backbone trainable."""

    name: str
    epochs: int
    learning_rate: float
    backbone: str | None = None  # None: no backbone; "frozen"; "configured": as trainable_blocks / _layers say


def plan_phases(cfg: Config) -> list[Phase]:
    """One phase, or for a partly unfrozen backbone with fine_tune_epochs: head first, then fine-tune."""
    model, train = cfg.model, cfg.train
    if model.kind != "resnet50":
        return [Phase("train", train.epochs, train.learning_rate)]
    resnet = model.resnet
    frozen = (resnet.trainable_blocks if resnet.trainable_layers is None else resnet.trainable_layers) == 0
    if frozen or train.fine_tune_epochs == 0:
        return [Phase("train", train.epochs, train.learning_rate, "configured")]
    return [
        Phase("head", train.epochs, train.learning_rate, "frozen"),
        Phase("fine_tune", train.fine_tune_epochs, train.fine_tune_learning_rate, "configured"),
    ]


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


def _improved(value: float, best: float | None, monitor: str) -> bool:
    if best is None:
        return True
    return value > best if monitor == "val_accuracy" else value < best


def seed_generators(model: keras.Model) -> list:
    """The random-state generators of a model's layers (dropout), nested models included."""
    found = []
    for layer in model.layers:
        if hasattr(layer, "layers"):
            found += seed_generators(layer)
        if getattr(layer, "seed_generator", None) is not None:
            found.append(layer.seed_generator)
    return found


class EpochBackup(keras.callbacks.Callback):
    """Weights, optimizer and dropout random state after every epoch, safe against a kill at any moment.

    Keras' BackupAndRestore writes its weights file in place, so a kill during the write leaves a
    truncated file, and it does not keep the dropout layers' random state, so a resumed run draws
    other masks. Here each epoch's weights and random state go to new files and a small pointer,
    replaced atomically, names the last complete pair.
    """

    def __init__(self, folder: Path):
        super().__init__()
        self.folder = folder
        self.pointer = folder / "latest.json"

    def on_epoch_end(self, epoch, logs=None):
        self.folder.mkdir(parents=True, exist_ok=True)
        stem = f"epoch-{epoch + 1:04d}"
        self.model.save_weights(self.folder / f"{stem}.weights.h5")
        seeds = np.array([np.asarray(g.state) for g in seed_generators(self.model)])
        np.save(self.folder / f"{stem}.seeds.npy", seeds)
        write_atomic(self.pointer, json.dumps({"epoch": epoch + 1, "stem": stem}).encode())
        for old in self.folder.glob("epoch-*"):
            if not old.name.startswith(stem):
                old.unlink()

    def restore(self, model: keras.Model) -> int | None:
        """Load the last backup into a compiled model; the epoch to continue from, or None."""
        if not self.pointer.is_file():
            return None
        state = json.loads(self.pointer.read_text())
        model.optimizer.build(model.trainable_variables)
        model.load_weights(self.folder / f"{state['stem']}.weights.h5")
        seeds = np.load(self.folder / f"{state['stem']}.seeds.npy")
        for generator, value in zip(seed_generators(model), seeds, strict=True):
            generator.state.assign(value)
        return state["epoch"]


class Tracker(keras.callbacks.Callback):
    """Best-on-valid checkpoint, early stopping and epoch history, all of it resumable.

    The state lives in history.json, rewritten atomically after every epoch; on resume it is cut
    back to the epoch the backup restores, and the best value and patience count are derived from
    it again, so a resumed run makes the same choices as an uninterrupted one.
    """

    def __init__(self, run: RunDir, phase: Phase, cfg: Config, start_epoch: int, full_model: keras.Model):
        super().__init__()
        self.run, self.phase, self.cfg, self.start_epoch = run, phase, cfg, start_epoch
        self.full_model = full_model  # what model.keras holds, also while only the top above a boundary fits
        self.history = [h for h in run.history() if h["epoch"] < start_epoch]
        monitor = self.cfg.train.monitor
        self.best, self.wait = None, 0
        for h in self.history:
            better = _improved(h[monitor], self.best, monitor)
            self.best = h[monitor] if better else self.best
            if h["phase"] == self.phase.name:
                self.wait = 0 if better else self.wait + 1

    @property
    def patience_exhausted(self) -> bool:
        return bool(self.cfg.train.patience) and self.wait >= self.cfg.train.patience

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch, "phase": self.phase.name, **{k: float(v) for k, v in (logs or {}).items()}}
        row["learning_rate"] = self.phase.learning_rate
        monitor = self.cfg.train.monitor
        if _improved(row[monitor], self.best, monitor):
            self.best, self.wait = row[monitor], 0
            tmp = self.run.path / ".tmp-model.keras"
            self.full_model.save(tmp)
            os.replace(tmp, self.run.model_file)
        else:
            self.wait += 1
        self.history.append(row)
        write_atomic(self.run.history_json, json.dumps(self.history, indent=1).encode())
        if self.patience_exhausted:
            self.model.stop_training = True


def fit_multi_worker(
    model: keras.Model,
    strategy: tf.distribute.Strategy,
    ds: tf.data.Dataset,
    valid: tf.data.Dataset,
    steps: int,
    global_batch: int,
    epochs: range,
    callbacks: list[keras.callbacks.Callback],
) -> None:
    """`fit` for MultiWorkerMirroredStrategy: Keras 3's own fit fails there (keras-team/keras#20585).

    Each worker takes its share of every global batch (the dataset is distributed by element),
    gradients are all-reduced by the strategy, and every worker validates on the whole valid split
    so all of them make the same early-stopping choice. Callbacks see the logs `fit` would give.
    """
    per_example = keras.losses.SparseCategoricalCrossentropy(reduction=None)

    def replica_step(x, y):
        with tf.GradientTape() as tape:
            probs = model(x, training=True)
            loss = tf.nn.compute_average_loss(per_example(y, probs), global_batch_size=global_batch)
        grads = tape.gradient(loss, model.trainable_variables)
        model.optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(probs, -1, output_type=tf.int32), y), tf.float32))
        return loss, correct

    @tf.function
    def train_step(x, y):
        loss, correct = strategy.run(replica_step, args=(x, y))
        return strategy.reduce("SUM", loss, axis=None), strategy.reduce("SUM", correct, axis=None)

    @tf.function
    def valid_step(x, y):
        probs = model(x, training=False)
        correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(probs, -1, output_type=tf.int32), y), tf.float32))
        return tf.reduce_sum(per_example(y, probs)), correct

    batches = iter(strategy.experimental_distribute_dataset(ds))
    hooks = keras.callbacks.CallbackList(callbacks, model=model)
    hooks.on_train_begin()
    for epoch in epochs:
        hooks.on_epoch_begin(epoch)
        loss = correct = 0.0
        for _ in range(steps):
            step_loss, step_correct = train_step(*next(batches))
            loss, correct = loss + float(step_loss), correct + float(step_correct)
        val = np.sum([[*map(float, valid_step(x, y)), len(y)] for x, y in valid], axis=0)
        logs = {
            "accuracy": correct / (steps * global_batch),
            "loss": loss / steps,
            "val_accuracy": val[1] / val[2],
            "val_loss": val[0] / val[2],
        }
        print(f"epoch {epoch + 1}/{epochs.stop}: " + " - ".join(f"{k} {v:.4f}" for k, v in logs.items()))
        hooks.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    hooks.on_train_end()


def _check_run_dir(run: RunDir, cfg: Config, overwrite: bool) -> None:
    """A run directory belongs to one config: refuse to mix two runs in it."""
    if overwrite and run.path.exists():
        shutil.rmtree(run.path)
    if not run.config_file.is_file():
        return
    saved, new = _flat(to_dict(run.config)), _flat(to_dict(cfg))
    changed = [key for key in sorted(saved.keys() | new.keys()) if saved.get(key) != new.get(key)]
    if changed:
        raise ConfigError(
            "--name",
            f"{run.path} holds a run of another config ({', '.join(changed[:4])} differ); "
            "pick another --name or pass --overwrite",
        )


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _log_hparams(run: RunDir, cfg: Config) -> None:
    from tensorboard.plugins.hparams import api as hp

    flat = {k: (v if isinstance(v, (bool, int, float, str)) else str(v)) for k, v in _flat(to_dict(cfg)).items()}
    writer = tf.summary.create_file_writer(str(run.logs_dir))
    with writer.as_default():
        hp.hparams(flat, trial_id=run.path.name)
    writer.close()  # a tuner writes one per trial: open writers would pile up


def _log_confusion_images(run: RunDir) -> None:
    pngs = sorted(run.path.glob("confusion_matrix*.png"))
    writer = tf.summary.create_file_writer(str(run.logs_dir / "evaluation"))
    with writer.as_default():
        for png in pngs:
            image = tf.io.decode_png(tf.io.read_file(str(png)), channels=3)[None]
            tf.summary.image(png.stem, image, step=0)
    writer.close()


def fit_phases(
    run: RunDir,
    cfg: Config,
    examples: Examples,
    scaler: FeatureScaler | None,
    strategy: tf.distribute.Strategy,
    verbose: int,
) -> dict:
    """Run every phase not yet finished; returns what the run record needs (epochs, time, parameters)."""
    classes = json.loads(run.classes_file.read_text())
    train_frame, valid_frame = examples.split("train"), examples.split("valid")
    train_data = split_data(train_frame, cfg, classes, scaler)
    valid = split_data(valid_frame, cfg, classes, scaler).batches(cfg.train.batch_size)
    state_file = run.path / "phases.json"
    state = json.loads(state_file.read_text()) if state_file.is_file() else {"done": [], "seconds": 0.0}
    with strategy.scope():
        model = models.build_model(cfg.model, input_shape(cfg, scaler), len(classes))
    for phase in plan_phases(cfg):
        if phase.name in state["done"]:
            continue
        started = time.perf_counter()
        first_epoch = sum(h["phase"] != phase.name for h in run.history())  # earlier phases are complete
        with strategy.scope():
            if phase.backbone == "frozen":
                models.set_trainable_blocks(model, 0)
            elif phase.backbone == "configured":
                models.apply_trainable(model, cfg.model.resnet)
            if run.model_file.is_file():  # a later phase starts from the best weights so far
                model.load_weights(run.model_file)
            fit_model, phase_train, phase_valid = model, train_data, valid
            if boundary.caches_boundary(cfg):  # the frozen bottom runs once, not every epoch
                blocks = 0 if phase.backbone == "frozen" else cfg.model.resnet.trainable_blocks
                cut = boundary.cut_at_boundary(model, blocks, cfg.model)
                fit_model = cut.top  # shares its weights with `model`
                phase_train = boundary.boundary_split(cut, train_frame, cfg, classes)
                phase_valid = boundary.boundary_split(cut, valid_frame, cfg, classes).batches(cfg.train.batch_size)
            fit_model.compile(
                optimizer=keras.optimizers.Adam(phase.learning_rate),
                loss=keras.losses.SparseCategoricalCrossentropy(),
                metrics=["accuracy"],
            )
        backup = EpochBackup(run.backup_dir / phase.name)
        start_epoch = backup.restore(fit_model) or first_epoch
        last_epoch = first_epoch + phase.epochs
        ds, steps = train_dataset(
            phase_train.loader, len(phase_train), cfg.train.batch_size, cfg.seed, start_epoch, last_epoch
        )
        tracker = Tracker(run, phase, cfg, start_epoch, model)
        callbacks = [tracker, backup]  # history before backup: see Tracker
        if is_chief():
            callbacks.append(keras.callbacks.TensorBoard(str(run.logs_dir), write_graph=False))
        print(f"phase {phase.name}: {phase.epochs} epochs at learning rate {phase.learning_rate:g}")
        if tracker.patience_exhausted:  # it stopped early just before a kill: nothing left to fit
            pass
        elif cfg.train.distribute == "multi_worker":
            epochs = range(start_epoch, last_epoch)
            batch = min(cfg.train.batch_size, len(phase_train))
            fit_multi_worker(fit_model, strategy, ds, phase_valid, steps, batch, epochs, callbacks)
        else:
            fit_model.fit(
                ds,
                shuffle=False,  # train_dataset shuffles, per epoch, from the seed
                validation_data=phase_valid,
                epochs=last_epoch,
                initial_epoch=start_epoch,
                steps_per_epoch=steps,
                callbacks=callbacks,
                verbose=verbose,
            )
        state["done"].append(phase.name)
        state["seconds"] += time.perf_counter() - started
        write_atomic(state_file, json.dumps(state).encode())
        shutil.rmtree(backup.folder, ignore_errors=True)
    return {
        "epochs": len(run.history()),
        "train_seconds": round(state["seconds"], 1),
        "params": int(model.count_params()),
        "trainable_params": int(sum(np.prod(w.shape) for w in model.trainable_weights)),
        "classes_n": len(classes),
    }


def _write_history_csv(run: RunDir) -> None:
    import pandas as pd

    pd.DataFrame(run.history()).to_csv(run.history_csv, index=False)


def worker_run_dir(run_dir: Path) -> Path:
    """Where a process trains: the run directory for the chief, a scratch folder beside it for other workers."""
    if is_chief():
        return run_dir
    index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    return run_dir.parent / f".{run_dir.name}.worker-{index}"


def train(
    cfg: Config,
    run_dir: Path,
    overwrite: bool = False,
    verbose: int = 2,
    eval_splits: tuple[str, ...] = ("valid", "test"),
    examples: Examples | None = None,
) -> dict:
    """Train (or resume, or find finished) the run of `cfg` in `run_dir`; returns its metrics.

    A tuner passes `eval_splits=("valid",)`, so the test split stays unseen, and the examples it
    loaded once for all trials.
    """
    run = RunDir(worker_run_dir(Path(run_dir)))
    _check_run_dir(run, cfg, overwrite)
    if run.finished:
        print(f"{run.path} is already finished; pass --overwrite to train it again")
        return run.metrics()
    strategy = make_strategy(cfg.train.distribute)  # collective ops must exist before any other TF work
    keras.utils.set_random_seed(cfg.seed)
    run.path.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run.config_file)
    examples = examples or load_examples(cfg)
    examples.skipped.to_csv(run.skipped_file, index=False)
    for split in ("train", "valid"):
        if examples.split(split).empty:
            raise ConfigError("data", f"the {split} split is empty; check the split settings")
    classes = examples.classes
    write_atomic(run.classes_file, json.dumps(classes).encode())
    scaler = None
    if not uses_images(cfg):
        scaler = FeatureScaler.fit(examples.split("train"), examples.feature_columns)
        scaler.save(run.scaler_file)
    if is_chief():
        _log_hparams(run, cfg)
    record = fit_phases(run, cfg, examples, scaler, strategy, verbose)
    if not is_chief():  # the chief keeps the artefacts; a worker's scratch folder goes
        shutil.rmtree(run.path, ignore_errors=True)
        return record
    shutil.rmtree(run.backup_dir, ignore_errors=True)
    _write_history_csv(run)
    metrics = evaluate_run(run, list(eval_splits), examples=examples, extra=record)
    _log_confusion_images(run)
    return metrics
