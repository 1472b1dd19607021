"""prepare --engine beam on the DirectRunner: shards hold the local cache's tracks byte for byte, and train reads them.

One pipeline run (the DirectRunner's start-up is slow) serves every test: 2 genres x 4 tone clips and a text file
named .wav, every representation, 2 shards.
"""

from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("apache_beam", reason="apache_beam is not installed: pip install 'genre_tf[beam]'")

from genre_tf import prepare  # noqa: E402
from genre_tf.config import (
    ConfigError,  # noqa: E402
    load_config,
    save_config,
)
from genre_tf.extract import shards  # noqa: E402
from genre_tf.extract.prepared import config_index, prepare_index  # noqa: E402
from genre_tf.features.analysis import feature_columns  # noqa: E402
from genre_tf.features.representations import ALL, MEL_IMAGE, MUSICNN_PATCH  # noqa: E402
from genre_tf.inputs.recipe import InputRecipe

TONES = {"jazz": (220.0, 330.0, 440.0, 550.0), "rock": (1000.0, 1500.0, 2000.0, 2500.0)}


@pytest.fixture(scope="module")
def beam_run(tmp_path_factory, make_config, write_clip):
    """(config, output folder, the shards read back, the local engine's Prepared, the config file)."""
    tmp = tmp_path_factory.mktemp("beam")
    for genre, tones in TONES.items():
        for i, hz in enumerate(tones):
            write_clip(tmp / "audio" / genre / f"{genre}.{i:05d}.wav", 1.5, hz)
    (tmp / "audio" / "rock" / "notes.wav").write_text("these are liner notes, not audio\n" * 4)
    cfg = make_config(
        tmp, "data.source=folder", f"data.root={tmp / 'audio'}", "data.valid_fraction=0.25",
        "data.test_fraction=0.25", f"output_dir={tmp / 'runs'}",
    )  # fmt: skip
    config_file = tmp / "config.yaml"
    save_config(cfg, config_file)
    output = tmp / "shards"
    argv = ["--config", str(config_file), "--engine", "beam", "--representations", "all", "--output", str(output)]
    prepare.main([*argv, "--shards", "2", "--beam-options=--runner=DirectRunner"])
    local = prepare_index(config_index(cfg, progress=False), cfg, progress=False, names=ALL)
    return cfg, output, shards.read_prepared(str(output), cfg, names=ALL), local, config_file


def test_shards_hold_the_cache_tracks_byte_for_byte(beam_run):
    cfg, _, from_shards, local, _ = beam_run
    assert len(local.tracks) == 8 and len(local.segments) == 24  # 3 segments of 0.5 s per 1.5 s clip
    pd.testing.assert_frame_equal(from_shards.tracks, local.tracks)  # ids, paths, labels, splits, digests, rows
    columns = ["track_id", "segment", "label", "split", *feature_columns(cfg.features.n_mfcc)]
    pd.testing.assert_frame_equal(from_shards.segments[columns], local.segments[columns])
    for column in ("mel_path", "musicnn_path"):
        held = from_shards.segments[column].tolist()
        assert held == [Path(path).read_bytes() for path in local.segments[column]]
        assert held[0] != held[1]  # a tone's segments differ at their edges, so equal lists mean equal images
    pd.testing.assert_frame_equal(from_shards.skipped, local.skipped)
    assert from_shards.skipped.track_id.tolist() == ["rock/notes"]
    # rock/notes fails to decode, so it takes no slot: the stratified split is made over the 8 clips that decode
    assert from_shards.stats["splits"] == local.stats["splits"] == {"test": 2, "train": 4, "valid": 2}


def test_files_grow_with_shards_not_segments(beam_run):
    _, output, _, _, _ = beam_run
    names = sorted(path.name for path in output.iterdir())
    assert names == ["index.csv", "shards.json", shards.shard_name(0, 2), shards.shard_name(1, 2)]
    manifest = shards.read_manifest(str(output))
    assert manifest["counts"] == {"tracks": 8, "segments": 24, "skipped": 1}
    assert manifest["representations"] == list(ALL)


