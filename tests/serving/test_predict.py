"""Prediction with trained runs: submission tables, top-k lines, per-track averaging, ensembles, and inputs made
with a run's recipe without changing the run."""

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.preprocessing import QuantileTransformer, StandardScaler

from genre_tf.config import save_config
from genre_tf.data.index import index_paths, track_id_of
from genre_tf.evaluation.predictions import in_track_order, predict_frame
from genre_tf.extract import pool
from genre_tf.extract.prepared import prepare_index
from genre_tf.features.representations import FEATURES, MEL_IMAGE, MUSICNN_PATCH
from genre_tf.predict import main
from genre_tf.run import RunDir
from genre_tf.serving import predict
from genre_tf.serving.predict import TAGS, ensemble, load_inputs, top_k_lines
from genre_tf.serving.submission import submission

CLASSES = ["blues", "jazz", "rock"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, make_table_run, write_feature_table):
    """Two hand-made MLP runs over one feature table (the second reads 13 MFCCs), and an unlabeled table to predict."""
    tmp = tmp_path_factory.mktemp("predict")
    train_csv = write_feature_table(tmp / "train.csv", CLASSES)
    a = RunDir(make_table_run(tmp / "runs" / "a", train_csv, seed=0))
    b = RunDir(make_table_run(tmp / "runs" / "b", train_csv, "features.n_mfcc=13", seed=1))
    return a, b, write_feature_table(tmp / "unlabeled.csv", CLASSES, rows_per_class=2, labeled=False, seed=7)


def own_probabilities(run: RunDir, csv) -> np.ndarray:
    """What the run's model gives for a table's rows, each run scaling its own columns."""
    table = pd.read_csv(csv)
    return run.load_model().predict(run.scaler.transform(table), verbose=0)


def test_submission_has_id_class_and_optional_probabilities():
    probs = np.array([[0.1, 0.7, 0.2], [0.5, 1 / 3, 1 / 6]])
    plain = submission(CLASSES, np.array(["x", "y"]), probs, with_probabilities=False)
    assert plain.columns.tolist() == ["id", "class"]
    assert plain.values.tolist() == [["x", "jazz"], ["y", "blues"]]
    full = submission(CLASSES, np.array(["x", "y"]), probs, with_probabilities=True)
    assert full.columns.tolist() == ["id", "class", "p_blues", "p_jazz", "p_rock"]
    assert full.loc[1, ["p_blues", "p_jazz", "p_rock"]].tolist() == [0.5, 0.333333, 0.166667]
    sure = submission(CLASSES, np.array(["x", "y"]), probs, with_probabilities=False, confidence=True)
    assert sure.columns.tolist() == ["id", "class", "confidence", "unknown_score"]
    assert sure.confidence.tolist() == [0.7, 0.5] and sure.unknown_score.isna().all()  # not measured
    unknown = (np.array([0.1, 0.9]), np.array([False, True]))
    judged = submission(CLASSES, np.array(["x", "y"]), probs, False, confidence=True, unknown=unknown)
    assert judged["class"].tolist() == ["jazz", "unknown"] and judged.unknown_score.tolist() == [0.1, 0.9]


def test_top_k_lines_list_the_best_classes_first():
    probs = np.array([[0.1, 0.7, 0.2], [0.6, 0.15, 0.25]])
    assert top_k_lines(CLASSES, np.array(["x", "y"]), probs, 2) == [
        "x: jazz 0.700, rock 0.200",
        "y: blues 0.600, rock 0.250",
    ]
    assert top_k_lines(CLASSES, np.array(["x"]), probs[:1], 5) == ["x: jazz 0.700, rock 0.200, blues 0.100"]


def test_predict_frame_averages_a_tracks_rows(runs):
    a, _, csv = runs
    frame = pd.read_csv(csv)
    frame["track_id"] = ["t1", "t1", "t2", "t3", "t3", "t3"]  # rows as segments of three tracks
    frame["label"] = ""
    tracks, probs = predict_frame(a, frame)
    rows = own_probabilities(a, csv)
    assert tracks.tolist() == ["t1", "t2", "t3"]
    np.testing.assert_allclose(probs, [rows[:2].mean(0), rows[2], rows[3:].mean(0)], rtol=1e-5)


