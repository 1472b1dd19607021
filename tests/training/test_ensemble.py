"""Ensemble runs: greedy selection on valid, the run directory evaluate / predict / compare take, its agreement with
its members' own predict outputs (a refitted member judged on valid by its chosen model, a probe pooling logits), and
the one-line refusals of members that do not share classes or split."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from genre_tf import evaluate
from genre_tf import predict as predict_command
from genre_tf.config import Config, ConfigError, load_ensemble_config, save_config
from genre_tf.ensemble import main
from genre_tf.evaluation.calibration import calibrated
from genre_tf.evaluation.compare import comparison_table
from genre_tf.run import RunDir
from genre_tf.serving import predict
from genre_tf.training.ensemble import build_ensemble, greedy_selection

CLASSES = ["blues", "jazz", "rock"]
SPLIT = {0: "train", 1: "train", 2: "valid", 3: "test"}  # per class, track number -> split
CNN = ["model.image_size=[16, 16]", "model.cnn.conv_blocks=1", "model.cnn.filters=4"]
# A linear probe on a random MobileNet: its track probabilities are the softmax of its segments' mean logits.
PROBE = ["model.kind=transfer", "model.transfer.backbone=MobileNet", "model.transfer.alpha=0.25",
         "model.transfer.weights=null", "model.level=track", "model.transfer.head_units=0", "model.channels=3",
         "model.image_size=[32, 32]"]  # fmt: skip


def clip_path(root: Path, genre: str, track: int) -> Path:
    return root / genre / f"{genre}.{track:05d}.wav"


def split_clips(root: Path, split: str) -> list[Path]:
    return [clip_path(root, g, t) for g in CLASSES for t, s in SPLIT.items() if s == split]


def finish(run: RunDir, scale: float = 30.0) -> RunDir:
    """A random softmax layer, `scale` times sharper (a random one gives nearly uniform probabilities, which would hide
    how a run pools its segments and how the members are weighed); then what `train` leaves last: metrics.json (here
    only the parameter count)."""
    model = run.load_model()
    kernel, bias = model.get_layer("predictions").get_weights()
    model.get_layer("predictions").set_weights([kernel * scale, bias])
    model.save(run.model_file)
    run.metrics_file.write_text(json.dumps({"params": model.count_params()}))
    return run


def probe_run(cfg: Config, seed: int) -> RunDir:
    """A MobileNet linear probe's run directory (track-level: it pools its segments' logits) whose model is a small
    random stand-in reading the same 32 x 32 x 3 images: a random MobileNet's features vanish (about 1e-17) on them,
    so every track would get uniform probabilities."""
    import keras

    run = RunDir(cfg.output_dir / cfg.name)
    run.path.mkdir(parents=True)
    save_config(cfg, run.config_file)
    run.classes_file.write_text(json.dumps(CLASSES))
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((*cfg.model.image_size, cfg.model.channels))
    features = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(8, 3, activation="relu")(inputs))
    keras.Model(inputs, keras.layers.Dense(len(CLASSES), "softmax", name="predictions")(features)).save(run.model_file)
    return run


def write_ensemble_config(path: Path, name: str, members: list[Path], *lines: str) -> Path:
    values = {"name": name, "output_dir": str(path.parent), "members": [str(m) for m in members]}
    values.update(yaml.safe_load("\n".join(lines)) or {})
    path.write_text(yaml.safe_dump(values))
    return path


@pytest.fixture(scope="module")
def members(tmp_path_factory, write_clip, make_audio_run, make_config) -> dict:
    """Three untrained runs on 12 tone clips (per genre 2 train, 1 valid, 1 test tracks of 1.5 s): a CNN, a MobileNet
    probe and a refitted CNN whose chosen/ model (another seed) is the one valid judges."""
    tmp = tmp_path_factory.mktemp("ensemble")
    root = tmp / "audio"
    for c, genre in enumerate(CLASSES):
        for track in SPLIT:
            write_clip(clip_path(root, genre, track), 1.5, 220.0 * (c + 1) + 40.0 * track)
    split_file = tmp / "split.csv"
    rows = [(clip_path(root, g, t).stem, s) for g in CLASSES for t, s in SPLIT.items()]
    pd.DataFrame(rows, columns=["track_id", "split"]).to_csv(split_file, index=False)
    data = ["data.source=folder", f"data.root={root}", f"data.split_file={split_file}"]
    runs = tmp / "runs"
    cnn = finish(RunDir(make_audio_run(runs / "cnn", CLASSES, *data, *CNN, seed=0)))
    probe = finish(probe_run(make_config(runs, *data, *PROBE, "name=probe", f"output_dir={runs}"), seed=1))
    refitted = finish(RunDir(make_audio_run(runs / "refitted", CLASSES, *data, *CNN, seed=2)))
    chosen = finish(RunDir(make_audio_run(tmp / "spare" / "chosen", CLASSES, *data, *CNN, seed=3)))
    refitted.chosen.path.mkdir()
    for part in ("config_file", "classes_file", "model_file"):
        shutil.copyfile(getattr(refitted if part != "model_file" else chosen, part), getattr(refitted.chosen, part))
    return {"tmp": tmp, "root": root, "data": data, "cnn": cnn, "probe": probe, "refitted": refitted}


@pytest.fixture(scope="module")
def built(members) -> RunDir:
    """The greedy ensemble of the three, made by the command line."""
    tmp = members["tmp"]
    runs = [members[name].path for name in ("cnn", "probe", "refitted")]
    main(["--config", str(write_ensemble_config(tmp / "ens.yaml", "ens", runs, "rounds: 6"))])
    return RunDir(tmp / "ens")


def own_predictions(run: RunDir, clips: list[Path]) -> np.ndarray:
    """`predict --run RUN CLIPS`'s track probabilities, in the clips' order."""
    tracks, probs, _ = predict.ensemble([run], clips)
    assert tracks.tolist() == [clip.stem for clip in clips]
    return probs


@pytest.fixture(scope="module")
def own(members, built) -> dict:
    """Per split, each member's (and the ensemble's) `predict` output on the split's clips: on valid, the refitted
    member's chosen model's."""
    clips = {split: split_clips(members["root"], split) for split in ("valid", "test")}
    judges = {"cnn": members["cnn"], "probe": members["probe"], "ens": built}
    both = {name: own_predictions(run, clips["valid"] + clips["test"]) for name, run in judges.items()}
    result = {split: {name: probs[i * 3 : i * 3 + 3] for name, probs in both.items()} for i, split in enumerate(clips)}
    result["valid"]["refitted"] = own_predictions(members["refitted"].chosen, clips["valid"])
    result["test"]["refitted"] = own_predictions(members["refitted"], clips["test"])
    return result


def test_greedy_selection_adds_with_replacement_and_keeps_the_best_prefix():
    labels = np.array([0, 1, 2])
    a = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.4, 0.3, 0.3]])  # right on tracks 0 and 1
    b = np.array([[0.3, 0.4, 0.3], [0.2, 0.6, 0.2], [0.1, 0.1, 0.8]])  # right on 1 and 2, less sure
    uniform = np.full((3, 3), 1 / 3)
    counts, trace = greedy_selection([uniform, a, b], labels, rounds=5)
    # a and b are both right on 2 of 3 alone, a with the lower log loss; a + b are right on all three; then a again
    # lowers the log loss: (2a + b) / 3 gives the true classes 0.633, 0.733, 0.467
    assert [step["added"] for step in trace] == [1, 2, 1, 1, 2]
    assert [step["valid_track_accuracy"] for step in trace] == pytest.approx([2 / 3, 1, 1, 1, 1])
    expected = -np.log([19 / 30, 22 / 30, 14 / 30]).mean()
    assert trace[2]["valid_log_loss"] == pytest.approx(expected)
    assert min(step["valid_log_loss"] for step in trace[1:]) == trace[2]["valid_log_loss"]
    assert counts.tolist() == [0, 2, 1]  # the best prefix, 3 rounds: rounds 4 and 5 lose log loss again
    assert greedy_selection([a], labels, rounds=3)[0].tolist() == [1]  # one candidate: the shortest prefix


def test_the_ensemble_is_the_weighted_mean_of_its_members_predict_outputs(members, built, own):
    record = built.ensemble()
    weights = {m["name"]: m["weight"] for m in record["members"]}
    assert abs(sum(weights.values()) - 1) < 1e-9 and set(weights) <= {"cnn", "probe", "refitted"}
    assert len(weights) >= 2, "one member, or the weighted mean proves nothing"
    assert {c["name"]: c["pooling"] for c in record["candidates"]} == {
        "cnn": "mean",
        "probe": "logits",
        "refitted": "mean",
    }
    assert [c["judged_by"] for c in record["candidates"]] == ["model.keras", "model.keras", "chosen/model.keras"]
    assert len(record["trace"]) == 6
    assert sorted(p.name for p in built.members_dir.iterdir()) == sorted(weights)
    assert [m.run.path for m in built.members()] == [built.members_dir / name for name in weights]
    metrics, names, labels = built.metrics(), ("cnn", "probe", "refitted"), np.arange(3)  # a split: a clip per class
    alone = {c["name"]: c for c in metrics["ensemble"]["candidates"]}
    for split, figures in metrics["splits"].items():
        for name in weights:
            assert alone[name][f"{split}_track_accuracy"] == np.mean(own[split][name].argmax(axis=1) == labels)
        mean = sum(weight * own[split][name] for name, weight in weights.items())
        if split == "test":  # predict --run ENSEMBLE: the members' own models, the refitted one's too, averaged and
            # calibrated by the ensemble's own temperature (the members were never evaluated: theirs is 1)
            assert built.temperature != 1.0 and all(built.members_dir.joinpath(n).is_dir() for n in weights)
            calibrated_mean = calibrated(mean, built.temperature)
            np.testing.assert_allclose(own[split]["ens"], calibrated_mean, rtol=1e-5, atol=1e-6)
        confusion = np.zeros((3, 3), dtype=int)
        np.add.at(confusion, (labels, mean.argmax(axis=1)), 1)
        assert figures["segment"]["confusion"] == confusion.tolist() and figures["segment"]["n"] == 3
        if split == "valid":  # the candidates' figures and greedy's choice, again from their own predict outputs
            for name in names:
                log_loss = -np.mean(np.log(own[split][name][labels, labels]))
                assert alone[name]["valid_log_loss"] == pytest.approx(log_loss, rel=1e-5)
            counts, _ = greedy_selection([own[split][name] for name in names], labels, 6)
            np.testing.assert_allclose([weights.get(name, 0) for name in names], counts / counts.sum())
    report = built.report_file.read_text()
    assert "chosen on valid (never on test) by greedy forward selection with replacement" in report
    assert "The refitted runs (refitted) trained on valid" in report
    assert (built.path / "confusion_matrix.png").is_file() and (built.path / "confusion_matrix_valid.png").is_file()


def test_evaluate_predict_and_compare_take_an_ensemble_run(members, built, own, tmp_path):
    before = built.metrics()
    evaluate.main(["--run", str(built.path), "--split", "test"])
    assert built.metrics()["splits"]["test"] == before["splits"]["test"]
    assert built.metrics()["params"] == sum(m.run.metrics()["params"] for m in built.members())
    output = tmp_path / "out.csv"
    clips = split_clips(members["root"], "test")
    predict_command.main(["--run", str(built.path), *map(str, clips), "--output", str(output), "--probabilities"])
    written = pd.read_csv(output)[[f"p_{c}" for c in CLASSES]].to_numpy()
    np.testing.assert_allclose(written, own["test"]["ens"], atol=2e-6)
    sidecar = json.loads(output.with_name("out.csv.json").read_text())
    assert sidecar["runs"] == [str(m.run.path.resolve()) for m in built.members()]
    weights = [round(m.weight, 6) for m in built.members()]
    assert sidecar.get("weights") == (weights if len(set(weights)) > 1 else None)  # one file, one weighing
    table, ignored = comparison_table([built.path, members["cnn"].path])
    row = table.set_index("run").loc["ens"]
    assert row["model"] == "ensemble" and not ignored
    assert row["parameters"] == " + ".join(f"{m.run.path.name} {m.weight:.2f}" for m in built.members())
    assert row["test_track_acc"] == before["headline"]["test"]["track_accuracy"]


def test_members_must_share_classes_split_and_have_their_data(members, tmp_path, capsys):
    cnn = members["cnn"]
    other_classes = RunDir(tmp_path / "other_classes")
    shutil.copytree(cnn.path, other_classes.path)
    other_classes.classes_file.write_text(json.dumps(["blues", "jazz", "pop"]))
    other_split = RunDir(tmp_path / "other_split")
    shutil.copytree(cnn.path, other_split.path)
    split_file = tmp_path / "split.csv"
    split = pd.read_csv(cnn.config.data.split_file)
    split.loc[split.track_id == "blues.00003", "split"] = "train"  # blues.00000 takes its place in test
    split.loc[split.track_id == "blues.00000", "split"] = "test"
    split.to_csv(split_file, index=False)
    cfg = cnn.config
    save_config(replace(cfg, data=replace(cfg.data, split_file=split_file)), other_split.config_file)
    no_data = RunDir(tmp_path / "no_data")
    shutil.copytree(cnn.path, no_data.path)
    save_config(replace(cfg, data=replace(cfg.data, root=tmp_path / "gone")), no_data.config_file)
    cases = [
        (no_data, "no_data: data.root: folder does not exist: .*gone$"),
        (other_classes, "other_classes has other classes than"),
        (
            other_split,
            "other_split's test split holds other tracks than .*cnn's \\(2 differ: blues.00000, blues.00003\\)$",
        ),
    ]
    for i, (other, message) in enumerate(cases):
        config = write_ensemble_config(tmp_path / f"e{i}.yaml", f"e{i}", [cnn.path, other.path])
        with pytest.raises(SystemExit) as exit_:
            main(["--config", str(config)])
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("config error: members: ")
        assert re.search(message, err), err
        assert not (tmp_path / f"e{i}" / "metrics.json").exists()


def test_ensemble_config_errors_are_one_line(tmp_path, members):
    one = write_ensemble_config(tmp_path / "one.yaml", "one", [members["cnn"].path])
    with pytest.raises(ConfigError, match="members: an ensemble needs at least 2 runs, got 1"):
        load_ensemble_config(one)
    with pytest.raises(ConfigError, match="selection: must be one of greedy, equal, got 'best'"):
        load_ensemble_config(one, ["selection=best", "members=[a, b]"])
    missing = write_ensemble_config(tmp_path / "missing.yaml", "missing", [members["cnn"].path, tmp_path / "nothing"])
    with pytest.raises(ConfigError, match="nothing is not a finished run directory"):
        build_ensemble(load_ensemble_config(missing))


def test_a_member_given_as_a_config_is_trained_first(members, make_config, tmp_path, capsys):
    """The one test that trains: a member named by its config trains (one epoch) into its output_dir/name, then the
    ensemble takes it beside a finished run, with equal weights; the same command again finds the ensemble finished."""
    cfg = make_config(tmp_path, *members["data"], *CNN, "model.kind=cnn", "train.epochs=1", "name=trained",
                      f"output_dir={tmp_path / 'runs'}")  # fmt: skip
    save_config(cfg, tmp_path / "trained.yaml")
    config = write_ensemble_config(
        tmp_path / "eq.yaml", "eq", [members["cnn"].path, tmp_path / "trained.yaml"], "selection: equal"
    )
    main(["--config", str(config)])
    trained, ensemble = RunDir(tmp_path / "runs" / "trained"), RunDir(tmp_path / "eq")
    assert trained.finished and trained.history()
    record = ensemble.ensemble()
    assert [(m["source"], m["weight"]) for m in record["members"]] == [
        (str(members["cnn"].path), 0.5),
        (str(trained.path), 0.5),
    ]
    assert record["trace"] == [] and record["rounds"] is None
    assert "equal weights over 2 runs, nothing selected" in ensemble.report_file.read_text()
    capsys.readouterr()
    main(["--config", str(config)])
    assert "is already finished" in capsys.readouterr().out
    assert all(member.run.model_file.is_file() for member in ensemble.members())
    with pytest.raises(SystemExit) as exit_:
        main(["--config", str(config), "--set", "selection=greedy"])
    assert exit_.value.code == 2
    assert "holds another ensemble (selection differ); pass --overwrite" in capsys.readouterr().err