def test_shards_made_with_other_settings_are_a_config_error(beam_run, tmp_path):
    cfg, output, _, _, _ = beam_run
    other = replace(cfg, mel=replace(cfg.mel, n_mels=32))
    with pytest.raises(ConfigError, match=r"data.shards.*mel_image made with other settings"):
        shards.read_prepared(str(output), other, names=(MEL_IMAGE,))
    with pytest.raises(ConfigError, match="holds no shards.json"):
        shards.read_prepared(str(tmp_path), cfg, names=(MUSICNN_PATCH,))


@pytest.mark.slow
def test_a_run_trained_from_shards_equals_one_from_the_cache(beam_run):
    """A CNN, whose images come from the shards' bytes (the feature rows are equal frames, shown above)."""
    from genre_tf.training.fit import train

    cfg, output, _, _, config_file = beam_run
    tiny = ["model.kind=cnn", "model.image_size=[16,16]", "model.cnn.conv_blocks=1", "model.cnn.filters=4"]
    tiny += ["train.epochs=2", "train.batch_size=4"]
    runs, histories = {}, {}
    for source in ("cache", "shards"):
        shard_key = [f"data.shards={output}"] if source == "shards" else []
        run_cfg = load_config(config_file, [*tiny, f"name={source}", *shard_key])
        run_dir = run_cfg.output_dir / f"{run_cfg.model.kind}-{source}"
        runs[source] = train(run_cfg, run_dir, verbose=0)
        histories[source] = pd.read_csv(run_dir / "history.csv")
    assert runs["shards"]["splits"] == runs["cache"]["splits"]  # every metric of valid and test, to the last bit
    pd.testing.assert_frame_equal(histories["shards"], histories["cache"], check_exact=True)
    assert set(runs["cache"]["splits"]) == {"valid", "test"} and len(histories["cache"]) == 2


def _stream(files, name, table, split):
    """The ShardStream of one split of a table read with held=False: its segments' bytes as read."""
    from genre_tf.inputs.pipeline import ShardStream

    rows = table[table.split == split]
    labels = pd.factorize(rows.track_id)[0]  # any class index per track: the tests here look at the bytes
    return ShardStream.of_split(tuple(files), name, rows, labels, lambda data: data)


def _segments(ds):
    return [(track_id.decode(), int(k), data) for track_id, k, data, _ in ds.as_numpy_iterator()]


def test_streamed_splits_hold_the_cache_examples_in_the_table_order(beam_run):
    """Per split and representation, the segments streamed from the shards are the cache's (track, k-th segment,
    file bytes), in the order of the table read with held=False, which holds no segment files but the cache's
    segments and feature rows."""
    cfg, output, _, local, _ = beam_run
    files = shards.shard_files(str(output))
    table = shards.read_prepared(str(output), cfg, names=ALL, held=False).segments
    assert "mel_path" not in table and "musicnn_path" not in table
    cached = local.segments.assign(k=local.segments.groupby("track_id").cumcount())
    columns = ["track_id", "segment", "label", *feature_columns(cfg.features.n_mfcc)]  # the rows held still
    for split in ("train", "valid", "test"):
        rows = table[table.split == split]
        held, cached_rows = (
            frame[columns].sort_values(["track_id", "segment"]).reset_index(drop=True)
            for frame in (rows, local.segments[local.segments.split == split])
        )
        pd.testing.assert_frame_equal(held, cached_rows)
        for name, column in (("mel_image", "mel_path"), ("musicnn_patch", "musicnn_path")):
            streamed = _segments(_stream(files, name, table, split).segments(files))
            expected = cached[cached.split == split]
            assert sorted(streamed) == sorted(
                zip(expected.track_id, expected.k, (Path(p).read_bytes() for p in expected[column]), strict=True)
            )
            assert [(t, k) for t, k, _ in streamed] == list(
                zip(rows.track_id, rows.groupby("track_id").cumcount(), strict=True)
            )