def test_ensemble_averages_the_runs_probabilities(runs):
    a, b, csv = runs
    tracks, probs, skipped = ensemble([a, b], [csv])
    assert tracks.tolist() == [track_id_of(f) for f in pd.read_csv(csv).filename]
    prob_a, prob_b = own_probabilities(a, csv), own_probabilities(b, csv)
    assert len(b.scaler.columns) == 43 and len(a.scaler.columns) == 57
    assert not np.allclose(prob_a, prob_b), "two different runs, or the average proves nothing"
    np.testing.assert_allclose(probs, (prob_a + prob_b) / 2, rtol=1e-5)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert skipped.empty
    alone_tracks, alone, _ = ensemble([a], [csv])
    assert alone_tracks.tolist() == tracks.tolist()
    np.testing.assert_allclose(alone, prob_a, rtol=1e-5)


def test_ensemble_of_an_mlp_and_a_linear_model_each_preprocessing_its_own_way(
    tmp_path, make_table_run, write_feature_table
):
    """Two families on one feature table: an MLP (two hidden layers, standard scaling, 20 MFCCs) and a linear model
    (no hidden layer, rank-Gauss scaling, 13 MFCCs). Each run's probabilities are what its own preprocessing, redone
    here with sklearn from the training rows, gives its model; the ensemble is their mean, track by track."""
    train_csv = write_feature_table(tmp_path / "train.csv", CLASSES)
    mlp = RunDir(
        make_table_run(
            tmp_path / "runs" / "mlp",
            train_csv,
            "model.mlp.hidden_layers=2",
            "model.mlp.units=8",
            "model.mlp.batch_norm=false",
            seed=3,
        )
    )
    linear = RunDir(
        make_table_run(tmp_path / "runs" / "linear", train_csv, "model.mlp.scaler=quantile", "features.n_mfcc=13")
    )
    unlabeled = write_feature_table(tmp_path / "unlabeled.csv", CLASSES, rows_per_class=2, labeled=False, seed=7)
    table, train_rows = pd.read_csv(unlabeled), pd.read_csv(train_csv).query("split == 'train'")
    expected = []
    for run, scaler in [
        (mlp, StandardScaler()),
        (linear, QuantileTransformer(n_quantiles=6, output_distribution="normal")),
    ]:
        columns = run.scaler.columns
        scaler.fit(train_rows[columns].to_numpy())
        expected.append(run.load_model().predict(scaler.transform(table[columns].to_numpy()), verbose=0))
    assert (len(mlp.scaler.columns), len(linear.scaler.columns)) == (57, 43)
    dense = [[layer.name for layer in run.load_model().layers if "dense" in layer.name] for run in (mlp, linear)]
    assert dense == [["dense_0", "dense_1"], []]
    assert not np.allclose(*expected, atol=0.05), "two different runs, or the average proves nothing"

    tracks, probs, skipped = ensemble([mlp, linear], [unlabeled])
    assert tracks.tolist() == [track_id_of(f) for f in table.filename] and skipped.empty
    np.testing.assert_allclose(probs, (expected[0] + expected[1]) / 2, rtol=1e-5, atol=1e-6)
    reversed_tracks, reversed_probs, _ = ensemble([linear, mlp], [unlabeled])
    assert reversed_tracks.tolist() == tracks.tolist()
    np.testing.assert_allclose(reversed_probs, probs, rtol=1e-5, atol=1e-6)
    output = tmp_path / "sub.csv"
    main(["--run", str(mlp.path), "--run", str(linear.path), str(unlabeled), "--output", str(output)])
    assert pd.read_csv(output)["class"].tolist() == [CLASSES[i] for i in probs.argmax(axis=1)]


def test_runs_are_matched_by_track_and_must_predict_the_same_tracks(runs):
    a, _, _ = runs
    probs = np.array([[0.2, 0.8], [0.6, 0.4], [0.5, 0.5]])
    aligned = in_track_order(np.array(["x", "y", "z"]), np.array(["z", "x", "y"]), probs, a)
    np.testing.assert_array_equal(aligned, probs[[1, 2, 0]])
    with pytest.raises(SystemExit, match="predicted other tracks than the first run .w, z differ."):
        in_track_order(np.array(["x", "y", "z"]), np.array(["x", "y", "w"]), probs, a)


def test_an_audio_run_given_a_feature_table_is_one_error_line(runs, tmp_path, make_config):
    a, _, csv = runs
    cnn = RunDir(tmp_path / "cnn")
    save_config(make_config(tmp_path, "model.kind=cnn"), cnn.config_file)
    with pytest.raises(SystemExit, match=r"cnn cannot read these inputs: model.kind: cnn needs audio"):
        ensemble([a, cnn], [csv])


