"""Config loading: YAML + overrides, validation with one-line errors, round trip."""

import subprocess
import sys

import pytest

from genre_tf.config import ConfigError, load_config, save_config

DEMO = ["data.source=demo", "data.root=data/demo"]


def test_overrides_parse_yaml_values():
    cfg = load_config(None, [*DEMO, "train.epochs=3", "model.kind=cnn", "model.image_size=[64, 32]"])
    assert cfg.train.epochs == 3
    assert cfg.model.kind == "cnn"
    assert cfg.model.image_size == [64, 32]


def test_int_accepted_where_float_expected():
    assert load_config(None, [*DEMO, "train.learning_rate=1"]).train.learning_rate == 1.0


def test_exponent_without_a_dot_is_a_number():
    """YAML 1.1 (PyYAML) reads 1e-4 as the string '1e-4'; where the config wants a float, it is the number."""
    cfg = load_config(None, [*DEMO, "train.learning_rate=1e-4", "audio.silence_rms=-0E+0"])
    assert (cfg.train.learning_rate, cfg.audio.silence_rms) == (1e-4, 0.0)
    with pytest.raises(ConfigError, match="must be a number, got '1e-4x'"):
        load_config(None, [*DEMO, "train.learning_rate=1e-4x"])
    with pytest.raises(ConfigError, match="must be an integer, got '1e3'"):
        load_config(None, [*DEMO, "train.epochs=1e3"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.epochs=abc", "train.epochs: must be an integer, got 'abc'"),
        ("model.kind=svm", "model.kind: must be one of mlp, cnn, transfer, got 'svm'"),
        ("model.transfer.trainable_blocks=40", "model.transfer.trainable_blocks: must be 0..16, got 40"),
        ("model.resnet.trainable_blocks=40", "model.transfer.trainable_blocks: must be 0..16, got 40"),
        ("train.epox=3", "train.epox: unknown key"),
        ("data.split_file=missing.csv", "data.split_file: path does not exist: missing.csv"),
        ("data.split=random", "data.split: must be one of auto, gtzan, stratified, got 'random'"),
        ("model.mlp.batch_norm=maybe", "model.mlp.batch_norm: must be true or false"),
        ("data.valid_fraction=0.9", "data.test_fraction: valid_fraction + test_fraction must be below 1"),
        ("train=3", "train: must be a mapping"),
        ("augment.mixup_alpha=-1", "augment.mixup_alpha: must be 0.0..10.0, got -1.0"),
        ("augment.time_shift=1.5", "augment.time_shift: must be 0.0..1.0, got 1.5"),
        ("train.schedule=linear", "train.schedule: must be one of constant, cosine, got 'linear'"),
        ("train.optimizer=sgd", "train.optimizer: must be one of adam, adamw, got 'sgd'"),
        ("train.weight_decay=2", "train.weight_decay: must be 0.0..1.0, got 2.0"),
        ("model.mlp.scaler=minmax", "model.mlp.scaler: must be one of standard, quantile, got 'minmax'"),
    ],
)
def test_errors_name_the_key(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, [*DEMO, override])
    assert str(err.value).startswith(message)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.split=stratified", "data.split_file={file}"], "data.split_file: gives the split itself"),
        (["data.folds=5", "data.split_file={file}"], "data.folds: k-fold is a split itself"),
        (["data.folds=5", "data.split=gtzan"], "data.folds: k-fold is a split itself"),
    ],
)
def test_one_split_at_a_time(tmp_path, overrides, message):
    split_file = tmp_path / "split.csv"
    split_file.write_text("track_id,split\na.00000,train\n")
    assert load_config(None, [*DEMO, f"data.split_file={split_file}"]).data.split == "auto"  # alone, as before
    with pytest.raises(ConfigError) as err:
        load_config(None, [*DEMO, *(o.format(file=split_file) for o in overrides)])
    assert str(err.value).startswith(message)


