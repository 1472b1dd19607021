"""From a config to model inputs: which rows, which feature columns, and what the tf.data elements hold."""

import numpy as np
import pandas as pd
import pytest

from genre_tf import models
from genre_tf.config import ConfigError
from genre_tf.data.index import index_paths
from genre_tf.extract.prepared import SKIPPED_COLUMNS, Prepared, prepare_index
from genre_tf.features.analysis import FEATURE_COLUMNS, encode_mel_png, feature_columns
from genre_tf.features.scaling import FeatureScaler
from genre_tf.inputs.examples import (
    examples_from_prepared,
    examples_from_table,
    split_data,
)
from genre_tf.inputs.recipe import InputRecipe

PUBLISHED_NON_MFCC = FEATURE_COLUMNS[:17]  # chroma_stft_mean .. perceptr_var, then tempo


def hand_prepared(n_mfcc: int = 20) -> Prepared:
    """Two tracks (two and one segments) with their feature columns; values are the row number."""
    columns = feature_columns(n_mfcc)
    tracks = pd.DataFrame({"track_id": ["a", "b"], "label": ["jazz", "rock"], "split": ["train", "valid"]})
    tracks = pd.concat([tracks, pd.DataFrame(np.arange(2.0)[:, None] * np.ones(len(columns)), columns=columns)], axis=1)
    segments = pd.DataFrame(
        {"track_id": ["a", "a", "b"], "segment": [0, 1, 0], "label": ["jazz", "jazz", "rock"], "split": ["train"] * 3}
    )
    segments["mel_path"] = ["a0.png", "a1.png", "b0.png"]
    segments = pd.concat(
        [segments, pd.DataFrame(np.arange(3.0)[:, None] * np.ones(len(columns)), columns=columns)], axis=1
    )
    return Prepared(tracks, segments, pd.DataFrame(columns=SKIPPED_COLUMNS))


def test_track_level_mlp_reads_tracks_every_other_model_segments(tmp_path, make_config):
    prepared = hand_prepared()
    track_mlp = examples_from_prepared(
        prepared, InputRecipe.of(make_config(tmp_path, "model.kind=mlp", "model.level=track"))
    )
    assert track_mlp.frame is prepared.tracks
    assert track_mlp.classes == ["jazz", "rock"]
    for overrides in (["model.kind=mlp"], ["model.kind=cnn"], ["model.kind=transfer"]):
        examples = examples_from_prepared(prepared, InputRecipe.of(make_config(tmp_path, *overrides)))
        assert examples.frame is prepared.segments, overrides
        assert examples.split("train").track_id.tolist() == ["a", "a", "b"]
        assert examples.split("valid").empty
    image = examples_from_prepared(
        prepared, InputRecipe.of(make_config(tmp_path, "model.kind=cnn", "model.level=track"))
    )
    assert image.frame is prepared.segments, "model.level only concerns feature rows"
    assert image.feature_columns == []


def test_model_input_per_family(tmp_path, make_config):
    assert InputRecipe.of(make_config(tmp_path, "model.kind=mlp")).representation == models.FEATURES == "features"
    assert InputRecipe.of(make_config(tmp_path, "model.kind=cnn")).representation == models.MEL_IMAGE == "mel_image"
    assert InputRecipe.of(make_config(tmp_path, "model.kind=transfer")).representation == models.MEL_IMAGE
    assert (
        InputRecipe.of(make_config(tmp_path, "model.kind=resnet50")).representation == models.MEL_IMAGE
    )  # the old name still loads


def test_feature_columns_are_the_published_names_with_n_mfcc_mfccs(tmp_path, make_config):
    for n_mfcc, expected in ((20, 57), (13, 43)):
        cfg = make_config(tmp_path, "model.kind=mlp", f"features.n_mfcc={n_mfcc}")
        columns = examples_from_prepared(hand_prepared(n_mfcc), InputRecipe.of(cfg)).feature_columns
        assert len(columns) == expected == 17 + 2 * n_mfcc
        assert columns[:17] == PUBLISHED_NON_MFCC and columns[16] == "tempo"
        assert columns[17:21] == ["mfcc1_mean", "mfcc1_var", "mfcc2_mean", "mfcc2_var"]
        assert columns[-2:] == [f"mfcc{n_mfcc}_mean", f"mfcc{n_mfcc}_var"]
    assert feature_columns(20) == FEATURE_COLUMNS


def test_prepared_audio_with_13_mfccs_gives_43_columns(tmp_path, make_config, write_clip):
    cfg = make_config(tmp_path, "model.kind=mlp", "features.n_mfcc=13")
    clip = write_clip(tmp_path / "clip.wav", 1.0, 440.0)
    examples = examples_from_prepared(prepare_index(index_paths([clip]), cfg, progress=False), InputRecipe.of(cfg))
    assert examples.feature_columns == feature_columns(13)
    assert examples.frame.columns.tolist() == [
        "track_id",
        "segment",
        "label",
        "split",
        *feature_columns(13),
    ]  # and no mel images or musicnn patches: the MLP reads neither
    rows = examples.frame[examples.feature_columns].to_numpy()
    assert rows.shape == (2, 43) and np.isfinite(rows).all()
    centroid = examples.frame["spectral_centroid_mean"]
    assert centroid.between(400, 500).all()  # a 440 Hz tone