def test_main_refuses_unfinished_runs_and_mixed_classes(runs, tmp_path):
    a, _, csv = runs
    with pytest.raises(SystemExit, match="has no model.keras"):
        main(["--run", str(tmp_path), str(csv)])
    other = RunDir(tmp_path / "other")
    other.path.mkdir()
    (other.path / "model.keras").write_bytes(a.model_file.read_bytes())
    other.classes_file.write_text(json.dumps(["pop", "rock"]))
    with pytest.raises(SystemExit, match="different classes"):
        main(["--run", str(a.path), "--run", str(other.path), str(csv)])


def test_load_inputs_leaves_the_runs_config_alone(tmp_path, make_table_run, write_feature_table, write_clip):
    """Defect (4e337ea): load_inputs set split_file to None and short_clips to tile on the run's own (cached) config,
    so every later use of the run, such as its next evaluation, saw another config."""
    csv = write_feature_table(tmp_path / "train.csv", CLASSES)
    split_file = tmp_path / "split.csv"
    split_file.write_text("track_id,split\n" + "".join(f"{c}.0000{i},train\n" for c in CLASSES for i in range(4)))
    run = RunDir(make_table_run(tmp_path / "runs" / "mlp", csv, f"data.split_file={split_file}"))
    assert (run.config.data.split_file, run.config.audio.short_clips) == (split_file, "skip")

    table_examples = load_inputs(run, [csv])
    assert len(table_examples.frame) == 12
    assert run.config.data.split_file == split_file

    short = write_clip(tmp_path / "excerpt.wav", 0.3)  # shorter than the run's 0.5 s segments: tiled, not skipped
    audio_examples = load_inputs(run, [short])
    assert audio_examples.frame[["track_id", "segment"]].values.tolist() == [["excerpt", 0]]
    assert audio_examples.skipped.empty
    assert run.config.audio.short_clips == "skip"
    assert run.config == RunDir(run.path).config, "the run's config is still what config.yaml says"


def test_predicting_training_audio_reads_the_training_cache_entries(tmp_path, make_config, write_clip, monkeypatch):
    """Defect (4e337ea): predict's short_clips=tile gave another cache key than training's skip, so every training file
    was decoded and analysed again for prediction, into a second copy of the cache."""
    clips = [write_clip(tmp_path / "long.wav", 1.0, 440.0), write_clip(tmp_path / "short.wav", 0.3, 880.0)]
    cfg = make_config(tmp_path)
    trained = prepare_index(index_paths(clips), cfg, progress=False)
    assert trained.tracks.track_id.tolist() == ["long"] and trained.skipped.track_id.tolist() == ["short"]
    run = RunDir(tmp_path / "runs" / "run")
    save_config(cfg, run.config_file)

    def no_extraction(path, digest, track_cache):
        raise AssertionError(f"{path} extracted again into {track_cache.names}")

    monkeypatch.setattr(pool, "extract_track", no_extraction)
    examples = load_inputs(run, clips)
    assert examples.frame[["track_id", "segment"]].values.tolist() == [["long", 0], ["long", 1], ["short", 0]]
    assert examples.skipped.empty
    long_rows = examples.frame[examples.frame.track_id == "long"].reset_index(drop=True)
    pd.testing.assert_frame_equal(long_rows, trained.segments)
    assert len(list((tmp_path / "cache" / FEATURES).iterdir())) == 1


def test_a_fragment_is_reported_too_short_not_predicted(tmp_path, make_config, write_clip):
    """A clip under audio.min_seconds gets no genre: its one-line reason goes to the submission's skipped.csv."""
    cfg = make_config(tmp_path, "audio.min_seconds=0.5")
    run = RunDir(tmp_path / "runs" / "run")
    save_config(cfg, run.config_file)
    clips = [write_clip(tmp_path / "song.wav", 1.0, 440.0), write_clip(tmp_path / "fragment.wav", 0.07, 880.0)]
    examples = load_inputs(run, clips)
    assert examples.frame.track_id.unique().tolist() == ["song"]
    assert examples.skipped[["track_id", "reason"]].values.tolist() == [
        ["fragment", "too short (0.07 s < audio.min_seconds 0.5 s)"]
    ]


