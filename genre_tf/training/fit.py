"""Training machinery shared by `train` and `tune`: phases, resumable fit, run directories.

A run directory gets config.yaml, model.keras (best epoch on the valid split), history.csv,
metrics.json, report.md, confusion_matrix.png, loss_curves.png, skipped.csv and TensorBoard logs.
Killed and started again, a run resumes after its last completed epoch (an epoch backup of the
weights, optimizer and dropout random state; history.json for the choices made so far). The test split is used once,
after training, for the final report.

Refit (`train.refit`). The first fit chooses the model on valid: per phase, the epochs up to the last one that
improved the monitored valid figure (0 for a phase that never improved on the phase before it). Then:
  1. the chosen model moves to `chosen/` with a copy of the run's config, classes and train-fitted scaler;
  2. the phases run a second time into `refit/`, a run directory of its own (history.json, phases.json, epoch
     backups, TensorBoard logs), on train + valid, for exactly the chosen epochs of each phase, with no early
     stopping and no choice: each epoch's model replaces the last. The scaler is fitted on train + valid, the model
     starts from the same seeded initial weights as the first fit, and the learning rate schedule spans the phase's
     configured epochs, so the refit follows the first fit's learning rate curve up to the chosen epoch (with
     `train.refit_schedule: anneal` it spans the chosen epochs instead, so a cosine decays to its floor by the end);
  3. the refit's scaler is copied and its model moved (one rename) onto the run's scaler.json and model.keras.
Each step is done once and skipped when found done, so a kill anywhere resumes (inside step 2 from the refit's epoch
backup). The report judges valid with the chosen model (valid trained the refitted one) and test with the refitted
model, and says how many tracks, examples and epochs the refit trained on.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from genre_tf import models
from genre_tf.config import Config, ConfigError, save_config
from genre_tf.evaluation.report import evaluate_run
from genre_tf.extract.cache import write_atomic
from genre_tf.extract.prepared import skipped_lines
from genre_tf.features.scaling import Scaler, fit_scaler
from genre_tf.inputs import augment
from genre_tf.inputs.examples import Examples, SplitData, load_examples, split_data
from genre_tf.inputs.pipeline import train_dataset
from genre_tf.inputs.recipe import InputRecipe, cache_off_note
from genre_tf.models import transfer
from genre_tf.run import RunDir
from genre_tf.training import boundary
from genre_tf.training.multi_worker import fit_multi_worker, is_chief, make_strategy, worker_run_dir
from genre_tf.training.optimization import build_loss, build_optimizer, build_soft_loss
from genre_tf.training.tracking import (
    EpochBackup,
    Phase,
    PhaseLog,
    Tracker,
    check_run_dir,
    improved,
    log_confusion_images,
    log_hparams,
)


def resuming_line(run: RunDir, phases: list[Phase], done: set[str] | list[str]) -> str | None:
    """`resuming RUN from epoch N of M` where a run holds epochs of an earlier process, else None."""
    history = run.history()
    todo = [phase for phase in phases if phase.name not in done]
    if not history or not todo:
        return None
    first = sum(row["phase"] != todo[0].name for row in history)  # the epochs of the finished phases
    start = EpochBackup(run.backup_dir / todo[0].name).epoch() or first
    return f"resuming {run.path} from epoch {start + 1} of {sum(phase.epochs for phase in phases)}"


def interrupted_line(cfg: Config, run_dir: Path) -> str:
    """What a run stopped by Ctrl-C says: `interrupted after epoch N of M; the same command resumes`."""
    run = RunDir(worker_run_dir(Path(run_dir)))
    if run.refit.history() or run.refit.backup_dir.is_dir():  # in the refit's phases: count those
        run = run.refit
    total = sum(phase.epochs for phase in plan_phases(cfg))
    return f"interrupted after epoch {len(run.history())} of {total}; the same command resumes"


def plan_phases(cfg: Config) -> list[Phase]:
    """One phase, or for a partly unfrozen backbone with fine_tune_epochs: head first, then fine-tune."""
    model, train = cfg.model, cfg.train
    if not models.family(model).has_backbone:
        return [Phase("train", train.epochs, train.learning_rate)]
    t = model.transfer
    frozen = (t.trainable_blocks if t.trainable_layers is None else t.trainable_layers) == 0
    if frozen or train.fine_tune_epochs == 0:
        return [Phase("train", train.epochs, train.learning_rate, "configured")]
    return [
        Phase("head", train.epochs, train.learning_rate, "frozen"),
        Phase("fine_tune", train.fine_tune_epochs, train.fine_tune_learning_rate, "configured"),
    ]


@dataclass
class PhaseInputs:
    """What one phase fits: the model whose weights train (the whole model, or its top above a cached boundary)
    and the train and valid data in that model's input."""

    model: keras.Model
    train: SplitData
    valid: tf.data.Dataset | None  # None in a refit