def test_two_workers_stream_disjoint_shard_files(beam_run):
    """Under 2 input pipelines each reads its own shard files, together all of them; each gives `steps` batches of
    half the global batch per epoch. A split that one worker's files hold none of is a config error on every
    worker, where it would leave the others waiting."""
    import tensorflow as tf

    cfg, output, _, _, _ = beam_run
    files = shards.shard_files(str(output))
    table = shards.read_prepared(str(output), cfg, names=(MEL_IMAGE,), held=False).segments
    stream = _stream(files, MEL_IMAGE, table, "train")
    contexts = [tf.distribute.InputContext(2, worker, 2) for worker in range(2)]
    held = [shards.worker_files(files, context) for context in contexts]
    assert sorted(held[0] + held[1]) == sorted(files) and not set(held[0]) & set(held[1])
    tracks = [{t for t, _, _ in _segments(stream.segments(part))} for part in held]
    assert not tracks[0] & tracks[1] and tracks[0] | tracks[1] == set(table.track_id[table.split == "train"])
    for context in contexts:
        batches, steps = stream.train_batches(4, cfg.seed, 0, 2, context)
        assert steps == len(stream.track_ids) * 3 // 4 and [len(x) for x, _ in batches] == [2] * 2 * steps
    with pytest.raises(ConfigError, match=r"^data.shards: 2 shard file\(s\) for 3 workers"):
        shards.worker_files(files, tf.distribute.InputContext(3, 0, 3))
    first_valid = table.track_id[table.split == "valid"].iloc[0]
    one_valid = table[(table.split != "valid") | (table.track_id == first_valid)]
    valid = _stream(files, MEL_IMAGE, one_valid, "valid")  # 1 track: one worker's file holds none of the split
    idle = r"worker \d of 2 would read tracks-0000\d-of-00002.tfrecord, which hold\(s\) none of the split's 1 tracks"
    for context in contexts:  # every worker stops alike, whichever holds the track
        with pytest.raises(ConfigError, match=rf"^data.shards: {idle}"):
            valid.train_batches(4, cfg.seed, 0, 1, context)


def test_a_streamed_epoch_is_a_function_of_seed_and_epoch(beam_run):
    """Each epoch's order comes from (seed, epoch): a run resumed at epoch 1 sees the batches an uninterrupted run
    sees there, and the epochs differ."""
    cfg, output, _, _, _ = beam_run
    files = shards.shard_files(str(output))
    table = shards.read_prepared(str(output), cfg, names=(MEL_IMAGE,), held=False).segments
    stream = _stream(files, MEL_IMAGE, table, "train")
    whole, steps = stream.train_batches(2, cfg.seed, 0, 2)
    resumed, _ = stream.train_batches(2, cfg.seed, 1, 2)
    whole, resumed = ([x.tolist() for x, _ in ds.as_numpy_iterator()] for ds in (whole, resumed))
    assert len(whole) == 2 * steps and whole[steps:] == resumed
    assert whole[:steps] != whole[steps:]


def test_streaming_config_errors_name_the_key(beam_run):
    """Streaming without shards, with augmentation or a cached boundary is a config error; an mlp holds its rows."""
    from genre_tf.inputs.examples import load_examples, streams

    _, output, _, _, config_file = beam_run
    with pytest.raises(ConfigError, match=r"^data.stream: streams shard files: set data.shards"):
        load_config(config_file, ["data.stream=true"])
    augmented = load_config(config_file, ["model.kind=cnn", f"data.shards={output}", "data.stream=true"])
    augmented = replace(augmented, augment=replace(augmented.augment, gain_db=3.0))
    with pytest.raises(ConfigError, match=r"^data.stream: augmentation reads the train split by element index"):
        load_examples(augmented, progress=False)
    probe = load_config(config_file, ["model.kind=transfer", f"data.shards={output}", "data.stream=true"])
    with pytest.raises(ConfigError, match=r"^data.stream: the cached boundary holds the split"):
        streams(probe)
    assert not streams(load_config(config_file, ["model.kind=mlp", f"data.shards={output}", "data.stream=true"]))


