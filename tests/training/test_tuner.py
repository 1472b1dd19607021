"""KerasTuner search: spaces, trials on the valid split, resume after a kill, chief / worker mode."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from genre_tf import train as train_module
from genre_tf.config import ConfigError, load_config
from genre_tf.training import tuner as tune_module
from genre_tf.training.tuner import make_tuner, read_space, summarise, trial_config

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def tune(config: Path, *args: str, env: dict | None = None, wait: bool = True):
    command = [sys.executable, "-m", "genre_tf.tune", "--config", str(config), *args]
    command += ["--space", str(REPO / "tuning" / "mlp.yaml")]
    if not wait:
        return subprocess.Popen(
            command, cwd=config.parent, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
    proc = subprocess.run(command, cwd=config.parent, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc


@pytest.fixture
def tiny_config(tmp_path, tiny_demo_config) -> Path:
    """Two-epoch trials on the tiny demo data, prepared once per session."""
    return tiny_demo_config(tmp_path, "tiny", "train: {epochs: 2, batch_size: 16}")


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ("data.root: {choice: [a, b]}", "data.root: cannot be searched"),
        ("model.mlp.units: {int: [1]}", "model.mlp.units: int needs [min, max]"),
        ("model.mlp.units: [1, 2]", "model.mlp.units: give exactly one of int, float, choice, bool"),
        ("model.mlp.dropout: {float: [0.0, 2.0]}", "model.mlp.dropout: must be 0.0..0.95, got 2.0"),
        ("model.mlp.widht: {int: [1, 4]}", "model.mlp.widht: unknown key"),
        ("augment.time_shift: {float: [0.0, 2.0]}", "augment.time_shift: must be 0.0..1.0, got 2.0"),
        ("train.refit: {bool: true}", "train.refit: cannot be searched"),
    ],
)
def test_space_errors_name_the_key(tmp_path, space, message):
    path = tmp_path / "space.yaml"
    path.write_text(space + "\n")
    with pytest.raises(ConfigError) as err:
        read_space(path, load_config(None, ["data.source=demo", "data.root=x"]))
    assert str(err.value).startswith(message)


# The family each shipped search space is written for (with the overrides its keys' ranges depend on).
SHIPPED_SPACES = {
    "mlp": ["model.kind=mlp"],
    "mlp_recipes": ["model.kind=mlp"],
    "mlp_table": ["model.kind=mlp"],
    "cnn": ["model.kind=cnn"],
    "resnet": ["model.kind=transfer"],
    "musicnn": ["model.kind=transfer", "model.transfer.backbone=MSD_musicnn"],
}


def test_every_shipped_space_reads_against_its_family():
    assert {path.stem for path in (REPO / "tuning").glob("*.yaml")} == set(SHIPPED_SPACES)
    for space, overrides in SHIPPED_SPACES.items():
        cfg = load_config(None, ["data.source=demo", "data.root=x", *overrides])
        keys = [param.key for param in read_space(REPO / "tuning" / f"{space}.yaml", cfg)]
        assert keys and len(keys) == len(set(keys)), space


def test_augmentation_keys_are_search_dimensions(tmp_path):
    import keras_tuner

    space = tmp_path / "space.yaml"
    space.write_text(
        "augment.mixup_alpha: {choice: [0.0, 0.2, 0.4]}\naugment.time_masks: {int: [0, 2]}\n"
        "augment.time_mask_frames: {int: [4, 16], step: 4}\naugment.gain_db: {float: [0.0, 6.0]}\n"
    )
    cfg = load_config(None, ["data.source=demo", "data.root=x", "model.kind=cnn"])
    params = read_space(space, cfg)
    hp = keras_tuner.HyperParameters()  # what the tuner picked: these two; the others at their minimum
    hp.Fixed("augment.mixup_alpha", 0.4)
    hp.Fixed("augment.time_masks", 2)
    trial = trial_config(cfg, params, hp, "t")
    keys = ["augment.mixup_alpha", "augment.time_masks", "augment.time_mask_frames", "augment.gain_db"]
    assert [p.key for p in params] == keys
    assert (trial.augment.mixup_alpha, trial.augment.time_masks, trial.augment.time_mask_frames) == (0.4, 2, 4)
    assert trial.augment.gain_db == 0.0 and trial.augment.active


def test_recipe_keys_are_search_dimensions_and_trials_never_refit(tmp_path, monkeypatch):
    """The recipe keys are plain config keys a space can search; a trial trains without the base config's refit
    (valid judges it), and best.yaml keeps the refit for the final training."""
    cfg = load_config(None, ["data.source=demo", "data.root=x", "train.refit=true", "train.epochs=2"])
    params = read_space(REPO / "tuning" / "mlp_recipes.yaml", cfg)
    assert {p.key for p in params} >= {"model.mlp.scaler", "train.optimizer", "train.schedule", "train.warmup_epochs"}
    trained = []

    def fake_trial(trial_cfg, run_dir):  # what a trial process leaves: its config and history
        trained.append(trial_cfg)
        run_dir.mkdir(parents=True)
        (run_dir / "history.json").write_text('[{"epoch": 0, "phase": "train", "val_loss": 0.5}]')
        return {}

    monkeypatch.setattr(tune_module, "run_trial_process", fake_trial)
    tuner = make_tuner("random", cfg, params, tmp_path / "search", max_trials=2)
    tuner.search()
    summarise(tuner, cfg, params, tmp_path / "search")
    assert len(trained) == 2 and not any(c.train.refit for c in trained)
    assert {c.train.optimizer for c in trained} <= {"adam", "adamw"}
    assert load_config(tmp_path / "search" / "best.yaml").train.refit


def test_search_writes_trials_and_a_best_config_that_retrains(tmp_path, tiny_config, monkeypatch):
    proc = tune(tiny_config, "--max-trials", "2", "--name", "s")
    out = tmp_path / "tuning" / "s"
    trials = pd.read_csv(out / "trials.csv")
    assert len(trials) == 2 and (trials.status == "COMPLETED").all()
    assert trials.val_loss.is_monotonic_increasing  # best first
    for trial_dir in (out / "trials").iterdir():
        metrics = yaml.safe_load((trial_dir / "metrics.json").read_text())
        assert set(metrics["splits"]) == {"valid"}, "the tuner never evaluates on test"
    best = load_config(out / "best.yaml")
    assert best.model.mlp.units == trials.iloc[0]["model.mlp.units"]
    assert "best config" in proc.stdout
    monkeypatch.chdir(tmp_path)  # the command the search prints, in this process: TensorFlow is loaded already
    train_module.main(["--config", str(out / "best.yaml"), "--quiet"])
    assert (tmp_path / "runs" / "s_best" / "metrics.json").is_file()


def test_interrupted_search_continues_without_rerunning_trials(tmp_path, tiny_config):
    proc = tune(tiny_config, "--max-trials", "2", "--name", "k", wait=False)
    trials = tmp_path / "tuning" / "k" / "trials"
    deadline = time.time() + 240
    while time.time() < deadline and len(list(trials.glob("*/metrics.json"))) < 1:
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = {p.parent.name: p.stat().st_mtime_ns for p in trials.glob("*/metrics.json")}
    assert len(finished) == 1, "the kill must land mid-search"
    tune(tiny_config, "--max-trials", "2", "--name", "k")
    table = pd.read_csv(tmp_path / "tuning" / "k" / "trials.csv")
    assert sorted(table.trial) == [0, 1]
    for name, mtime in finished.items():
        assert (trials / name / "metrics.json").stat().st_mtime_ns == mtime, f"trial {name} ran twice"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_chief_and_two_workers_share_a_search(tmp_path, tiny_config):
    port = str(free_port())
    procs = {}
    for tuner_id in ("chief", "tuner0", "tuner1"):
        env = {**os.environ, "KERASTUNER_TUNER_ID": tuner_id, "KERASTUNER_ORACLE_IP": "127.0.0.1"}
        env["KERASTUNER_ORACLE_PORT"] = port
        command = [sys.executable, "-m", "genre_tf.tune", "--config", str(tiny_config), "--name", "d"]
        command += ["--space", str(REPO / "tuning" / "mlp.yaml"), "--max-trials", "3"]
        procs[tuner_id] = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, text=True)
        time.sleep(1)  # the chief's oracle server first
    outputs = {name: p.communicate(timeout=400)[0] for name, p in procs.items()}
    assert [p.returncode for p in procs.values()] == [0, 0, 0], outputs
    table = pd.read_csv(tmp_path / "tuning" / "d" / "trials.csv")
    assert sorted(table.trial) == [0, 1, 2] and (table.status == "COMPLETED").all(), outputs
    per_worker = [outputs[w].count("phase train") for w in ("tuner0", "tuner1")]
    assert sum(per_worker) == 3, "every trial runs once"
    assert min(per_worker) >= 1, "both workers take part"
