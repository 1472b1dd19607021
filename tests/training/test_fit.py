"""End to end: train -> evaluate -> predict -> compare, resume after kill -9, two-worker training, refit."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from genre_tf import compare, predict
from genre_tf import train as train_command
from genre_tf.config import load_config
from genre_tf.evaluation.report import evaluate_run
from genre_tf.inputs.pipeline import label_ids
from genre_tf.run import RunDir
from genre_tf.training import fit as training
from genre_tf.training.fit import chosen_epochs, plan_phases, train

pytestmark = pytest.mark.slow


def run_cli(*args: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def run_main(module, argv: list[str], capsys) -> str:
    """A command's main() in this process (its stdout): TensorFlow is loaded already, so no fresh interpreter's
    start-up; `run_cli` keeps one real `python -m` per test where the separate process is the point."""
    capsys.readouterr()
    module.main(argv)
    return capsys.readouterr().out


def test_train_evaluate_predict_compare(tmp_path, tiny_demo_config, capsys):
    config = tiny_demo_config(tmp_path, "mlp", "train: {epochs: 4, batch_size: 16}")
    cfg = load_config(config)
    metrics = train(cfg, cfg.output_dir / "mlp", verbose=0)
    run = RunDir(cfg.output_dir / "mlp")
    for artefact in ("config.yaml", "model.keras", "history.csv", "metrics.json", "report.md", "skipped.csv"):
        assert (run.path / artefact).is_file(), artefact
    assert run.confusion_png.is_file() and run.loss_png.is_file()
    for artefact in (run.calibration_file, run.reliability_png, run.risk_coverage_csv, run.risk_coverage_png):
        assert artefact.is_file(), artefact
    calibration = metrics["calibration"]
    assert calibration["temperature"] == run.temperature != 1.0
    assert calibration["valid"]["nll_after"] <= calibration["valid"]["nll_before"]  # fitted on valid
    assert len(pd.read_csv(run.risk_coverage_csv)) >= 1
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
    folder = cfg.data.root / "folk"
    run_main(predict, ["--run", str(run.path), str(folder), "--output", str(submission)], capsys)
    table = pd.read_csv(submission)
    assert table.columns.tolist() == ["id", "class", "confidence", "unknown_score"] and len(table) == 4
    assert table.unknown_score.notna().all()  # the run fitted its unknown score on train and valid
    assert table.confidence.between(1 / len(run.classes), 1.0).all()  # the top genre's calibrated probability
    assert set(table["class"]) <= {*run.classes, "unknown"}
    single = run_main(predict, ["--run", str(run.path), str(folder / "folk.00000.wav"), "--top-k", "2"], capsys)
    assert single.strip().startswith("folk.00000: ") and single.count(",") == 1
    audio, rate = sf.read(folder / "folk.00001.wav")
    sf.write(tmp_path / "excerpt.wav", audio[: rate // 2], rate)  # half a segment
    capsys.readouterr()
    predict.main(["--run", str(run.path), str(tmp_path / "excerpt.wav")])
    short = capsys.readouterr()
    assert short.out.startswith("excerpt: ") and "skipped" not in short.err
    twice = tmp_path / "twice.csv"
    run_main(predict, ["--run", str(run.path), "--run", str(run.path), str(folder), "--output", str(twice)], capsys)
    assert pd.read_csv(twice).equals(table), "an ensemble of one run twice is that run"

    compared = run_main(compare, [str(run.path), "--output", str(tmp_path / "cmp")], capsys)
    assert "| mlp |" in compared
    assert (tmp_path / "cmp.png").is_file() and len(pd.read_csv(tmp_path / "cmp.csv")) == 1


def test_config_error_is_one_line(tmp_path, tiny_demo_config):
    config = tiny_demo_config(tmp_path, "bad", "model: {kind: transformer}")
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


def resume_and_train_clean(cfg, killed: RunDir, clean: RunDir) -> None:
    """The killed run started again, then the same config uninterrupted: in this process, where TensorFlow is loaded
    already (the kill itself was a real `python -m genre_tf.train`, SIGKILLed)."""
    train(cfg, killed.path, verbose=0)
    train(cfg, clean.path, verbose=0)


def test_resume_after_kill_matches_uninterrupted_run(tmp_path, tiny_demo_config):
    lines = ["model: {kind: cnn, image_size: [32, 32], cnn: {conv_blocks: 2, filters: 8}}", "train: {epochs: 8}"]
    config = tiny_demo_config(tmp_path, "cnn", *lines)
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
    killed, clean = RunDir(tmp_path / "runs" / "killed"), RunDir(tmp_path / "runs" / "clean")
    resume_and_train_clean(load_config(config), killed, clean)
    assert [h["epoch"] for h in killed.history()] == list(range(8))
    for a, b in zip(killed.history(), clean.history(), strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4), (a, b)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-4), (a, b)
    assert killed.metrics()["splits"] == clean.metrics()["splits"]
    assert sorted(p.name for p in killed.path.iterdir()) == sorted(p.name for p in clean.path.iterdir())


# `python -m genre_tf.train` that kills itself (SIGKILL, nothing cleaned up) in the middle of its third epoch.
TRAIN_KILLED_IN_EPOCH_3 = """
import os, runpy, signal
from genre_tf.serving import predict
from genre_tf.training import fit as training