@pytest.mark.slow
def test_a_run_trained_from_a_stream_writes_a_normal_run(beam_run):
    """A CNN trained and refitted with data.stream: the run directory a cached run has, the cache's segments per
    split, and per segment the prediction, track and label the held reader gives the same model (the stream lines up
    with its table)."""
    import numpy as np

    from genre_tf.evaluation.predictions import predict_examples
    from genre_tf.inputs.examples import load_examples
    from genre_tf.run import RunDir
    from genre_tf.training.fit import train

    _, output, _, local, config_file = beam_run
    tiny = ["model.kind=cnn", "model.image_size=[16,16]", "model.cnn.conv_blocks=1", "model.cnn.filters=4"]
    tiny += ["train.epochs=2", "train.batch_size=4", "name=streamed", f"data.shards={output}"]
    run_cfg = load_config(config_file, [*tiny, "data.stream=true", "train.refit=true"])
    run_dir = run_cfg.output_dir / "cnn-streamed"
    metrics = train(run_cfg, run_dir, verbose=0)
    assert metrics["refit"]["examples"] == local.segments.split.isin(["train", "valid"]).sum()
    for part in ("config.yaml", "model.keras", "history.csv", "metrics.json", "report.md", "confusion_matrix.png"):
        assert (run_dir / part).is_file(), part
    assert len(pd.read_csv(run_dir / "history.csv")) == 2
    run = RunDir(run_dir)
    streamed, held = load_examples(run_cfg, progress=False), load_examples(load_config(config_file, tiny))
    assert "mel_path" not in streamed.frame and "mel_path" in held.frame
    model = run.load_model()
    for split in ("valid", "test"):
        assert metrics["splits"][split]["segment"]["n"] == (local.segments.split == split).sum()
        rows = {}
        for name, examples in (("streamed", streamed), ("held", held)):
            track_ids, probs, labels = predict_examples(run, model, examples.split(split), 4)
            rows[name] = sorted(zip(track_ids, labels, np.round(probs, 5).tolist(), strict=True))
        assert rows["streamed"] == rows["held"]


def test_the_multi_worker_loop_takes_a_stream_by_input_context(beam_run):
    """fit_multi_worker with a streamed split: each input pipeline's batches come from the function of its
    context (here the default strategy's one pipeline), `steps` of them per epoch."""
    import keras
    import tensorflow as tf

    from genre_tf import models
    from genre_tf.inputs.examples import load_examples, split_data
    from genre_tf.training.multi_worker import fit_multi_worker

    _, output, _, _, config_file = beam_run
    tiny = ["model.kind=cnn", "model.image_size=[16,16]", "model.cnn.conv_blocks=1", "model.cnn.filters=4"]
    cfg = load_config(config_file, [*tiny, f"data.shards={output}", "data.stream=true"])
    examples = load_examples(cfg, progress=False)
    data = split_data(examples.split("train"), InputRecipe.of(cfg), examples.classes, None)
    contexts = []

    def batches(context: tf.distribute.InputContext) -> tf.data.Dataset:
        contexts.append(context)
        return data.stream.train_batches(4, cfg.seed, 0, 2, context)[0]

    model = models.build_model(cfg.model, (16, 16, 1), len(examples.classes))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    history = keras.callbacks.History()
    strategy = tf.distribute.get_strategy()
    steps = len(data) // 4
    fit_multi_worker(model, cfg.train, strategy, batches, None, steps, 4, range(2), [history])
    assert [(c.num_input_pipelines, c.input_pipeline_id) for c in contexts] == [(1, 0)]
    assert len(history.history["loss"]) == 2 and all(loss > 0 for loss in history.history["loss"])
