"""Train a model from a config into a run directory, resumable, then evaluate it.

    python -m genre_tf.train --config configs/resnet.yaml [--set train.epochs=3] [--name RUN]

The run directory `<output_dir>/<run>/` gets config.yaml, model.keras (best epoch on the valid
split), history.csv, metrics.json, report.md, confusion_matrix.png, loss_curves.png, skipped.csv
and TensorBoard logs. Killed and started again with the same command, a run resumes after its last
completed epoch. The test split is used once, after training, for the final report.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from genre_tf import models
from genre_tf.cache import write_atomic
from genre_tf.config import Config, ConfigError, add_config_arguments, config_from_args, exit_config_error, to_dict
from genre_tf.config import save_config
from genre_tf.evaluate import evaluate_run, format_headline
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


class Tracker(keras.callbacks.Callback):
    """Best-on-valid checkpoint, early stopping and epoch history, all of it resumable.

    The state lives in history.json, rewritten atomically after every epoch; on resume it is cut
    back to the epoch BackupAndRestore restores, and the best value and patience count are derived
    from it again, so a resumed run makes the same choices as an uninterrupted one.
    """

    def __init__(self, run: RunDir, phase: Phase, cfg: Config, backup_dir: Path, first_epoch: int, chief: bool):
        super().__init__()
        self.run, self.phase, self.cfg = run, phase, cfg
        self.backup_dir, self.first_epoch, self.chief = backup_dir, first_epoch, chief
        self.history: list[dict] = []
        self.best: float | None = None
        self.wait = 0

    def resume_epoch(self) -> int:
        metadata = self.backup_dir / "training_metadata.json"
        return json.loads(metadata.read_text())["epoch"] if metadata.is_file() else self.first_epoch

    def on_train_begin(self, logs=None):
        start = self.resume_epoch()
        self.history = [h for h in self.run.history() if h["epoch"] < start]
        monitor = self.cfg.train.monitor
        self.best, self.wait = None, 0
        for h in self.history:
            better = _improved(h[monitor], self.best, monitor)
            self.best = h[monitor] if better else self.best
            if h["phase"] == self.phase.name:
                self.wait = 0 if better else self.wait + 1

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch, "phase": self.phase.name, **{k: float(v) for k, v in (logs or {}).items()}}
        row["learning_rate"] = self.phase.learning_rate
        monitor = self.cfg.train.monitor
        if _improved(row[monitor], self.best, monitor):
            self.best, self.wait = row[monitor], 0
            if self.chief:
                tmp = self.run.path / ".tmp-model.keras"
                self.model.save(tmp)
                os.replace(tmp, self.run.model_file)
        else:
            self.wait += 1
        self.history.append(row)
        if self.chief:
            write_atomic(self.run.history_json, json.dumps(self.history, indent=1).encode())
        patience = self.cfg.train.patience
        if patience and self.wait >= patience:
            self.model.stop_training = True


def _check_run_dir(run: RunDir, cfg: Config, overwrite: bool) -> None:
    """A run directory belongs to one config: refuse to mix two runs in it."""
    if overwrite and run.path.exists():
        import shutil

        shutil.rmtree(run.path)
    if run.config_file.is_file() and to_dict(run.config) != to_dict(cfg):
        saved, new = to_dict(run.config), to_dict(cfg)
        changed = [k for k in sorted(set(_flat(saved)) | set(_flat(new))) if _flat(saved).get(k) != _flat(new).get(k)]
        raise ConfigError(
            "--name", f"{run.path} holds a run of another config ({', '.join(changed[:4])} differ); "
            "pick another --name or pass --overwrite"
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
    with tf.summary.create_file_writer(str(run.logs_dir)).as_default():
        hp.hparams(flat, trial_id=run.path.name)


def _log_confusion_images(run: RunDir) -> None:
    pngs = sorted(run.path.glob("confusion_matrix*.png"))
    with tf.summary.create_file_writer(str(run.logs_dir / "evaluation")).as_default():
        for png in pngs:
            image = tf.io.decode_png(tf.io.read_file(str(png)), channels=3)[None]
            tf.summary.image(png.stem, image, step=0)


def fit_phases(run: RunDir, cfg: Config, examples: Examples, scaler: FeatureScaler | None, verbose: int) -> dict:
    """Run every phase not yet finished; returns what the run record needs (epochs, time, parameters)."""
    classes = json.loads(run.classes_file.read_text())
    train_frame, valid_frame = examples.split("train"), examples.split("valid")
    train_data = split_data(train_frame, cfg, classes, scaler)
    valid = split_data(valid_frame, cfg, classes, scaler).batches(cfg.train.batch_size)
    state_file = run.path / "phases.json"
    state = json.loads(state_file.read_text()) if state_file.is_file() else {"done": [], "seconds": 0.0}
    chief = is_chief()
    strategy = make_strategy(cfg.train.distribute)
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
            model.compile(
                optimizer=keras.optimizers.Adam(phase.learning_rate),
                loss=keras.losses.SparseCategoricalCrossentropy(),
                metrics=["accuracy"],
            )
        worker = json.loads(os.environ.get("TF_CONFIG", "{}")).get("task", {}).get("index", 0)
        backup_dir = run.backup_dir / phase.name / ("" if chief else f"worker-{worker}")
        last_epoch = first_epoch + phase.epochs
        tracker = Tracker(run, phase, cfg, backup_dir, first_epoch, chief)
        ds, steps = train_dataset(
            train_data.loader, len(train_data), cfg.train.batch_size, cfg.seed, tracker.resume_epoch(), last_epoch
        )
        callbacks = [tracker, keras.callbacks.BackupAndRestore(str(backup_dir))]
        if chief:
            callbacks.append(keras.callbacks.TensorBoard(str(run.logs_dir), write_graph=False))
        print(f"phase {phase.name}: {phase.epochs} epochs at learning rate {phase.learning_rate:g}")
        model.fit(
            ds,
            validation_data=valid,
            epochs=last_epoch,
            initial_epoch=first_epoch,
            steps_per_epoch=steps,
            callbacks=callbacks,
            verbose=verbose,
        )
        state["done"].append(phase.name)
        state["seconds"] += time.perf_counter() - started
        if chief:
            write_atomic(state_file, json.dumps(state).encode())
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


def train(cfg: Config, run_dir: Path, overwrite: bool = False, verbose: int = 2) -> dict:
    """Train (or resume, or find finished) the run of `cfg` in `run_dir`; returns its metrics."""
    run = RunDir(Path(run_dir))
    _check_run_dir(run, cfg, overwrite)
    if run.finished:
        print(f"{run.path} is already finished; pass --overwrite to train it again")
        return run.metrics()
    keras.utils.set_random_seed(cfg.seed)
    run.path.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run.config_file)
    examples = load_examples(cfg)
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
    record = fit_phases(run, cfg, examples, scaler, verbose)
    if not is_chief():
        return record
    _write_history_csv(run)
    metrics = evaluate_run(run, ["valid", "test"], examples=examples, extra=record)
    _log_confusion_images(run)
    return metrics


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m genre_tf.train", description=__doc__.splitlines()[0])
    add_config_arguments(parser)
    parser.add_argument("--name", help="run name (default: the config's name)")
    parser.add_argument("--overwrite", action="store_true", help="delete an existing run of this name first")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    try:
        metrics = train(cfg, Path(cfg.output_dir) / (args.name or cfg.name), args.overwrite, 0 if args.quiet else 2)
    except ConfigError as err:
        exit_config_error(err)
    if "headline" in metrics:
        print(format_headline(metrics))
    print(f"run written to {Path(cfg.output_dir) / (args.name or cfg.name)}")


if __name__ == "__main__":
    main()