def test_yaml_file_and_round_trip(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: x\ndata: {source: demo, root: d}\nmodel: {kind: transfer, transfer: {weights: null}}\n")
    cfg = load_config(path, ["model.transfer.trainable_blocks=3"])
    assert cfg.model.transfer.weights is None and cfg.model.transfer.trainable_blocks == 3
    save_config(cfg, tmp_path / "saved.yaml")
    assert load_config(tmp_path / "saved.yaml") == cfg


def test_augmentation_keys_default_off_and_round_trip(tmp_path):
    """The augment section is off unless set, and is saved with the run like every other section."""
    assert not load_config(None, DEMO).augment.active
    cfg = load_config(None, [*DEMO, "augment.time_masks=2", "augment.time_mask_frames=10", "augment.mixup_alpha=0.2"])
    assert (cfg.augment.time_masks, cfg.augment.time_mask_frames, cfg.augment.mixup_alpha) == (2, 10, 0.2)
    assert cfg.augment.active and cfg.augment.gain_db == 0.0
    save_config(cfg, tmp_path / "saved.yaml")
    assert load_config(tmp_path / "saved.yaml") == cfg
    old = tmp_path / "old.yaml"  # a run saved before the section existed loads with it off
    old.write_text("data: {source: demo, root: d}\n")
    assert load_config(old).augment == load_config(None, DEMO).augment


def test_old_resnet50_names_load_as_transfer(tmp_path):
    """Configs and saved runs from before the transfer family: `kind: resnet50` and the `resnet` section."""
    old = tmp_path / "old.yaml"
    old.write_text("data: {source: demo, root: d}\nmodel: {kind: resnet50, resnet: {weights: null, head_units: 64}}\n")
    cfg = load_config(old, ["model.resnet.trainable_blocks=3"])
    assert cfg.model.kind == "transfer"
    assert (cfg.model.transfer.weights, cfg.model.transfer.head_units, cfg.model.transfer.trainable_blocks) == (
        None,
        64,
        3,
    )
    # Each source is renamed as it is read, so a later source wins whichever names either one uses.
    assert load_config(old, ["model.transfer.head_units=32"]).model.transfer.head_units == 32
    new = tmp_path / "new.yaml"
    new.write_text("extends: old.yaml\nmodel: {transfer: {head_units: 16}}\n")
    assert load_config(new).model.transfer.head_units == 16
    both = tmp_path / "both.yaml"
    both.write_text("data: {source: demo, root: d}\nmodel: {resnet: {head_units: 1}, transfer: {head_units: 2}}\n")
    assert load_config(both).model.transfer.head_units == 2


def test_command_line_error_is_one_line_exit_2(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data: {source: demo, root: d}\ntrain: {epochs: -1}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "genre_tf.prepare", "--config", str(path)], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == "config error: train.epochs: must be 1..10000, got -1"
    assert "Traceback" not in proc.stderr


def test_paths_expand_the_home_folder_and_environment_variables(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("MUSIC", str(tmp_path / "music"))
    (tmp_path / "music").mkdir()
    config = tmp_path / "c.yaml"
    config.write_text("data: {source: folder, root: $MUSIC}\ncache: {dir: ~/cache}\n")
    cfg = load_config("~/c.yaml", ["output_dir=${MUSIC}/runs"])
    assert (cfg.data.root, cfg.cache.dir, cfg.output_dir) == (
        tmp_path / "music",
        tmp_path / "cache",
        tmp_path / "music" / "runs",
    )
    demo = load_config(None, ["data.source=demo", "data.root=~/lib"])  # not a folder named `~` in the current one
    assert demo.data.root == tmp_path / "lib"
    with pytest.raises(
        ConfigError, match=r"^cache.dir: environment variable NOT_SET_ANYWHERE in \$NOT_SET_ANYWHERE/x is not set$"
    ):
        load_config(None, ["data.source=demo", "data.root=x", "cache.dir=$NOT_SET_ANYWHERE/x"])


def test_a_missing_relative_path_says_what_it_is_relative_to(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        ConfigError, match=rf"^data.root: folder does not exist: music \(relative to the current folder {tmp_path}\)$"
    ):
        load_config(None, ["data.source=folder", "data.root=music"])


def test_invalid_yaml_names_the_line_and_column(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("data:\n  root: x\n   source: folder\n")
    with pytest.raises(
        ConfigError, match=r"bad.yaml is not valid YAML: line 3, column 10: mapping values are not allowed here$"
    ):
        load_config(config)