def test_a_run_moved_away_from_its_data_still_predicts(
    tmp_path, make_table_run, write_feature_table, monkeypatch, capsys
):
    """Defect: loading a run checked that its training data still existed, so a run copied to another machine, or used
    from another working directory, could not predict, export or serve. Evaluation reads that data and still says so."""
    from genre_tf import evaluate

    csv = write_feature_table(tmp_path / "train.csv", CLASSES)
    split_file = tmp_path / "split.csv"
    split_file.write_text("track_id,split\n" + "".join(f"{c}.0000{i},train\n" for c in CLASSES for i in range(4)))
    run = RunDir(make_table_run(tmp_path / "runs" / "mlp", csv, f"data.split_file={split_file}"))
    unlabeled = write_feature_table(tmp_path / "unlabeled.csv", CLASSES, rows_per_class=1, labeled=False)
    csv.unlink()
    split_file.unlink()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    main(["--run", str(run.path), str(unlabeled), "--output", "submission.csv"])
    assert pd.read_csv(elsewhere / "submission.csv")["class"].isin(CLASSES).all()

    with pytest.raises(SystemExit) as exit_info:
        evaluate.main(["--run", str(run.path)])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == f"config error: data.csv: path does not exist: {csv}"


def test_an_empty_folder_or_albums_reusing_names_give_what_a_person_expects(tmp_path, make_config, write_clip):
    """Nothing to predict is one line, before any audio is read; `01.wav` in two albums is two tracks."""
    cfg = make_config(tmp_path)
    run = RunDir(tmp_path / "runs" / "run")
    save_config(cfg, run.config_file)
    empty = tmp_path / "empty"
    (empty / "linked").mkdir(parents=True)
    (empty / "linked" / "cover.jpg").write_bytes(b"jpg")
    with pytest.raises(SystemExit, match=f"error: nothing to predict: no audio files in {empty} \\(1 files"):
        load_inputs(run, [empty])
    library = tmp_path / "library"
    write_clip(library / "Artist" / "One" / "01.wav", 1.0, 440.0)
    write_clip(library / "Artist" / "Two" / "01.wav", 1.0, 880.0)
    (tmp_path / "linked").symlink_to(library, target_is_directory=True)  # a link to the library is walked too
    examples = load_inputs(run, [tmp_path / "linked"], progress=False)
    assert examples.frame.track_id.unique().tolist() == ["Artist/One/01", "Artist/Two/01"]


@pytest.fixture(scope="module")
def library(tmp_path_factory, write_clip, make_config, make_table_run):
    """A folder of 5 tone clips, an unreadable one and a second file of one track id; two MLP runs over the clips'
    own features (so their probabilities vary from clip to clip); the one-shot output of both runs, and the output
    streamed 2 tracks at a time."""
    tmp = tmp_path_factory.mktemp("library")
    folder = tmp / "library"
    for i, hz in enumerate([220.0, 330.0, 550.0, 880.0, 1320.0]):
        write_clip(folder / f"tone{i}.wav", 1.0, hz)
    write_clip(folder / "tone2.flac", 1.0, 660.0)  # sorts first: it is tone2; tone2.wav is the duplicate
    (folder / "bad.wav").write_text("not audio")
    tracks = prepare_index(index_paths([folder]), make_config(tmp / "runs"), progress=False).tracks
    table = tracks.drop(columns=["track_id", "path", "label", "split", "digest", "n_segments"])
    table.insert(0, "filename", tracks.track_id + ".wav")
    table["label"], table["split"] = [CLASSES[i % 3] for i in range(len(tracks))], "train"
    table.to_csv(tmp / "own.csv", index=False)
    runs = [
        RunDir(make_table_run(tmp / "runs" / name, tmp / "own.csv", seed=seed)) for name, seed in [("a", 0), ("b", 1)]
    ]
    tracks, probs, skipped = ensemble(runs, [folder])
    one_shot = submission(CLASSES, tracks, probs, with_probabilities=True, confidence=True).to_csv(index=False)
    streamed = tmp / "streamed" / "results.csv"
    main([*run_args(runs), str(folder), "--output", str(streamed), "--probabilities", "--chunk-tracks", "2"])
    return runs, folder, one_shot, skipped.to_csv(index=False), streamed


def run_args(runs: list[RunDir]) -> list[str]:
    return [arg for run in runs for arg in ("--run", str(run.path))]


def streamed_copy(streamed: Path, folder: Path) -> Path:
    """The streamed output, its skipped.csv and its sidecar copied into `folder`."""
    for name in ("results.csv", "results.skipped.csv", "results.csv.json", "results.files.csv"):
        shutil.copy(streamed.parent / name, folder / name)
    return folder / "results.csv"


