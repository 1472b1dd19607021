"""Shared tiny inputs: short tone clips, GTZAN-style feature tables, configs and hand-made run directories.

The factories are session-scoped fixtures that write where they are told, so module-scoped fixtures can use them too.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from genre_tf.config import Config, MelConfig, load_config, save_config
from genre_tf.features.analysis import encode_mel_png, feature_columns
from genre_tf.inputs.recipe import InputRecipe

# `make test` runs one pytest worker per core (pytest-xdist): each worker, and every process its tests start, keeps
# TensorFlow to one thread, so that two workers do not fight over both cores (a third less wall time, measured on
# tests/test_boundary.py beside other load). Set before any test imports TensorFlow; a plain `pytest` keeps the default.
if os.environ.get("PYTEST_XDIST_WORKER"):
    for variable in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS"):
        os.environ.setdefault(variable, "1")

SR = 22050
SEGMENT_SECONDS = 0.5  # tiny segments keep extraction fast: a 1.5 s clip is 3 segments


@pytest.fixture(scope="session")
def write_clip() -> Callable[..., Path]:
    """write_clip(path, seconds, hz): a mono 16-bit WAV sine tone at 22050 Hz."""

    def write(path: Path, seconds: float, hz: float = 440.0) -> Path:
        t = np.arange(round(seconds * SR)) / SR
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32), SR, subtype="PCM_16")
        return path

    return write


@pytest.fixture(scope="session")
def write_feature_table() -> Callable[..., Path]:
    """write_feature_table(path, classes, rows_per_class): a GTZAN-style table with the published 20-MFCC columns.

    Columns: filename, length, the features (class-dependent values), then label and split unless
    `labeled=False`. Per class the rows are train, train, ..., valid, test.
    """

    def write(path: Path, classes: list[str], rows_per_class: int = 4, labeled: bool = True, seed: int = 0) -> Path:
        rng = np.random.default_rng(seed)
        columns = feature_columns(20)
        rows = []
        for c, name in enumerate(classes):
            for i in range(rows_per_class):
                split = "test" if i == rows_per_class - 1 else "valid" if i == rows_per_class - 2 else "train"
                values = rng.normal(c, 1.0, len(columns))
                row = {"filename": f"{name}.{i:05d}.wav", "length": 661794, **dict(zip(columns, values, strict=True))}
                rows.append({**row, "label": name, "split": split} if labeled else row)
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(rows).to_csv(path, index=False)
        return path

    return write


@pytest.fixture(scope="session")
def make_config() -> Callable[..., Config]:
    """make_config(tmp, *overrides): a validated config, its cache in `tmp`, one extraction process, 0.5 s segments."""

    def make(tmp: Path, *overrides: str) -> Config:
        base = [
            "data.source=demo",  # a demo root need not exist yet; tests that read audio pass their own files
            f"data.root={tmp / 'demo'}",
            f"cache.dir={tmp / 'cache'}",
            "cache.jobs=1",
            f"audio.segment_seconds={SEGMENT_SECONDS}",
            "audio.min_seconds=0.1",  # clips shorter than a 0.5 s segment are tested; fragments below 0.1 s are not
            "mel.n_mels=16",
        ]
        return load_config(None, [*base, *overrides])

    return make


@pytest.fixture(scope="session")
def make_table_run(make_config) -> Callable[..., Path]:
    """make_table_run(run_path, table_csv, *overrides): a run directory made by hand, as `train` leaves it, untrained.

    An MLP without hidden layers (one softmax layer) unless overridden, with weights drawn from `seed`, over a
    feature table: config.yaml, classes.json, scaler.json (model.mlp.scaler, fitted on the train split) and
    model.keras. No metrics.json yet.
    """

    def make(run_path: Path, table_csv: Path, *overrides: str, seed: int = 0) -> Path:
        from genre_tf import models
        from genre_tf.features.scaling import fit_scaler
        from genre_tf.inputs.examples import examples_from_table

        cfg = make_config(
            run_path.parent,
            f"name={run_path.name}",
            f"output_dir={run_path.parent}",
            "data.source=table",
            f"data.csv={table_csv}",
            "model.kind=mlp",
            "model.mlp.hidden_layers=0",
            f"seed={seed}",
            *overrides,
        )
        examples = examples_from_table(table_csv, cfg)
        scaler = fit_scaler(cfg.model.mlp.scaler, examples.split("train"), examples.feature_columns)
        model = models.build_model(cfg.model, (len(scaler.columns),), len(examples.classes))
        rng = np.random.default_rng(seed)
        model.set_weights([rng.normal(0.0, 0.5, w.shape).astype(np.float32) for w in model.get_weights()])
        run_path.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_path / "config.yaml")
        (run_path / "classes.json").write_text(json.dumps(examples.classes))
        scaler.save(run_path / "scaler.json")
        model.save(run_path / "model.keras")
        return run_path

    return make


@pytest.fixture(scope="session")
def make_audio_run(make_config) -> Callable[..., Path]:
    """make_audio_run(run_path, classes, *overrides, seed=0): an audio model's run directory made by hand, untrained.

    The configured model (a CNN unless overridden) with weights drawn from `seed`: config.yaml, classes.json and
    model.keras, as `train` leaves them. No metrics.json yet.
    """

    def make(run_path: Path, classes: list[str], *overrides: str, seed: int = 0) -> Path:
        import keras

        from genre_tf import models

        cfg = make_config(
            run_path.parent, f"name={run_path.name}", f"output_dir={run_path.parent}", "model.kind=cnn", f"seed={seed}",
            *overrides,
        )  # fmt: skip
        keras.utils.set_random_seed(seed)
        model = models.build_model(cfg.model, InputRecipe.of(cfg).shape(), len(classes))
        run_path.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_path / "config.yaml")
        (run_path / "classes.json").write_text(json.dumps(classes))
        model.save(run_path / "model.keras")
        return run_path

    return make


@pytest.fixture(scope="session")
def make_ensemble_run() -> Callable[..., Path]:
    """make_ensemble_run(path, [(run_path, weight), ...]): an ensemble run directory as `genre_tf.training.ensemble`
    writes what serve, export and predict read of it: classes.json (the first member's), ensemble.json (each member's
    name, weight, pooling and source) and members/<name>/, a copy of each run directory. No metrics.json."""

    def make(path: Path, members: list[tuple[Path, float]]) -> Path:
        from genre_tf.evaluation.pooling import track_pooling
        from genre_tf.run import RunDir

        (path / "members").mkdir(parents=True)
        shutil.copyfile(members[0][0] / "classes.json", path / "classes.json")
        record = []
        for member, weight in members:
            shutil.copytree(member, path / "members" / member.name)
            record.append({"name": member.name, "weight": weight, "pooling": track_pooling(RunDir(member)),
                           "source": str(member)})  # fmt: skip
        (path / "ensemble.json").write_text(json.dumps({"selection": "greedy", "members": record}))
        return path

    return make


def write_tiny_demo_config(folder: Path, name: str, data: Path, *lines: str) -> Path:
    """`folder/name.yaml`: the tiny demo data (6 genres x 4 tracks x 3 s) in `data`, its runs in `folder/runs`;
    `lines` add YAML at top level."""
    path = folder / f"{name}.yaml"
    settings = [
        f"name: {name}",
        f"output_dir: {folder / 'runs'}",
        f"data: {{source: demo, root: {data / 'demo'}, demo_tracks_per_genre: 4, demo_seconds: 3}}",
        f"cache: {{dir: {data / 'cache'}, jobs: 1}}",
        "audio: {segment_seconds: 1.0}",
        "mel: {n_mels: 32}",
    ]
    path.write_text("\n".join([*settings, *lines]) + "\n")
    return path


@pytest.fixture(scope="session")
def tiny_demo_config(tmp_path_factory) -> Callable[..., Path]:
    """tiny_demo_config(folder, name, *lines): a config file over the tiny demo data, which is generated and
    prepared (feature rows and mel images) once per session. No test pays for its extraction again, and a test that
    kills a training finds its input ready, so the kill lands in training."""
    from genre_tf.extract.prepared import prepare
    from genre_tf.features.representations import FEATURES, MEL_IMAGE

    data = tmp_path_factory.mktemp("tiny_demo")
    prepare(load_config(write_tiny_demo_config(data, "prepare", data)), progress=False, names=(FEATURES, MEL_IMAGE))

    def make(folder: Path, name: str, *lines: str) -> Path:
        return write_tiny_demo_config(folder, name, data, *lines)

    return make


@pytest.fixture(scope="session")
def killed_after() -> Callable[..., contextlib.AbstractContextManager]:
    """`with killed_after(epoch, refit=False):` training raises RuntimeError right after the backup of that epoch
    (counted from 1, over all phases) of the first fit, or of the refit: what a kill -9 there leaves on disk."""

    @contextlib.contextmanager
    def killed(epoch: int, refit: bool = False):
        from genre_tf.training.tracking import EpochBackup

        backup = EpochBackup.on_epoch_end

        def on_epoch_end(self, index, logs=None):
            backup(self, index, logs)
            if index + 1 == epoch and (self.folder.parent.parent.name == "refit") == refit:
                raise RuntimeError(f"killed after epoch {epoch}")

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(EpochBackup, "on_epoch_end", on_epoch_end)
            yield

    return killed


MEL_CLASSES = ["blues", "jazz", "rock"]
MEL_IMAGES = 12


@pytest.fixture
def mel_frame(tmp_path) -> pd.DataFrame:
    """12 random 16-bit mel PNGs (16 bands x 24 frames), as the feature cache writes them, with labels and tracks."""
    rng = np.random.default_rng(0)
    mel = MelConfig()
    rows = []
    for i in range(MEL_IMAGES):
        path = tmp_path / "mels" / f"mel_{i:04d}.png"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(encode_mel_png(rng.uniform(mel.db_floor, mel.db_ceiling, (16, 24)), mel))
        rows.append({"track_id": f"t{i // 2}", "label": MEL_CLASSES[i % 3], "mel_path": str(path)})
    return pd.DataFrame(rows)