def test_feature_table_and_audio_give_a_13_mfcc_model_the_same_43_columns(tmp_path, make_config, write_feature_table):
    """Defect (de75dc4): columns came from whatever the frame held, so a 20-MFCC table fed 57 columns with n_mfcc 13.

    A run trained on such a table then could not predict audio, whose prepared rows have 13 MFCCs only. The table's
    columns are reversed here: the model reads the published order whatever order the table has.
    """
    table = pd.read_csv(write_feature_table(tmp_path / "t.csv", ["jazz", "rock"]))
    reordered = tmp_path / "reordered.csv"
    table[["filename", "length", *reversed(feature_columns(20)), "label", "split"]].to_csv(reordered, index=False)
    cfg = make_config(tmp_path, "model.kind=mlp", "features.n_mfcc=13", "data.source=table", f"data.csv={reordered}")
    from_table = examples_from_table(reordered, cfg)
    assert len(from_table.feature_columns) == 43 and "mfcc14_mean" not in from_table.feature_columns
    assert from_table.feature_columns == feature_columns(13), "the published order, not the table's"
    from_audio = examples_from_prepared(hand_prepared(13), InputRecipe.of(cfg))
    assert from_audio.feature_columns == from_table.feature_columns
    scaler = FeatureScaler.fit(from_table.split("train"), from_table.feature_columns)
    assert scaler.transform(from_audio.frame).shape == (3, 43)  # a table run can score prepared audio


def test_table_refuses_an_image_model_in_one_line(tmp_path, make_config, write_feature_table):
    csv = write_feature_table(tmp_path / "t.csv", ["jazz", "rock"])
    cfg = make_config(tmp_path, "model.kind=cnn", "data.source=table", f"data.csv={csv}")
    with pytest.raises(ConfigError) as caught:
        examples_from_table(csv, cfg)
    assert caught.value.key == "model.kind"
    assert str(caught.value) == "model.kind: cnn needs audio; a feature table only feeds the mlp"


def test_table_names_its_missing_feature_columns(tmp_path, make_config, write_feature_table):
    table = pd.read_csv(write_feature_table(tmp_path / "full.csv", ["jazz", "rock"]))
    csv = tmp_path / "sixteen.csv"
    table.drop(columns=[f"mfcc{i}_{s}" for i in range(17, 21) for s in ("mean", "var")]).to_csv(csv, index=False)
    cfg = make_config(tmp_path, "data.source=table", f"data.csv={csv}")
    with pytest.raises(ConfigError) as caught:
        examples_from_table(csv, cfg)
    assert caught.value.key == "data.csv"
    assert str(caught.value) == (
        f"data.csv: {csv} lacks feature column(s) mfcc17_mean, mfcc17_var, mfcc18_mean, mfcc18_var, mfcc19_mean"
    )
    fewer = examples_from_table(
        csv, make_config(tmp_path, "features.n_mfcc=16", "data.source=table", f"data.csv={csv}")
    )
    assert fewer.feature_columns == feature_columns(16)


def test_split_data_for_features_scales_rows_and_keeps_tracks(tmp_path, make_config):
    cfg = make_config(tmp_path, "model.kind=mlp")
    examples = examples_from_prepared(hand_prepared(), InputRecipe.of(cfg))
    scaler = FeatureScaler.fit(examples.frame, examples.feature_columns)
    frame = examples.frame.assign(label=["jazz", "jazz", "blues"])  # a class the run never saw: -1
    data = split_data(frame, InputRecipe.of(cfg), ["jazz", "rock"], scaler)
    assert len(data) == 3 and data.labels.tolist() == [0, 0, -1] and data.track_ids.tolist() == ["a", "a", "b"]
    (x, y), *rest = list(data.batches(8).as_numpy_iterator())
    assert rest == [] and x.shape == (3, 57) and x.dtype == np.float32 and y.tolist() == [0, 0, -1]
    np.testing.assert_allclose(x[:, 0], [-1.2247449, 0.0, 1.2247449], rtol=1e-6)  # 0, 1, 2 standardised
    assert InputRecipe.of(cfg).shape(scaler) == (57,)


@pytest.mark.parametrize(
    ("channels", "mode", "expected"), [(1, "repeat", [0.5]), (3, "repeat", [0.5] * 3), (3, "deltas", [0.5, 0, 0])]
)
def test_split_data_for_images_reads_mel_pngs(tmp_path, make_config, channels, mode, expected):
    cfg = make_config(
        tmp_path,
        "model.kind=cnn",
        "model.image_size=[16, 24]",
        f"model.channels={channels}",
        f"model.channel_mode={mode}",
    )
    middle = (cfg.mel.db_floor + cfg.mel.db_ceiling) / 2  # maps to 0.5 on the pipeline's [0, 1] scale
    paths = []
    for i in range(2):
        paths.append(tmp_path / f"mel_{i}.png")
        paths[-1].write_bytes(encode_mel_png(np.full((16, 22), middle, np.float32), cfg.mel))
    frame = pd.DataFrame({"track_id": ["a", "a"], "label": ["rock", "jazz"], "mel_path": [str(p) for p in paths]})
    data = split_data(frame, InputRecipe.of(cfg), ["jazz", "rock"], None)
    (x, y), *rest = list(data.batches(4).as_numpy_iterator())
    assert rest == [] and x.shape == (2, 16, 24, channels) and y.tolist() == [1, 0]
    np.testing.assert_allclose(x.mean(axis=(0, 1, 2)), expected, atol=1e-4)
    assert InputRecipe.of(cfg).shape() == (16, 24, channels)