@pytest.fixture
def predicted_tracks(monkeypatch):
    """The track ids each call of predict_frame got (the model's inputs), a list per call; `raise_at`: the call
    (counted from 1) that raises RuntimeError instead, as a kill there would stop the run."""
    calls, raise_at = [], []

    def counting(run, frame, model=None):
        calls.append(frame.track_id.unique().tolist())
        if len(calls) in raise_at:
            raise RuntimeError(f"killed at call {len(calls)}")
        return predict_frame(run, frame, model)

    monkeypatch.setattr(predict, "predict_frame", counting)
    return calls, raise_at


def test_a_killed_output_resumes_to_what_one_uninterrupted_run_writes(library, tmp_path, predicted_tracks, capsys):
    """Killed in the second chunk, the output keeps the first chunk's rows; the same command again predicts only the
    tracks without a row, and the file ends byte for byte what the one-shot path writes for both runs."""
    runs, folder, one_shot, one_shot_skipped, _ = library
    calls, raise_at = predicted_tracks
    output = tmp_path / "results.csv"
    command = [*run_args(runs), str(folder), "--output", str(output), "--probabilities", "--chunk-tracks", "2"]
    raise_at.append(3)  # chunks are [bad, tone0], [tone1, tone2], [tone3, tone4]: 2 calls each, one per run
    with pytest.raises(RuntimeError, match="killed at call 3"):
        main(command)
    assert output.read_text() == "".join(one_shot.splitlines(keepends=True)[:2])  # the header and tone0
    calls.clear()
    raise_at.clear()
    capsys.readouterr()

    main(command)
    assert f"resuming: 1 of 6 tracks already in {output}" in capsys.readouterr().out
    assert calls == [["tone1"], ["tone1"], ["tone2", "tone3"], ["tone2", "tone3"], ["tone4"], ["tone4"]]
    assert output.read_text() == one_shot
    assert (tmp_path / "results.skipped.csv").read_text() == one_shot_skipped


def test_a_row_cut_short_by_a_kill_is_dropped_on_resume(library, tmp_path, predicted_tracks, capsys):
    runs, folder, one_shot, _, streamed = library
    calls, _ = predicted_tracks
    assert streamed.read_text() == one_shot, "streamed 2 tracks at a time, uninterrupted: the one-shot file"
    output = streamed_copy(streamed, tmp_path)
    last = one_shot.splitlines(keepends=True)[-1]
    assert last.startswith("tone4,") and len(last) > 30
    for cut in (one_shot[:-9], one_shot[:-30] + "\n"):  # tone4's row without its newline; with too few fields
        output.write_text(cut)
        calls.clear()
        main([*run_args(runs), str(folder), "--output", str(output), "--probabilities"])
        assert f"resuming: 4 of 6 tracks already in {output}" in capsys.readouterr().out
        assert calls == [["tone4"], ["tone4"]]
        assert output.read_text() == one_shot


def test_skipped_inputs_are_listed_once_after_a_resume(library, tmp_path, predicted_tracks):
    """The unreadable file and the second file of one id were listed by the first run (the second one's line cut short
    by the kill); the resume meets both again."""
    runs, folder, one_shot, one_shot_skipped, streamed = library
    calls, _ = predicted_tracks
    output = streamed_copy(streamed, tmp_path)
    output.write_text("".join(one_shot.splitlines(keepends=True)[:2]))
    assert pd.read_csv(tmp_path / "results.skipped.csv").path.tolist() == [
        str(folder / "bad.wav"),
        str(folder / "tone2.wav"),
    ]
    (tmp_path / "results.skipped.csv").write_text(one_shot_skipped[:-5])

    main([*run_args(runs), str(folder), "--output", str(output), "--probabilities"])
    assert [track for call in calls[::2] for track in call] == ["tone1", "tone2", "tone3", "tone4"]
    assert (tmp_path / "results.skipped.csv").read_text() == one_shot_skipped
    assert output.read_text() == one_shot