def fit_phases(
    run: RunDir,
    cfg: Config,
    examples: Examples,
    scaler: Scaler | None,
    strategy: tf.distribute.Strategy,
    verbose: int,
    phases: list[Phase] | None = None,
) -> dict:
    """Run every phase not yet finished (those of plan_phases unless given); returns what the run record needs
    (epochs, time, parameters). Phases that do not validate (a refit) read the train split alone."""
    phases = plan_phases(cfg) if phases is None else phases
    classes = run.classes
    splits = ("train", "valid") if all(phase.validates for phase in phases) else ("train",)
    frames = {split: examples.split(split) for split in splits}
    recipe = InputRecipe.of(cfg)
    data = {
        split: split_data(frame, recipe, classes, scaler, train=split == "train") for split, frame in frames.items()
    }
    if note := cache_off_note(cfg):
        print(note)
    log = PhaseLog.load(run)
    if line := resuming_line(run, phases, log.done):
        print(line, flush=True)
    keras.utils.set_random_seed(cfg.seed)  # the initial weights depend on the seed alone: a refit starts from them too
    with strategy.scope():
        model = models.build_model(cfg.model, recipe.shape(scaler), len(classes))
    for phase in phases:
        if phase.name in log.done:
            continue
        started = time.perf_counter()
        with strategy.scope():
            inputs = _phase_inputs(run, cfg, recipe, phase, model, frames, data)
        _fit_phase(run, cfg, phase, model, inputs, strategy, verbose)
        log.finish(run, phase, time.perf_counter() - started)
        shutil.rmtree(run.backup_dir / phase.name, ignore_errors=True)
    return {
        "epochs": len(run.history()),
        "train_seconds": round(log.seconds, 1),
        "params": int(model.count_params()),
        "trainable_params": int(sum(np.prod(w.shape) for w in model.trainable_weights)),
        "classes_n": len(classes),
    }


def _phase_inputs(
    run: RunDir,
    cfg: Config,
    recipe: InputRecipe,
    phase: Phase,
    model: keras.Model,
    frames: dict,
    data: dict[str, SplitData],
) -> PhaseInputs:
    """Set what trains in this phase, start from the best weights so far, and pick the model and data to fit."""
    if phase.backbone == "frozen":
        transfer.set_trainable_blocks(model, 0)
    elif phase.backbone == "configured":
        transfer.apply_trainable(model, cfg.model.transfer)
    if run.model_file.is_file():  # a later phase starts from the best weights so far
        model.load_weights(run.model_file)
    batch_size = cfg.train.batch_size
    if not recipe.caches_boundary:
        valid = data["valid"].batches(batch_size) if "valid" in data else None
        if valid is not None and cfg.augment.mixup_alpha:  # the loss takes mixup's soft labels: valid goes one-hot
            valid = valid.map(lambda x, y: (x, tf.one_hot(y, len(run.classes))))
        return PhaseInputs(model, data["train"], valid)
    # The frozen bottom runs once, not every epoch; the top shares its weights with `model`.
    blocks = 0 if phase.backbone == "frozen" else cfg.model.transfer.trainable_blocks
    cut = boundary.cut_at_boundary(model, blocks, cfg.model)

    def split(frame: pd.DataFrame) -> SplitData:
        return boundary.boundary_split(cut, frame, recipe, run.classes, batch_size, cfg.cache.dir)

    train = split(frames["train"])
    valid = split(frames["valid"]).batches(batch_size) if "valid" in frames else None
    return PhaseInputs(cut.top, train, valid)