def on_train_batch_end(self, batch, logs=None):
    if len(self.history) == 2 and batch == 1:
        os.kill(os.getpid(), signal.SIGKILL)

training.Tracker.on_train_batch_end = on_train_batch_end
runpy.run_module("genre_tf.train", run_name="__main__", alter_sys=True)
"""


# `python -m genre_tf.train` that gets SIGINT (Ctrl-C) from itself in the middle of its third epoch.
# The console is made quiet first, as the command does before it imports TensorFlow (here the patch imports it).
TRAIN_INTERRUPTED_IN_EPOCH_3 = "from genre_tf.config.console import quiet_console; quiet_console()\n" + (
    TRAIN_KILLED_IN_EPOCH_3.replace("signal.SIGKILL", "signal.SIGINT")
)


def test_ctrl_c_ends_in_one_line_and_the_same_command_says_where_it_resumes(tmp_path, tiny_demo_config, capsys):
    """SIGINT mid-epoch: exit 130 and one line on stderr, nothing of TensorFlow's native logs on either stream; the
    same command again says it resumes, and from which epoch."""
    lines = ["model: {kind: cnn, image_size: [32, 32], cnn: {conv_blocks: 2, filters: 8}}"]
    config = tiny_demo_config(tmp_path, "stopped", *lines, "train: {epochs: 4, batch_size: 8}")
    stopped = subprocess.run(
        [sys.executable, "-c", TRAIN_INTERRUPTED_IN_EPOCH_3, "--config", str(config)], capture_output=True, text=True
    )
    assert stopped.returncode == 130, stopped.stderr[-2000:]
    assert stopped.stderr.splitlines() == ["interrupted after epoch 2 of 4; the same command resumes"]
    for native in ("absl", "oneDNN", "I0000", "E0000", "Traceback"):
        assert native not in stopped.stdout + stopped.stderr, native
    out = run_main(train_command, ["--config", str(config), "--quiet"], capsys)
    assert f"resuming {tmp_path / 'runs' / 'stopped'} from epoch 3 of 4" in out
    assert [row["epoch"] for row in RunDir(tmp_path / "runs" / "stopped").history()] == [0, 1, 2, 3]


def test_resume_with_augmentation_matches_uninterrupted_run(tmp_path, tiny_demo_config):
    """Every image augmentation and mixup on: the draws are stateless, so the resumed epochs repeat them."""
    augment = "{time_masks: 1, time_mask_frames: 8, freq_masks: 1, freq_mask_bands: 6, gain_db: 6, time_shift: 1,"
    lines = [
        "model: {kind: cnn, image_size: [32, 32], cnn: {conv_blocks: 2, filters: 8}}",
        "train: {epochs: 4, batch_size: 8}",
        f"augment: {augment} mixup_alpha: 0.4}}",
    ]
    config = tiny_demo_config(tmp_path, "aug", *lines)
    killed = subprocess.run(
        [sys.executable, "-c", TRAIN_KILLED_IN_EPOCH_3, "--config", str(config), "--name", "killed"],
        capture_output=True,
        text=True,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    killed_run, clean_run = RunDir(tmp_path / "runs" / "killed"), RunDir(tmp_path / "runs" / "clean")
    assert len(killed_run.history()) == 2 and not killed_run.metrics_file.exists()
    assert killed_run.config.augment.mixup_alpha == 0.4
    resume_and_train_clean(load_config(config), killed_run, clean_run)
    assert [h["epoch"] for h in killed_run.history()] == list(range(4))
    for a, b in zip(killed_run.history(), clean_run.history(), strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4), (a, b)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-4), (a, b)
    assert killed_run.metrics()["splits"] == clean_run.metrics()["splits"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_workers_train_together(tmp_path, tiny_demo_config):
    config = tiny_demo_config(tmp_path, "mw", "train: {epochs: 1, batch_size: 16, distribute: multi_worker}")
    workers = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    procs = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        env = {**os.environ, "TF_CONFIG": json.dumps(tf_config)}
        command = [sys.executable, "-m", "genre_tf.train", "--config", str(config)]
        procs.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    for native in ("absl::InitializeLog", "oneDNN custom operations", "I0000 "):  # a quiet console by default
        assert native not in outputs[0] + outputs[1], native
    run = RunDir(tmp_path / "runs" / "mw")
    assert run.finished and len(run.history()) == 1
    assert "MultiWorkerMirroredStrategy" in outputs[0] or "multi_worker" in run.config_file.read_text()
    assert not list((tmp_path / "runs").glob(".mw.worker-*")), "the worker's scratch folder is removed"


def test_chosen_epochs_per_phase_follow_the_best_model_so_far():
    """A later phase starts from the best model before it, so it counts only up to its last improvement on that."""
    rows = [("head", 0.9), ("head", 0.7), ("head", 0.8), ("fine_tune", 0.75), ("fine_tune", 0.6), ("fine_tune", 0.65)]
    history = [{"phase": phase, "val_loss": loss, "val_accuracy": 1 - loss} for phase, loss in rows]
    assert chosen_epochs(history, "val_loss") == {"head": 2, "fine_tune": 2}
    assert chosen_epochs(history[:4], "val_loss") == {"head": 2, "fine_tune": 0}  # fine-tuning never beat the head
    ties = [{"phase": "train", "val_accuracy": a} for a in (0.5, 0.8, 0.8, 0.7)]
    assert chosen_epochs(ties, "val_accuracy") == {"train": 2}  # a tie is no improvement, as in Tracker


REFIT_EPOCHS = 6


@pytest.fixture(scope="module")
def refitted(tmp_path_factory, make_config, write_feature_table, killed_after):
    """A refitted MLP run on a feature table (18 train, 3 valid, 3 test rows), the same run killed after its refit's
    second epoch and started again, and the same run refitted with an annealed schedule; the arguments of the
    train_dataset calls of each (after the kill for the killed one)."""
    tmp = tmp_path_factory.mktemp("refit")
    csv = write_feature_table(tmp / "table.csv", ["blues", "jazz", "rock"], rows_per_class=8)
    calls = []

    def spy(loader, n, batch_size, seed, first_epoch, epochs, augmentation=None):
        ds, steps = train_dataset(loader, n, batch_size, seed, first_epoch, epochs, augmentation)
        calls.append({"n": n, "epochs": (first_epoch, epochs), "steps": steps})
        return ds, steps

    train_dataset = training.train_dataset
    runs = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(training, "train_dataset", spy)
        for name, refit_schedule in (("clean", "follow"), ("killed", "follow"), ("annealed", "anneal")):
            cfg = make_config(
                tmp,
                f"name={name}",
                f"output_dir={tmp / 'runs'}",
                "data.source=table",
                f"data.csv={csv}",
                "model.mlp.hidden_layers=1",
                "model.mlp.units=8",
                f"train.epochs={REFIT_EPOCHS}",
                "train.batch_size=4",
                "train.patience=0",
                "train.learning_rate=0.01",  # valid loss is lowest at epoch 4 of 6 (0.30 there, 0.34 at 6)
                "train.schedule=cosine",
                "train.warmup_epochs=1",
                "train.refit=true",
                f"train.refit_schedule={refit_schedule}",
            )
            run = runs[name] = RunDir(tmp / "runs" / name)
            if name == "killed":
                with killed_after(2, refit=True), pytest.raises(RuntimeError, match="killed after epoch 2"):
                    train(cfg, run.path, verbose=0)
                assert len(run.refit.history()) == 2 and not run.finished
                assert run.chosen.model_file.is_file() and not run.model_file.exists()
                calls.clear()
            train(cfg, run.path, verbose=0)
            runs[f"{name}_calls"] = list(calls)
            calls.clear()
    return runs, pd.read_csv(csv)


def test_refit_trains_on_train_and_valid_for_exactly_the_chosen_epochs(refitted):
    runs, table = refitted
    run = runs["clean"]
    losses = [h["val_loss"] for h in run.history()]
    chosen = int(np.argmin(losses)) + 1
    assert len(losses) == REFIT_EPOCHS and 2 < chosen < REFIT_EPOCHS, "the refit must stop before the first fit did"
    refit_history = run.refit.history()
    assert [h["epoch"] for h in refit_history] == list(range(chosen))
    assert all(h["phase"] == "train" and "val_loss" not in h for h in refit_history)
    first_fit, refit_call = runs["clean_calls"]
    assert first_fit == {"n": 18, "epochs": (0, REFIT_EPOCHS), "steps": 4}
    assert refit_call == {"n": 21, "epochs": (0, chosen), "steps": 5}  # train + valid: 5 batches of 4 per epoch
    # The schedule spans the phase's configured epochs, so each refit epoch ends at the first fit's rate.
    first_rates = [h["learning_rate"] for h in run.history()[:chosen]]
    assert [h["learning_rate"] for h in refit_history] == pytest.approx(first_rates, rel=1e-5)
    assert run.metrics()["refit"] == {
        "tracks": 21,
        "examples": 21,
        "epochs": {"train": chosen},
        "train_seconds": run.metrics()["refit"]["train_seconds"],
    }
    fitted = table[table.split.isin(["train", "valid"])][run.scaler.columns]
    np.testing.assert_allclose(run.scaler.mean, fitted.mean().to_numpy())  # the final model's scaler: train + valid
    np.testing.assert_allclose(run.refit.scaler.mean, fitted.mean().to_numpy())
    train_only = table[table.split == "train"][run.scaler.columns]
    np.testing.assert_allclose(run.chosen.scaler.mean, train_only.mean().to_numpy())  # the chosen model's: train


def test_an_annealed_refit_decays_over_its_own_epochs(refitted):
    runs, _ = refitted
    clean, annealed = runs["clean"], runs["annealed"]
    losses = [[h["val_loss"] for h in run.history()] for run in (clean, annealed)]
    assert losses[1] == pytest.approx(losses[0], rel=1e-5), "the first fit is the same"
    rates = [h["learning_rate"] for h in annealed.refit.history()]
    chosen = len(clean.refit.history())
    assert len(rates) == chosen and rates[-1] == pytest.approx(0.0, abs=1e-9)  # cosine to min_learning_rate 0
    followed = [h["learning_rate"] for h in clean.refit.history()]
    assert followed[-1] > 1e-3 and all(a <= f + 1e-9 for a, f in zip(rates[1:], followed[1:], strict=True))


def probabilities(run: RunDir, rows: pd.DataFrame) -> np.ndarray:
    return run.load_model().predict(run.scaler.transform(rows), verbose=0)


def test_refit_report_gives_valid_figures_of_the_chosen_model_and_test_figures_of_the_refitted_one(refitted):
    runs, table = refitted
    run = runs["clean"]
    metrics = run.metrics()
    valid, test = table[table.split == "valid"], table[table.split == "test"]
    chosen_valid, final_valid = probabilities(run.chosen, valid), probabilities(run, valid)
    assert not np.allclose(chosen_valid, final_valid), "two different models, or the check proves nothing"
    for split, rows, probs in [("valid", valid, chosen_valid), ("test", test, probabilities(run, test))]:
        labels, predicted = label_ids(rows.label, run.classes), probs.argmax(axis=1)
        result = metrics["splits"][split]["segment"]
        assert result["accuracy"] == pytest.approx(float(np.mean(labels == predicted))), split
        confusion = np.zeros((3, 3), int)
        np.add.at(confusion, (labels, predicted), 1)
        assert result["confusion"] == confusion.tolist(), split
    chosen = metrics["refit"]["epochs"]["train"]
    assert (
        f"The final model was refitted on train + valid (21 tracks, 21 examples) for the {chosen} epochs chosen on "
        f"valid (per phase: train {chosen}). The valid figures are those of the model chosen on valid"
    ) in run.report_file.read_text()
    again = evaluate_run(run, ["valid", "test"])  # `evaluate --run` judges valid with the chosen model too
    assert again["splits"] == metrics["splits"] and again["refit"] == metrics["refit"]


def test_refit_killed_midway_resumes_to_the_same_run(refitted):
    runs, _ = refitted
    clean, killed = runs["clean"], runs["killed"]
    assert runs["killed_calls"] == [{"n": 21, "epochs": (2, clean.metrics()["refit"]["epochs"]["train"]), "steps": 5}]
    assert killed.history() == clean.history()
    for a, b in zip(killed.refit.history(), clean.refit.history(), strict=True):
        assert a.pop("phase") == b.pop("phase")
        assert a == pytest.approx(b, rel=1e-6)
    assert killed.metrics()["splits"] == clean.metrics()["splits"]
    for a, b in zip(killed.load_model().weights, clean.load_model().weights, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, err_msg=a.path)

    def files(run: RunDir) -> list[str]:
        return sorted(p.relative_to(run.path).as_posix() for p in run.path.rglob("*") if "logs" not in p.parts)

    assert files(killed) == files(clean)
    assert "chosen/model.keras" in files(clean) and "refit/model.keras" not in files(clean)  # moved onto model.keras


def broken_library(tmp_path, tiny_demo_config, genres=("ambient", "folk", "techno")) -> tuple[Path, Path]:
    """A folder of the tiny demo's clips, 4 per genre, and two files that cannot be decoded (a garbled FLAC, an
    empty mp3) beside them; a config over it that shares the tiny demo's cache. (config, folder)"""
    demo = load_config(tiny_demo_config(tmp_path, "demo"))
    library = tmp_path / "library"
    for genre in genres:
        shutil.copytree(demo.data.root / genre, library / genre)
    (library / genres[0] / "garbled.flac").write_bytes(b"fLaC" + bytes(range(256)) * 8)
    (library / genres[-1] / "empty.mp3").write_bytes(b"")
    config = tmp_path / "library.yaml"
    lines = [
        "name: library",
        f"output_dir: {tmp_path / 'runs'}",
        f"data: {{source: folder, root: {library}}}",
        f"cache: {{dir: {demo.cache.dir}, jobs: 1}}",
        "audio: {segment_seconds: 1.0}",
        "mel: {n_mels: 32}",
        "model: {kind: mlp}",
        "train: {epochs: 1, batch_size: 16}",
    ]
    config.write_text("\n".join(lines) + "\n")
    return config, library