def test_an_output_of_other_runs_is_one_error_line(library, tmp_path, predicted_tracks):
    """Another set of runs, or the same runs without --probabilities, would mix two kinds of rows in one file."""
    runs, folder, one_shot, _, streamed = library
    output = streamed_copy(streamed, tmp_path)
    a, b = (str(run.path.resolve()) for run in runs)
    refusal = (
        f"error: {output} holds predictions of other runs or inputs ({{}}); pass --overwrite to replace it, or "
        "choose another --output"
    )
    for command, reason in [
        ([*run_args(runs[:1]), "--probabilities"], f"made by {a}, {b}; this command runs {a}"),
        (run_args(runs), "written with --probabilities; this command is without"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            main([*command, str(folder), "--output", str(output)])
        assert exit_info.value.code == refusal.format(reason)
    (tmp_path / "results.csv.json").unlink()
    with pytest.raises(SystemExit) as exit_info:
        main([*run_args(runs), str(folder), "--output", str(output), "--probabilities"])
    assert exit_info.value.code == refusal.format("it has no readable sidecar naming them")
    assert output.read_text() == one_shot and predicted_tracks[0] == []


def test_an_output_of_skipped_inputs_only_is_not_written(library, tmp_path, capsys):
    runs, folder, *_ = library
    output = tmp_path / "results.csv"
    with pytest.raises(SystemExit, match=r"^error: nothing to predict \(every input was skipped\)$"):
        main([*run_args(runs), str(folder / "bad.wav"), "--output", str(output)])
    assert f"skipped {folder / 'bad.wav'}: " in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("overrides", "computed"),
    [
        (("model.kind=cnn",), MEL_IMAGE),
        (("model.kind=transfer", "model.transfer.backbone=MSD_musicnn"), MUSICNN_PATCH),
    ],
)
def test_predict_computes_only_what_the_runs_model_reads(tmp_path, make_config, write_clip, overrides, computed):
    """A CNN run's prediction computes no feature-table rows (no harmonic / percussive split) and no musicnn
    patches; a musicnn run's no mel images and no feature rows."""
    run = RunDir(tmp_path / "runs" / "run")
    save_config(make_config(tmp_path, *overrides), run.config_file)
    examples = load_inputs(run, [write_clip(tmp_path / "clip.wav", 1.0, 440.0)], progress=False)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [computed]
    assert len(examples.frame) == 2 and "zero_crossing_rate_mean" not in examples.frame


def test_audio_runs_predict_from_the_graph_decoding_each_file_once_and_writing_no_cache(
    tmp_path, make_audio_run, write_clip, monkeypatch
):
    """A CNN run and a musicnn run predicted together: each file is decoded once for both, nothing is written in the
    runs' cache, an unreadable file is skipped with its reason, and the answer is the cache recipe's (the graph is
    pinned to it by tests/test_export.py; the same tolerance)."""
    from genre_tf.config import CacheConfig
    from genre_tf.features import audio

    same_audio = ["audio.segment_seconds=1", "audio.segment_hop=0.5"]
    tiny_cnn = ["model.cnn.conv_blocks=1", "model.cnn.filters=4", "model.image_size=[16, 16]"]
    musicnn_model = ["model.kind=transfer", "model.transfer.backbone=MSD_musicnn", "model.transfer.weights=null"]
    cnn = make_audio_run(tmp_path / "runs" / "cnn", CLASSES, *same_audio, *tiny_cnn)
    musicnn = make_audio_run(
        tmp_path / "runs" / "musicnn", CLASSES, *same_audio, *musicnn_model, "model.transfer.head_units=8"
    )
    folder = tmp_path / "clips"
    clips = [write_clip(folder / "low.wav", 2.0, 220.0), write_clip(folder / "short.wav", 0.6, 1320.0)]
    (folder / "bad.wav").write_text("not audio")
    decoded = []
    load_track = audio.load_track
    monkeypatch.setattr(audio, "load_track", lambda path, cfg: decoded.append(path.name) or load_track(path, cfg))
    output = tmp_path / "out" / "results.csv"
    main(["--run", str(cnn), "--run", str(musicnn), str(folder), "--output", str(output), "--probabilities"])

    assert sorted(decoded) == ["bad.wav", "low.wav", "short.wav"], "once per file, for both runs"
    assert not (tmp_path / "runs" / "cache").exists(), "the runs' cache.dir: nothing written"
    assert pd.read_csv(tmp_path / "out" / "results.skipped.csv")[["track_id", "reason"]].values.tolist() == [
        ["bad", "not an audio file (text)"]
    ]
    rows = pd.read_csv(output)
    assert rows["id"].tolist() == ["low", "short"]
    cached = [
        predict_frame(run, load_inputs(run, clips, CacheConfig(tmp_path / "reference", 1), progress=False).frame)
        for run in (RunDir(cnn), RunDir(musicnn))
    ]
    assert [tracks.tolist() for tracks, _ in cached] == [["low", "short"]] * 2
    assert not np.allclose(cached[0][1], cached[1][1], atol=0.01), "two different runs, or the average proves nothing"
    got = rows[[f"p_{c}" for c in CLASSES]].to_numpy()
    # export's tolerance: the cache rounds mel images to 16-bit PNGs and patches to float16 (3.4e-6 measured)
    np.testing.assert_allclose(got, (cached[0][1] + cached[1][1]) / 2, rtol=0, atol=1e-3)


def test_tags_of_segments_the_graph_tagged_are_averaged_per_track(tmp_path, make_config):
    """`--tags` reads the tags an AudioGraph gave each segment (`tag_examples`; tests/test_serve.py checks the graph's
    tags against the tagger on cached patches): per track, the 5 best of the segments' mean, in the tagger's names."""
    from genre_tf.inputs.examples import Examples
    from genre_tf.models.musicnn import TAGS as TAG_NAMES
    from genre_tf.serving.musicnn_tags import tag_lines, track_tags, write_tags

    run = RunDir(tmp_path / "run")
    save_config(make_config(tmp_path, "model.kind=transfer", "model.transfer.backbone=MSD_musicnn"), run.config_file)
    scores = np.zeros((3, 50))
    scores[0, :6] = [0.9, 0.1, 0.5, 0.3, 0.2, 0.05]
    scores[1, :6] = [0.7, 0.3, 0.1, 0.1, 0.2, 0.15]  # track a's mean: 0.8, 0.2, 0.3, 0.2, 0.2, 0.1
    scores[2, 10:15] = [0.1, 0.2, 0.3, 0.4, 0.5]
    frame = pd.DataFrame({"track_id": ["a", "a", "b"], "segment": [0, 1, 0], TAGS: list(scores)})
    tags = track_tags(run, Examples(frame, [], pd.DataFrame()))
    names = TAG_NAMES["MSD_musicnn"]
    assert [track for track, _ in tags] == ["a", "b"]
    assert [name for name, _ in tags[0][1]][:2] == [names[0], names[2]]
    np.testing.assert_allclose([p for _, p in tags[0][1]], [0.8, 0.3, 0.2, 0.2, 0.2])
    assert tags[1][1] == [(names[i], pytest.approx(scores[2, i])) for i in (14, 13, 12, 11, 10)]
    assert tag_lines(run, Examples(frame, [], pd.DataFrame()))[
        1
    ] == f"b: MSD_musicnn tags {names[14]} 0.50, " + ", ".join(
        f"{names[i]} {scores[2, i]:.2f}" for i in (13, 12, 11, 10)
    )
    written = write_tags(tmp_path / "out" / "results.csv", run, Examples(frame, [], pd.DataFrame()))
    assert written == tmp_path / "out" / "results.tags.csv"
    table = pd.read_csv(written)
    assert table.id.tolist() == ["a", "b"] and table.tags[1].startswith(f"{names[14]} 0.500; {names[13]} 0.400")


def test_an_output_of_other_inputs_is_refused_and_overwrite_replaces_it(library, tmp_path, capsys, write_clip):
    """Two files with one id (`song a`) in two folders: the second command does not keep the first one's row."""
    runs, *_ = library
    first, second = tmp_path / "a" / "song a.wav", tmp_path / "b" / "song a.wav"
    write_clip(first, 1.0, 220.0)
    write_clip(second, 1.0, 1320.0)
    output, alone = tmp_path / "out.csv", tmp_path / "alone.csv"
    main([*run_args(runs), str(second), "--output", str(alone), "--probabilities"])
    main([*run_args(runs), str(first), "--output", str(output), "--probabilities"])
    assert pd.read_csv(output).id.tolist() == ["song a"]
    with pytest.raises(SystemExit) as refused:
        main([*run_args(runs), str(second), "--output", str(output), "--probabilities"])
    assert str(refused.value.code).startswith(f"error: {output} holds predictions of other runs or inputs (predicted")
    assert f"this command predicts {second}" in str(refused.value.code)
    capsys.readouterr()
    main([*run_args(runs), str(second), "--output", str(output), "--probabilities", "--overwrite"])
    assert "0 rows kept, 1 written to" in capsys.readouterr().out
    assert output.read_text() == alone.read_text()


def test_a_changed_file_under_a_kept_id_is_predicted_again(library, tmp_path, predicted_tracks, capsys, write_clip):
    runs, folder, one_shot, _, streamed = library
    calls, _ = predicted_tracks
    copy = tmp_path / "library"
    shutil.copytree(folder, copy)
    output = tmp_path / "results.csv"
    command = [*run_args(runs), str(copy), "--output", str(output), "--probabilities"]
    main(command)
    assert output.read_text() == one_shot
    os.utime(copy / "tone1.wav", ns=(1, 1))  # touched, not changed: its row stays
    write_clip(copy / "tone3.wav", 1.0, 990.0)  # another sound under the same id
    calls.clear()
    capsys.readouterr()
    main(command)
    out = capsys.readouterr().out
    assert calls == [["tone3"], ["tone3"]]
    assert "1 files changed since their rows were written: predicting them again" in out
    assert "4 rows kept, 1 written to" in out
    rows = pd.read_csv(output).set_index("id")
    before = pd.read_csv(io.StringIO(one_shot)).set_index("id")
    assert sorted(rows.index) == sorted(before.index)
    assert rows.drop(index="tone3").equals(before.drop(index="tone3").loc[rows.drop(index="tone3").index])
    assert not rows.loc["tone3"].equals(before.loc["tone3"])


def test_litert_arguments_are_checked_in_one_line(tmp_path, capsys):
    """predict --model / --runtime litert: a run without its exported file, a missing file and flags that need
    TensorFlow each end in one line, before any model loads."""
    run = tmp_path / "run"
    run.mkdir()
    exported = run / "export" / "run.tflite"
    cases = [
        (["--run", str(run), "--runtime", "litert", str(tmp_path)], f"error: {exported}: the run has no exported"),
        (["--model", str(tmp_path / "x.tflite"), str(tmp_path)], f"error: {tmp_path / 'x.tflite'}: no such file"),
        (["--model", str(exported), "--tags", str(tmp_path)], "--tags needs --run on TensorFlow"),
        (["--model", str(exported), "--compute", "bfloat16", str(tmp_path)], "--compute needs --run on TensorFlow"),
        (["--model", str(exported), "--run", str(run), str(tmp_path)], "give --model or --run, not both"),
        ([str(tmp_path)], "give --run (a finished run) or --model"),
    ]
    for argv, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        said = capsys.readouterr().err + str(exit_info.value.code)
        assert message in said, (argv, said)


def test_compute_bfloat16_answers_as_float32_within_a_few_hundredths(tmp_path, make_audio_run, write_clip):
    """predict --compute bfloat16 (its own process: the precision holds for a whole process) writes the rows float32
    writes, each probability within 0.05; on a CPU without hardware bfloat16 it says so and still answers."""
    from genre_tf.serving.compute import hardware_bfloat16

    tiny_cnn = ["model.cnn.conv_blocks=2", "model.cnn.filters=8", "model.image_size=[32, 32]"]
    run = make_audio_run(tmp_path / "runs" / "cnn", CLASSES, "audio.segment_seconds=1", *tiny_cnn)
    folder = tmp_path / "clips"
    for i, hz in enumerate((110.0, 220.0, 440.0, 880.0, 1760.0)):
        write_clip(folder / f"{i}.wav", 2.0, hz)
    tables = {}
    for compute in ("float32", "bfloat16"):
        out = tmp_path / f"{compute}.csv"
        command = ["--run", str(run), str(folder), "--output", str(out), "--probabilities", "--compute", compute]
        done = subprocess.run([sys.executable, "-m", "genre_tf.predict", *command], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
        assert ("emulated" in done.stderr) == (compute == "bfloat16" and not hardware_bfloat16())
        tables[compute] = pd.read_csv(out)
    exact, fast = tables["float32"], tables["bfloat16"]
    assert exact.id.tolist() == fast.id.tolist() and len(exact) == 5
    probabilities = [f"p_{c}" for c in CLASSES]
    np.testing.assert_allclose(fast[probabilities], exact[probabilities], rtol=0, atol=0.05)
    assert (fast[probabilities] != exact[probabilities]).any().any(), "the bfloat16 rewrite ran: not bit-equal"


def test_hardware_bfloat16_reads_the_cpu_flags(tmp_path):
    from genre_tf.serving.compute import hardware_bfloat16

    (tmp_path / "amx").write_text("flags\t\t: fpu avx512f amx_bf16 amx_tile\n")
    (tmp_path / "old").write_text("flags\t\t: fpu sse2 avx2\n")
    assert hardware_bfloat16(tmp_path / "amx") and not hardware_bfloat16(tmp_path / "old")
    assert not hardware_bfloat16(tmp_path / "missing")
