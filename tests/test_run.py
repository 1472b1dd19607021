"""RunDir: where a run's files live, when it counts as finished, and loading its config, classes and scaler back.

Also the one promise evaluate_run makes to RunDir: metrics.json, which marks a run finished, is written last and
whole (test_evaluate.py covers the metrics themselves).
"""

import json
from pathlib import Path

import numpy as np
import pytest

from genre_tf.config import save_config
from genre_tf.evaluation import plots
from genre_tf.evaluation import report as evaluate
from genre_tf.evaluation.report import evaluate_run
from genre_tf.features.scaling import FeatureScaler
from genre_tf.run import RunDir

HISTORY = [
    {"epoch": 0, "phase": "train", "loss": 1.2, "accuracy": 0.4, "val_loss": 1.1, "val_accuracy": 0.5},
    {"epoch": 1, "phase": "train", "loss": 0.9, "accuracy": 0.6, "val_loss": 1.0, "val_accuracy": 0.5},
]


def test_paths_of_every_artefact(tmp_path):
    run = RunDir(tmp_path / "mlp")
    files = {
        "config_file": "config.yaml",
        "model_file": "model.keras",
        "classes_file": "classes.json",
        "scaler_file": "scaler.json",
        "history_json": "history.json",
        "history_csv": "history.csv",
        "metrics_file": "metrics.json",
        "report_file": "report.md",
        "skipped_file": "skipped.csv",
        "backup_dir": "backup",
        "logs_dir": "logs",
        "confusion_png": "confusion_matrix.png",
        "loss_png": "loss_curves.png",
    }
    assert {name: getattr(run, name) for name in files} == {name: tmp_path / "mlp" / f for name, f in files.items()}
    assert RunDir(tmp_path / "mlp") == run  # a value: two RunDirs of one folder are equal


def test_finished_only_with_metrics_json(tmp_path):
    run = RunDir(tmp_path / "run")
    assert not run.finished
    run.path.mkdir()
    for name in ("config.yaml", "model.keras", "classes.json", "history.json", "report.md"):
        (run.path / name).write_text("{}")
    assert not run.finished, "every artefact but metrics.json: not finished"
    run.metrics_file.mkdir()
    assert not run.finished, "a folder of that name is not the file"
    run.metrics_file.rmdir()
    run.metrics_file.write_text('{"splits": {}}')
    assert run.finished and run.metrics() == {"splits": {}}


def test_config_classes_and_scaler_load_back(tmp_path, make_config):
    cfg = make_config(tmp_path, "model.kind=mlp", "features.n_mfcc=13", "train.label_smoothing=0.1")
    run = RunDir(tmp_path / "run")
    save_config(cfg, run.config_file)
    run.classes_file.write_text(json.dumps(["jazz", "rock"]))
    assert run.scaler is None and run.history() == []
    saved = FeatureScaler(np.array([1.5, -2.0]), np.array([0.5, 3.0]), ["rms_mean", "tempo"])
    saved.save(run.scaler_file)
    run.history_json.write_text(json.dumps(HISTORY))

    again = RunDir(run.path)  # the properties are cached per object: a fresh one reads the files
    assert again.config == cfg and again.config.features.n_mfcc == 13 and again.config.train.label_smoothing == 0.1
    assert again.classes == ["jazz", "rock"]
    assert again.scaler.columns == ["rms_mean", "tempo"]
    np.testing.assert_array_equal(again.scaler.mean, saved.mean)
    np.testing.assert_array_equal(again.scaler.std, saved.std)
    assert again.history() == HISTORY


@pytest.fixture
def table_run(tmp_path, make_table_run, write_feature_table) -> RunDir:
    """An untrained MLP run over a tiny feature table (3 classes x 4 rows), with a training history."""
    csv = write_feature_table(tmp_path / "table.csv", ["blues", "jazz", "rock"])
    run = RunDir(make_table_run(tmp_path / "runs" / "mlp", csv))
    run.history_json.write_text(json.dumps(HISTORY))
    return run


def test_evaluation_keeps_what_training_recorded(table_run):
    first = evaluate_run(table_run, ["valid"], extra={"epochs": 2, "train_seconds": 1.5})
    assert table_run.finished and table_run.metrics() == first
    assert first["splits"]["valid"]["segment"]["n"] == 3 and first["epochs"] == 2
    assert table_run.report_file.is_file() and table_run.loss_png.is_file()
    assert (table_run.path / "confusion_matrix_valid.png").is_file() and not table_run.confusion_png.exists()
    second = evaluate_run(table_run, ["test"])
    assert list(second["splits"]) == ["test"] and list(second["headline"]) == ["test"]
    assert (second["epochs"], second["train_seconds"]) == (2, 1.5)
    assert table_run.confusion_png.is_file()


@pytest.fixture(params=["loss curves", "report"])
def break_writer(request, monkeypatch):
    """break_writer(): from now on, writing the loss curves (or report.md) fails as on a full disk."""

    def fail(*args, **kwargs):
        raise OSError(f"disk full while writing the {request.param}")

    def apply() -> None:
        if request.param == "loss curves":
            monkeypatch.setattr(plots, "loss_curves_png", fail)
        else:
            monkeypatch.setattr(evaluate, "markdown_report", fail)

    return apply


def test_failed_evaluation_leaves_the_run_unfinished(table_run, break_writer):
    """Defect (4e337ea): metrics.json was written first, so a failure after it left a run that looked finished
    without its report or plots (and `train` would not evaluate it again)."""
    break_writer()
    with pytest.raises(OSError, match="disk full"):
        evaluate_run(table_run, ["valid"])
    assert not table_run.finished
    assert [p.name for p in table_run.path.iterdir() if p.name.startswith(".")] == [], "no temporary files left"


def test_failed_re_evaluation_leaves_metrics_json_untouched(table_run, break_writer):
    """Defect (4e337ea): metrics.json was rewritten in place before the report and plots, so a re-evaluation that
    failed replaced the finished run's metrics (and a kill during the write could leave half a file)."""
    evaluate_run(table_run, ["valid"], extra={"epochs": 2})
    before = table_run.metrics_file.read_bytes()
    break_writer()
    with pytest.raises(OSError, match="disk full"):
        evaluate_run(table_run, ["valid", "test"])  # other splits: other metrics, had they been written
    assert table_run.metrics_file.read_bytes() == before
    assert list(table_run.metrics()["splits"]) == ["valid"] and table_run.metrics()["epochs"] == 2
    assert [p.name for p in table_run.path.iterdir() if p.name.startswith(".")] == [], "no temporary files left"


def test_a_run_dir_needs_no_files_to_name_them():
    run = RunDir(Path("saved_models") / "nothing_here")
    assert not run.finished and run.history() == [] and run.scaler is None


def test_a_model_trained_with_label_smoothing_loads_in_a_fresh_process(tmp_path):
    """Its saved loss is registered by genre_tf.training.optimization, which evaluate and predict never import."""
    import subprocess
    import sys

    import keras

    from genre_tf.config import TrainConfig
    from genre_tf.training.optimization import build_loss

    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(inputs))
    model.compile(optimizer="adam", loss=build_loss(TrainConfig(label_smoothing=0.3)))
    model.save(tmp_path / "model.keras")
    load = f"import pathlib, genre_tf.run as r; print(r.RunDir(pathlib.Path({str(tmp_path)!r})).load_model().name)"
    proc = subprocess.run([sys.executable, "-c", load], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr.strip().splitlines()[-1]
    assert proc.stdout.strip() == model.name
