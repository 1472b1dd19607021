"""A run directory `saved_models/<run>/`: where each artefact lives, and loading them back.

A refitted run (`train.refit`) holds two more run directories: `chosen/`, the model chosen on valid before the refit
(with its config, classes and scaler), and `refit/`, the second run of the phases on train + valid whose model became
the run's model.keras.

An ensemble run (`genre_tf.training.ensemble`) has no model.keras: ensemble.json names its members, copies of their
run directories under members/, with each one's weight and how it pools a track's segments (`RunDir.members`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from genre_tf.config import Config, load_config
from genre_tf.features.scaling import Scaler, load_scaler

if TYPE_CHECKING:
    from genre_tf.inputs.recipe import InputRecipe


@dataclass(frozen=True)
class RunDir:
    """Paths of one run's artefacts; the saved config alone reproduces the run."""

    path: Path

    config_file = property(lambda self: self.path / "config.yaml")
    model_file = property(lambda self: self.path / "model.keras")
    classes_file = property(lambda self: self.path / "classes.json")
    scaler_file = property(lambda self: self.path / "scaler.json")
    history_json = property(lambda self: self.path / "history.json")
    history_csv = property(lambda self: self.path / "history.csv")
    metrics_file = property(lambda self: self.path / "metrics.json")
    report_file = property(lambda self: self.path / "report.md")
    skipped_file = property(lambda self: self.path / "skipped.csv")
    backup_dir = property(lambda self: self.path / "backup")
    logs_dir = property(lambda self: self.path / "logs")
    confusion_png = property(lambda self: self.path / "confusion_matrix.png")
    calibration_file = property(lambda self: self.path / "calibration.json")  # temperature fitted on valid
    reliability_png = property(lambda self: self.path / "reliability.png")
    risk_coverage_csv = property(lambda self: self.path / "risk_coverage.csv")
    risk_coverage_png = property(lambda self: self.path / "risk_coverage.png")
    unknown_file = property(lambda self: self.path / "unknown.json")  # evaluation.unknown: K and the threshold
    unknown_embeddings = property(lambda self: self.path / "unknown.npy")  # the training tracks' embeddings
    loss_png = property(lambda self: self.path / "loss_curves.png")
    export_dir = property(lambda self: self.path / "export")  # genre_tf.serving.export's SavedModel and TFLite files
    ensemble_file = property(lambda self: self.path / "ensemble.json")  # an ensemble's members, weights, selection
    members_dir = property(lambda self: self.path / "members")  # an ensemble's members' run directories

    @property
    def finished(self) -> bool:
        return self.metrics_file.is_file()

    @property
    def problem(self) -> str | None:
        """Why no model can be loaded from this path, in the words every command uses, or None."""
        if not self.path.is_dir():
            return f"no such run directory: {self.path}"
        if not (self.model_file.is_file() or self.is_ensemble):
            return f"{self.path} has no model.keras (not a finished run directory)"
        return None

    @cached_property
    def config(self) -> Config:
        """The run's config; the data it was trained on need not be where it was (or anywhere) to use the model."""
        return load_config(self.config_file, check_paths=False)

    @cached_property
    def recipe(self) -> InputRecipe:
        """How the run's model reads its inputs (`genre_tf.inputs.recipe`), built from its config."""
        # Lazy: the recipe's decoding is TensorFlow; reading a run's config, classes and metrics must not load it.
        from genre_tf.inputs.recipe import InputRecipe

        return InputRecipe.of(self.config)

    @cached_property
    def temperature(self) -> float:
        """The temperature that calibrates the run's track probabilities (`evaluation.calibration`); 1.0 for a run
        evaluated before calibration existed."""
        if not self.calibration_file.is_file():
            return 1.0
        return float(json.loads(self.calibration_file.read_text())["temperature"])

    @cached_property
    def classes(self) -> list[str]:
        return json.loads(self.classes_file.read_text())

    @cached_property
    def scaler(self) -> Scaler | None:
        return load_scaler(self.scaler_file) if self.scaler_file.is_file() else None

    @property
    def chosen(self) -> RunDir:
        """Where a refitted run keeps the model chosen on valid: the one that valid figures judge."""
        return RunDir(self.path / "chosen")

    @property
    def refit(self) -> RunDir:
        """Where a refitted run trains again on train + valid."""
        return RunDir(self.path / "refit")

    @property
    def refitted(self) -> bool:
        """Whether the run's model is a refit (its chosen model was set aside for the valid figures)."""
        return self.chosen.model_file.is_file()

    @property
    def is_ensemble(self) -> bool:
        return self.ensemble_file.is_file()

    def ensemble(self) -> dict:
        """ensemble.json: members (name, weight, pooling, source), and how they were chosen."""
        return json.loads(self.ensemble_file.read_text())

    def members(self) -> list[Member]:
        """An ensemble's members, each an ordinary run directory under members/, with its weight and pooling."""
        return [
            Member(RunDir(self.members_dir / m["name"]), m["weight"], m["pooling"]) for m in self.ensemble()["members"]
        ]

    def load_model(self):
        """The run's model.keras, with the custom layers of genre_tf.models registered."""
        # Lazy: Keras (TensorFlow) loads only when a model does, so reading a run's config, classes or metrics is fast.
        from genre_tf.models import load_saved_model

        return load_saved_model(self.model_file)

    def metrics(self) -> dict:
        return json.loads(self.metrics_file.read_text())

    def history(self) -> list[dict]:
        return json.loads(self.history_json.read_text()) if self.history_json.is_file() else []


@dataclass(frozen=True)
class Member:
    """One run of an ensemble: its track probabilities count `weight` (the weights sum to 1); `pooling` is how it
    makes them from its segments: "mean" of their probabilities, or "logits", the softmax of their mean logits (a
    probe; `evaluation.pooling.track_pooling`)."""

    run: RunDir
    weight: float
    pooling: str