def _fit_phase(
    run: RunDir,
    cfg: Config,
    phase: Phase,
    model: keras.Model,
    inputs: PhaseInputs,
    strategy: tf.distribute.Strategy,
    verbose: int,
) -> None:
    """Fit one phase from where it stopped (its epoch backup), keeping the best model on valid in the run."""
    first_epoch = sum(h["phase"] != phase.name for h in run.history())  # earlier phases are complete
    backup = EpochBackup(run.backup_dir / phase.name)
    start_epoch = backup.epoch() or first_epoch
    last_epoch = first_epoch + phase.epochs
    batch_size = cfg.train.batch_size
    data = inputs.train
    batches, steps = _train_batches(data, cfg, start_epoch, last_epoch)
    with strategy.scope():  # the schedule needs the steps per epoch, which the dataset decides
        optimizer = build_optimizer(cfg.train, phase.learning_rate, steps, phase.schedule_epochs or phase.epochs)
        loss = build_soft_loss(cfg.train) if cfg.augment.mixup_alpha else build_loss(cfg.train)
        inputs.model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"])
    backup.restore(inputs.model)
    tracker = Tracker(run, phase, cfg, start_epoch, model)
    callbacks = [tracker, backup]  # history before backup: see Tracker
    if is_chief():
        callbacks.append(keras.callbacks.TensorBoard(str(run.logs_dir), write_graph=False))
    note = "" if phase.validates else " (refit on train + valid)"
    print(f"phase {phase.name}: {phase.epochs} epochs at learning rate {phase.learning_rate:g}{note}")
    if tracker.patience_exhausted:  # it stopped early just before a kill: nothing left to fit
        return
    if cfg.train.distribute == "multi_worker":
        epochs = range(start_epoch, last_epoch)
        batch = min(batch_size, len(inputs.train))
        fit_multi_worker(inputs.model, cfg.train, strategy, batches, inputs.valid, steps, batch, epochs, callbacks)
        return
    inputs.model.fit(
        batches if isinstance(batches, tf.data.Dataset) else batches(None),
        shuffle=False,  # train_dataset shuffles, per epoch, from the seed
        class_weight=class_weights(data.labels, len(run.classes)) if cfg.train.class_weight == "balanced" else None,
        validation_data=inputs.valid,
        epochs=last_epoch,
        initial_epoch=start_epoch,
        steps_per_epoch=steps,
        callbacks=callbacks,
        verbose=verbose,
    )


def _train_batches(data: SplitData, cfg: Config, first_epoch: int, last_epoch: int) -> tuple:
    """The train split's batches for epochs [first_epoch, last_epoch) and the steps per epoch. The batches are a
    dataset, or for a split streamed from shards a function of the tf.distribute.InputContext (None: no
    distribution), so that each worker of a multi-worker run reads its own shard files."""
    batch_size, seed = cfg.train.batch_size, cfg.seed
    if data.stream is None:
        return train_dataset(data.loader, len(data), batch_size, seed, first_epoch, last_epoch, data.augmentation)

    def batches(context: tf.distribute.InputContext | None) -> tf.data.Dataset:
        return data.stream.train_batches(batch_size, seed, first_epoch, last_epoch, context)[0]

    return batches, data.stream.steps(batch_size)


def class_weights(labels: np.ndarray, n_classes: int) -> dict[int, float]:
    """Inverse-frequency weights, n / (classes * count), as sklearn's class_weight="balanced" makes them."""
    counts = np.bincount(labels, minlength=n_classes)
    return {c: float(len(labels) / (n_classes * n)) if n else 0.0 for c, n in enumerate(counts)}


def _write_history_csv(run: RunDir) -> None:
    pd.DataFrame(run.history()).to_csv(run.history_csv, index=False)


def _fit_run_scaler(run: RunDir, cfg: Config, examples: Examples) -> Scaler | None:
    """The feature scaler of a features model, fitted on the examples' train split only and saved in the run."""
    if not InputRecipe.of(cfg).reads_features:
        return None
    scaler = fit_scaler(cfg.model.mlp.scaler, examples.split("train"), examples.feature_columns, cfg.seed)
    scaler.save(run.scaler_file)
    return scaler


def chosen_epochs(history: list[dict], monitor: str) -> dict[str, int]:
    """Per phase, how many of its epochs led to the run's model: up to its last epoch that improved on the best so far
    (as Tracker judged it), 0 for a phase that never did. A later phase starts from the best model before it."""
    chosen, best, seen = {}, None, {}
    for row in history:
        phase = row["phase"]
        seen[phase] = seen.get(phase, 0) + 1
        chosen.setdefault(phase, 0)
        if improved(row[monitor], best, monitor):
            best, chosen[phase] = row[monitor], seen[phase]
    return chosen


def refit_examples(examples: Examples) -> Examples:
    """What a refit trains on: the valid split joined to train (the test split stays apart)."""
    frame = examples.frame.assign(split=examples.frame["split"].replace("valid", "train"))
    return Examples(frame, examples.feature_columns, examples.skipped)


def _keep_chosen(run: RunDir) -> None:
    """Move the model chosen on valid to chosen/, with the config, classes and scaler it goes with; once only."""
    chosen = run.chosen
    if chosen.model_file.is_file():  # moved already: run/model.keras may be the refit's by now
        return
    chosen.path.mkdir(parents=True, exist_ok=True)
    for part in ("config_file", "classes_file", "scaler_file"):
        if getattr(run, part).is_file():  # no scaler for image models
            write_atomic(getattr(chosen, part), getattr(run, part).read_bytes())
    os.replace(run.model_file, chosen.model_file)  # last: its presence says chosen/ is complete


