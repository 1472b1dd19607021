"""End to end: train -> evaluate -> predict -> compare, resume after kill -9, two-worker training."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import soundfile as sf

from genre_tf.config import load_config
from genre_tf.run import RunDir
from genre_tf.training import plan_phases, train

pytestmark = pytest.mark.slow


def tiny_config_file(tmp_path: Path, name: str, *lines: str) -> Path:
    """Tiny demo data (6 genres x 4 tracks x 3 s), shared cache; `lines` add YAML at top level."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        "\n".join(
            [
                f"name: {name}",
                f"output_dir: {tmp_path / 'runs'}",
                f"data: {{source: demo, root: {tmp_path / 'demo'}, demo_tracks_per_genre: 4, demo_seconds: 3}}",
                f"cache: {{dir: {tmp_path / 'cache'}, jobs: 1}}",
                "audio: {segment_seconds: 1.0}",
                "mel: {n_mels: 32}",
                *lines,
            ]
        )
        + "\n"
    )
    return path


def run_cli(*args: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def test_train_evaluate_predict_compare(tmp_path):
    config = tiny_config_file(tmp_path, "mlp", "train: {epochs: 4, batch_size: 16}")
    cfg = load_config(config)
    metrics = train(cfg, cfg.output_dir / "mlp", verbose=0)
    run = RunDir(cfg.output_dir / "mlp")
    for artefact in ("config.yaml", "model.keras", "history.csv", "metrics.json", "report.md", "skipped.csv"):
        assert (run.path / artefact).is_file(), artefact
    assert run.confusion_png.is_file() and run.loss_png.is_file()
    assert list(run.logs_dir.rglob("events.out.tfevents*")), "TensorBoard logs"
    assert len(pd.read_csv(run.history_csv)) == 4
    test = metrics["splits"]["test"]
    assert test["track_mean"]["n"] == 6 and test["segment"]["n"] == 18  # 1 test track per genre, 3 segments each
    assert 0.0 <= test["track_mean"]["accuracy"] <= 1.0
    assert sum(map(sum, test["segment"]["confusion"])) == 18
    assert run.config == cfg

    evaluated = run_cli("genre_tf.evaluate", "--run", str(run.path), "--split", "test")
    assert "track acc" in evaluated.stdout
    assert json.loads(run.metrics_file.read_text())["splits"]["test"] == test

    submission = tmp_path / "sub.csv"
    folder = tmp_path / "demo" / "folk"
    run_cli("genre_tf.predict", "--run", str(run.path), str(folder), "--output", str(submission))
    table = pd.read_csv(submission)
    assert table.columns.tolist() == ["id", "class"] and len(table) == 4
    assert set(table["class"]) <= set(run.classes)
    single = run_cli("genre_tf.predict", "--run", str(run.path), str(folder / "folk.00000.wav"), "--top-k", "2")
    assert single.stdout.strip().startswith("folk.00000: ") and single.stdout.count(",") == 1
    audio, rate = sf.read(folder / "folk.00001.wav")
    sf.write(tmp_path / "excerpt.wav", audio[: rate // 2], rate)  # half a segment
    short = run_cli("genre_tf.predict", "--run", str(run.path), str(tmp_path / "excerpt.wav"))
    assert short.stdout.startswith("excerpt: ") and "skipped" not in short.stderr
    twice = tmp_path / "twice.csv"
    run_cli("genre_tf.predict", "--run", str(run.path), "--run", str(run.path), str(folder), "--output", str(twice))
    assert pd.read_csv(twice).equals(table), "an ensemble of one run twice is that run"

    compared = run_cli("genre_tf.compare", str(run.path), "--output", str(tmp_path / "cmp"))
    assert "| mlp |" in compared.stdout
    assert (tmp_path / "cmp.png").is_file() and len(pd.read_csv(tmp_path / "cmp.csv")) == 1


def test_config_error_is_one_line(tmp_path):
    config = tiny_config_file(tmp_path, "bad", "model: {kind: transformer}")
    proc = run_cli("genre_tf.train", "--config", str(config), check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "config error: model.kind: must be one of mlp, cnn, transfer, got 'transformer'"
    ]


def test_two_phase_plan():
    base = ["data.source=demo", "data.root=x", "model.kind=transfer", "train.fine_tune_epochs=3"]
    frozen = plan_phases(load_config(None, [*base, "model.transfer.trainable_blocks=0"]))
    assert [p.name for p in frozen] == ["train"]
    two = plan_phases(load_config(None, [*base, "model.transfer.trainable_blocks=2"]))
    assert [(p.name, p.backbone, p.epochs) for p in two] == [("head", "frozen", 30), ("fine_tune", "configured", 3)]
    assert two[1].learning_rate == 1e-5


def test_resume_after_kill_matches_uninterrupted_run(tmp_path):
    lines = ["model: {kind: cnn, image_size: [32, 32], cnn: {conv_blocks: 2, filters: 8}}", "train: {epochs: 8}"]
    config = tiny_config_file(tmp_path, "cnn", *lines)
    run_cli("genre_tf.prepare", "--config", str(config))  # the kill must land in training, not extraction
    command = [sys.executable, "-m", "genre_tf.train", "--config", str(config), "--name", "killed"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    history = tmp_path / "runs" / "killed" / "history.json"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if history.is_file() and len(json.loads(history.read_text() or "[]")) >= 3:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before_kill = len(json.loads(history.read_text()))
    assert 3 <= done_before_kill < 8, "the kill must land mid-training"
    assert not (tmp_path / "runs" / "killed" / "metrics.json").exists()
    run_cli("genre_tf.train", "--config", str(config), "--name", "killed")
    run_cli("genre_tf.train", "--config", str(config), "--name", "clean")
    killed, clean = RunDir(tmp_path / "runs" / "killed"), RunDir(tmp_path / "runs" / "clean")
    assert [h["epoch"] for h in killed.history()] == list(range(8))
    for a, b in zip(killed.history(), clean.history(), strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4), (a, b)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-4), (a, b)
    assert killed.metrics()["splits"] == clean.metrics()["splits"]
    assert sorted(p.name for p in killed.path.iterdir()) == sorted(p.name for p in clean.path.iterdir())


# `python -m genre_tf.train` that kills itself (SIGKILL, nothing cleaned up) in the middle of its third epoch.
TRAIN_KILLED_IN_EPOCH_3 = """
import os, runpy, signal
from genre_tf import training

def on_train_batch_end(self, batch, logs=None):
    if len(self.history) == 2 and batch == 1:
        os.kill(os.getpid(), signal.SIGKILL)

training.Tracker.on_train_batch_end = on_train_batch_end
runpy.run_module("genre_tf.train", run_name="__main__", alter_sys=True)
"""


def test_resume_with_augmentation_matches_uninterrupted_run(tmp_path):
    """Every image augmentation and mixup on: the draws are stateless, so the resumed epochs repeat them."""
    augment = "{time_masks: 1, time_mask_frames: 8, freq_masks: 1, freq_mask_bands: 6, gain_db: 6, time_shift: 1,"
    lines = [
        "model: {kind: cnn, image_size: [32, 32], cnn: {conv_blocks: 2, filters: 8}}",
        "train: {epochs: 4, batch_size: 8}",
        f"augment: {augment} mixup_alpha: 0.4}}",
    ]
    config = tiny_config_file(tmp_path, "aug", *lines)
    run_cli("genre_tf.prepare", "--config", str(config))
    killed = subprocess.run(
        [sys.executable, "-c", TRAIN_KILLED_IN_EPOCH_3, "--config", str(config), "--name", "killed"],
        capture_output=True,
        text=True,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    killed_run, clean_run = RunDir(tmp_path / "runs" / "killed"), RunDir(tmp_path / "runs" / "clean")
    assert len(killed_run.history()) == 2 and not killed_run.metrics_file.exists()
    assert killed_run.config.augment.mixup_alpha == 0.4
    run_cli("genre_tf.train", "--config", str(config), "--name", "killed")
    run_cli("genre_tf.train", "--config", str(config), "--name", "clean")
    assert [h["epoch"] for h in killed_run.history()] == list(range(4))
    for a, b in zip(killed_run.history(), clean_run.history(), strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4), (a, b)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-4), (a, b)
    assert killed_run.metrics()["splits"] == clean_run.metrics()["splits"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_workers_train_together(tmp_path):
    config = tiny_config_file(tmp_path, "mw", "train: {epochs: 1, batch_size: 16, distribute: multi_worker}")
    run_cli("genre_tf.prepare", "--config", str(config))
    workers = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    procs = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        env = {**os.environ, "TF_CONFIG": json.dumps(tf_config)}
        command = [sys.executable, "-m", "genre_tf.train", "--config", str(config)]
        procs.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    run = RunDir(tmp_path / "runs" / "mw")
    assert run.finished and len(run.history()) == 1
    assert "MultiWorkerMirroredStrategy" in outputs[0] or "multi_worker" in run.config_file.read_text()
    assert not list((tmp_path / "runs").glob(".mw.worker-*")), "the worker's scratch folder is removed"


def test_demo_mlp_and_cnn_reach_090_test_accuracy(tmp_path):
    """The demo configs as `make demo` runs them (fixed seeds): the synthetic genres are learnable."""
    repo = Path(__file__).resolve().parents[1]
    where = [f"output_dir={tmp_path / 'runs'}", f"data.root={tmp_path / 'demo'}", f"cache.dir={tmp_path / 'cache'}"]
    for name in ("demo", "demo_cnn"):
        cfg = load_config(repo / "configs" / f"{name}.yaml", where)
        metrics = train(cfg, cfg.output_dir / cfg.name, verbose=0)
        test = metrics["headline"]["test"]
        assert test["track_accuracy"] >= 0.9, (name, test)
        assert test["segment_accuracy"] >= 0.9, (name, test)