def split_table(out: str) -> dict[str, list[int]]:
    """The train / valid / test counts per genre of a printed split table."""
    rows = re.findall(r"^  (\w+)\s+(\d+) / (\d+) / (\d+)$", out, flags=re.M)
    return {genre: [int(n) for n in counts] for genre, *counts in rows}


def test_files_that_fail_to_decode_take_no_slot_and_train_names_them(tmp_path, tiny_demo_config, capsys):
    config, library = broken_library(tmp_path, tiny_demo_config)
    out = run_main(train_command, ["--config", str(config), "--quiet"], capsys)
    table = split_table(out)
    assert table == {genre: [2, 1, 1] for genre in ("ambient", "folk", "techno")}, out  # 4 decodable tracks each
    assert (
        f"skipped {library / 'ambient' / 'garbled.flac'}: " in out
        and f"skipped {library / 'techno' / 'empty.mp3'}: " in out
    )
    run = RunDir(tmp_path / "runs" / "library")
    metrics = run.metrics()
    assert metrics["splits"]["test"]["segment"]["n"] > 0 and metrics["splits"]["test"]["track_mean"]["n"] == 3
    assert metrics["splits"]["valid"]["track_mean"]["n"] == 3
    assert len(pd.read_csv(run.skipped_file)) == 2
    summary = prepare_summary(config, capsys)
    assert summary["splits"] == {"test": 3, "train": 6, "valid": 3} and summary["skipped"] == 2


