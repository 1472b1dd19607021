"""prepare --engine beam on the DirectRunner: shards hold the local cache's tracks byte for byte, and train reads them.

One pipeline run (the DirectRunner's start-up is slow) serves every test: 2 genres x 4 tone clips and a text file
named .wav, every representation, 2 shards.
"""

from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("apache_beam", reason="apache_beam is not installed: pip install 'genre_tf[beam]'")

from genre_tf import prepare, shards  # noqa: E402
from genre_tf.config import ConfigError, load_config, save_config  # noqa: E402
from genre_tf.features import feature_columns  # noqa: E402
from genre_tf.prepare import config_index, prepare_index  # noqa: E402
from genre_tf.representations import ALL, MEL_IMAGE, MUSICNN_PATCH  # noqa: E402

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
    assert from_shards.stats["splits"] == local.stats["splits"] == {"test": 2, "train": 5, "valid": 1}


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
    from genre_tf.training import train

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