def _promote(run: RunDir, refit_run: RunDir) -> None:
    """Make the refit the run's model: its scaler copied over the run's, then its model moved onto model.keras.

    Done again on every resume: train() writes the train-fitted scaler to the run before it gets here.
    """
    if refit_run.scaler_file.is_file():
        write_atomic(run.scaler_file, refit_run.scaler_file.read_bytes())
    if refit_run.model_file.is_file():  # else moved already
        os.replace(refit_run.model_file, run.model_file)


def refit(run: RunDir, cfg: Config, examples: Examples, strategy: tf.distribute.Strategy, verbose: int) -> dict:
    """Train the run's recipe again on train + valid for the epochs chosen on valid, and make that the run's model
    (the module docstring gives the steps); returns what the report says of the refit."""
    epochs = chosen_epochs(run.history(), cfg.train.monitor)
    follow = cfg.train.refit_schedule == "follow"
    phases = [
        replace(phase, epochs=epochs[phase.name], schedule_epochs=phase.epochs if follow else None, validates=False)
        for phase in plan_phases(cfg)
        if epochs.get(phase.name)
    ]
    _keep_chosen(run)
    target = run.refit
    target.path.mkdir(parents=True, exist_ok=True)
    save_config(cfg, target.config_file)
    write_atomic(target.classes_file, run.classes_file.read_bytes())
    merged = refit_examples(examples)
    scaler = _fit_run_scaler(target, cfg, merged)
    record = fit_phases(target, cfg, merged, scaler, strategy, verbose, phases)
    shutil.rmtree(target.backup_dir, ignore_errors=True)
    _write_history_csv(target)
    _promote(run, target)
    rows = merged.split("train")
    return {
        "tracks": int(rows["track_id"].nunique()),
        "examples": len(rows),
        "epochs": {p.name: p.epochs for p in phases},
        "train_seconds": record["train_seconds"],
    }


def check_model_builds(cfg: Config) -> None:
    """Build the configured model once, before any audio is read, so that a backbone name or weights that cannot be
    loaded (an ImageNet download that fails, a missing .h5) stop the run in one line instead of after extraction.
    A family without a backbone is checked by its config checks alone."""
    if not models.family(cfg.model).has_backbone or cfg.train.distribute != "none":
        return  # a distributed run's strategy comes before any other TensorFlow work
    models.build_model(cfg.model, InputRecipe.of(cfg).shape(), n_classes=2)
    keras.backend.clear_session()  # the run's model gets the layer names it would have had


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
    check_run_dir(run, cfg, overwrite)
    augment.check_augment(cfg)
    if run.finished and not overwrite:
        print(f"{run.path} is already finished; pass --overwrite to train it again")
        return run.metrics()
    strategy = make_strategy(cfg.train.distribute)  # collective ops must exist before any other TF work
    # Nothing is written before the config and the data are checked: the model builds (backbone, weights) before
    # any audio is read, and the split is checked over the tracks that decode.
    if examples is None:
        check_model_builds(cfg)
        examples = load_examples(cfg)
    for split in ("train", "valid"):
        if examples.split(split).empty:
            raise ConfigError("data", f"the {split} split is empty; check the split settings")
    if overwrite and run.path.exists():
        shutil.rmtree(run.path)
    for line in skipped_lines(examples.skipped):
        print(line)
    keras.utils.set_random_seed(cfg.seed)
    run.path.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run.config_file)
    examples.skipped.to_csv(run.skipped_file, index=False)
    classes = examples.classes
    write_atomic(run.classes_file, json.dumps(classes).encode())
    scaler = _fit_run_scaler(run, cfg, examples)
    if is_chief():
        log_hparams(run, cfg)
    record = fit_phases(run, cfg, examples, scaler, strategy, verbose)
    record["split"] = examples.split_note
    if cfg.train.refit:
        record["refit"] = refit(run, cfg, examples, strategy, verbose)
    if not is_chief():  # the chief keeps the artefacts; a worker's scratch folder goes
        shutil.rmtree(run.path, ignore_errors=True)
        return record
    shutil.rmtree(run.backup_dir, ignore_errors=True)
    _write_history_csv(run)
    metrics = evaluate_run(run, list(eval_splits), examples=examples, extra=record)
    log_confusion_images(run)
    return metrics