def prepare_summary(config: Path, capsys) -> dict:
    from genre_tf import prepare

    cfg = load_config(config)
    run_main(prepare, ["--config", str(config)], capsys)
    return json.loads((cfg.cache.dir / "prepared" / cfg.name / "summary.json").read_text())


def test_a_config_that_fails_its_checks_leaves_no_run_folder(tmp_path, tiny_demo_config, capsys, monkeypatch):
    config, library = broken_library(tmp_path, tiny_demo_config, genres=("folk",))
    with pytest.raises(SystemExit) as stop:
        run_main(train_command, ["--config", str(config), "--name", "X"], capsys)
    assert stop.value.code == 2 and not (tmp_path / "runs" / "X").exists()
    assert "only one genre" in capsys.readouterr().err

    def offline(*args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", offline)
    extracted = []
    monkeypatch.setattr(training, "load_examples", lambda *a, **k: extracted.append(a) or pytest.fail("audio read"))
    resnet = [
        "--set",
        "model.kind=transfer",
        "--set",
        "model.transfer.weights=imagenet",
        "--set",
        "model.image_size=[32,32]",
        "--set",
        "model.channels=3",
    ]
    with pytest.raises(SystemExit) as stop:
        run_main(train_command, ["--config", str(config), "--name", "X", *resnet], capsys)
    err = capsys.readouterr().err
    if "could not be downloaded" not in err:
        pytest.skip(f"ResNet50 ImageNet weights are in the Keras cache ({err.strip()})")
    assert stop.value.code == 2 and not extracted and not (tmp_path / "runs" / "X").exists()
    assert err.strip().splitlines() == [err.strip()]  # one line
