"""What keeps a run resumable and visible: the run directory's config check, the epoch backup, the per-epoch tracker,
the phase log, and TensorBoard's hyperparameters and confusion-matrix images."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from tensorboard.plugins.hparams import api as hp

from genre_tf.config import Config, ConfigError, to_dict
from genre_tf.extract.cache import write_atomic
from genre_tf.run import RunDir


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

    def epoch(self) -> int | None:
        """The epoch the last backup continues from, or None."""
        return json.loads(self.pointer.read_text())["epoch"] if self.pointer.is_file() else None

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
        for h in self.history if phase.validates else []:
            better = improved(h[monitor], self.best, monitor)
            self.best = h[monitor] if better else self.best
            if h["phase"] == self.phase.name:
                self.wait = 0 if better else self.wait + 1

    @property
    def patience_exhausted(self) -> bool:
        return bool(self.cfg.train.patience) and self.wait >= self.cfg.train.patience

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch, "phase": self.phase.name, **{k: float(v) for k, v in (logs or {}).items()}}
        # What the schedule gives at the step count the epoch ended on; a float32, so 7 digits say all of it.
        row["learning_rate"] = float(f"{float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)):.7g}")
        if self._keeps(row):
            tmp = self.run.path / ".tmp-model.keras"
            self.full_model.save(tmp)
            os.replace(tmp, self.run.model_file)
        self.history.append(row)
        write_atomic(self.run.history_json, json.dumps(self.history, indent=1).encode())
        if self.patience_exhausted:
            self.model.stop_training = True

    def _keeps(self, row: dict) -> bool:
        """Whether this epoch's model becomes model.keras: the best on valid so far, or in a refit, every epoch's."""
        if not self.phase.validates:
            return True
        monitor = self.cfg.train.monitor
        if improved(row[monitor], self.best, monitor):
            self.best, self.wait = row[monitor], 0
            return True
        self.wait += 1
        return False


def check_run_dir(run: RunDir, cfg: Config, overwrite: bool) -> None:
    """A run directory belongs to one config: refuse to mix two runs in it (unless `overwrite`, which replaces it
    once every check has passed). A folder that never finished an epoch holds no work: another config takes it."""
    if overwrite or not run.config_file.is_file() or not (run.history() or run.backup_dir.is_dir()):
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


def log_hparams(run: RunDir, cfg: Config) -> None:
    flat = {k: (v if isinstance(v, (bool, int, float, str)) else str(v)) for k, v in _flat(to_dict(cfg)).items()}
    writer = tf.summary.create_file_writer(str(run.logs_dir))
    with writer.as_default():
        hp.hparams(flat, trial_id=run.path.name)
    writer.close()  # a tuner writes one per trial: open writers would pile up


def log_confusion_images(run: RunDir) -> None:
    pngs = sorted(run.path.glob("confusion_matrix*.png"))
    writer = tf.summary.create_file_writer(str(run.logs_dir / "evaluation"))
    with writer.as_default():
        for png in pngs:
            image = tf.io.decode_png(tf.io.read_file(str(png)), channels=3)[None]
            tf.summary.image(png.stem, image, step=0)
    writer.close()


@dataclass
class PhaseLog:
    """phases.json: the phases a run has finished and the seconds they took, so a resumed run skips them."""

    done: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @classmethod
    def load(cls, run: RunDir) -> PhaseLog:
        path = run.path / "phases.json"
        return cls(**json.loads(path.read_text())) if path.is_file() else cls()

    def finish(self, run: RunDir, phase: Phase, seconds: float) -> None:
        self.done.append(phase.name)
        self.seconds += seconds
        write_atomic(run.path / "phases.json", json.dumps({"done": self.done, "seconds": self.seconds}).encode())


@dataclass(frozen=True)
class Phase:
    """One `fit`: how many epochs, at which learning rate, with how much of a backbone trainable."""

    name: str
    epochs: int
    learning_rate: float
    backbone: str | None = None  # None: no backbone; "frozen"; "configured": as trainable_blocks / _layers say
    schedule_epochs: int | None = None  # the epochs the learning rate schedule spans; None: `epochs`
    # False in a refit: no valid split, so no early stopping and no choice; every epoch's model replaces the last.
    validates: bool = True


def improved(value: float, best: float | None, monitor: str) -> bool:
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
