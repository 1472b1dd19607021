"""musicnn port: input representation and network outputs against the original TF1 code's, checkpoint conversion."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import keras
import librosa
import numpy as np
import pytest

from genre_tf.config import ConfigError
from genre_tf.features.musicnn_input import MUSICNN_SAMPLE_RATE, PATCH_FRAMES, log_mel, patches
from genre_tf.models import musicnn
from genre_tf.models.musicnn import (
    MUSICNN_BLOCKS,
    MUSICNN_MODELS,
    CheckpointMismatch,
    MusicnnWeightsUnavailable,
    build_musicnn,
    convert_checkpoint,
    load_musicnn,
    musicnn_weights,
    shared_patches_network,
)

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
REFERENCE = SHARED_DATA / "musicnn_reference"
CLIPS = ("blues.00000", "classical.00000", "metal.00000")

needs_reference = pytest.mark.skipif(
    not REFERENCE.is_dir(), reason=f"musicnn reference outputs not found at {REFERENCE}"
)
needs_wheel = pytest.mark.skipif(
    importlib.util.find_spec("musicnn") is None,
    reason="musicnn wheel not installed (pip install --no-deps musicnn==0.1.0): it holds the checkpoints",
)


def reference(clip: str) -> dict[str, np.ndarray]:
    with np.load(REFERENCE / f"{clip}.npz") as npz:
        return dict(npz)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def ported(cache_dir) -> dict[str, keras.Model]:
    """Each model built once, with weights converted, cached and loaded back through the cache file."""
    return {name: load_musicnn(name, cache_dir) for name in MUSICNN_MODELS}


@needs_reference
@pytest.mark.parametrize("clip", CLIPS)
def test_patches_from_the_clip_match_the_reference(clip):
    genre = clip.split(".")[0]
    y, _ = librosa.load(SHARED_DATA / "gtzan_mini" / genre / f"{clip}.flac", sr=MUSICNN_SAMPLE_RATE)
    mel = log_mel(y)
    starts = np.arange(0, mel.shape[0] - PATCH_FRAMES + 1, PATCH_FRAMES)  # musicnn's batch_data(path, 187, 187)
    ours = patches(mel, starts)
    expected = reference(clip)["patches"]
    assert ours.dtype == np.float32 and ours.shape == expected.shape == (10, PATCH_FRAMES, 96)
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-3)


def test_patches_cut_at_the_given_frames():
    mel = np.arange(10 * 96, dtype=np.float32).reshape(10, 96)
    cut = patches(mel, [0, 4, 7], frames=3)
    assert cut.shape == (3, 3, 96)
    np.testing.assert_array_equal(cut[1], mel[4:7])
    with pytest.raises(ValueError, match="0..7"):
        patches(mel, [8], frames=3)


def test_log_mel_compresses_float16_rounded_power_without_overflow():
    t = np.arange(MUSICNN_SAMPLE_RATE, dtype=np.float32) / MUSICNN_SAMPLE_RATE
    mel = log_mel(np.sin(2 * np.pi * 440.0 * t))  # a full-scale tone: mel power far above float16's 65504 / 10^4
    assert mel.shape == (MUSICNN_SAMPLE_RATE // 256 + 1, 96) and mel.dtype == np.float32
    assert np.isfinite(mel).all() and mel.max() > np.log10(65504.0)
    assert log_mel(np.zeros(MUSICNN_SAMPLE_RATE, np.float32)).max() == 0.0  # log10(10^4 * 0 + 1)


@needs_reference
@needs_wheel
@pytest.mark.parametrize("name", MUSICNN_MODELS)
@pytest.mark.parametrize("clip", CLIPS)
def test_outputs_match_the_original_graph(ported, name, clip):
    expected = reference(clip)
    out = ported[name].predict(expected["patches"], verbose=0)
    for key in ("logits", "penultimate"):
        np.testing.assert_allclose(out[key], expected[f"{name}/{key}"], rtol=0, atol=1e-4, err_msg=key)
    for key in ("mean_pool", "max_pool"):
        # Relative to the array's scale: features near zero after BatchNorm carry float32 summation-order noise
        # far above 1e-5 of their own size.
        want = expected[f"{name}/{key}"]
        np.testing.assert_allclose(out[key], want, rtol=1e-5, atol=1e-5 * np.abs(want).max(), err_msg=key)


@needs_wheel
def test_any_patch_length_runs_and_agrees_at_187_frames(ported):
    fixed = ported["MSD_musicnn"]
    free = build_musicnn("MSD_musicnn", frames=None)
    free.set_weights(fixed.get_weights())
    short = free.predict(np.random.default_rng(0).random((1, 125, 96), dtype=np.float32), verbose=0)
    assert {key: value.shape for key, value in short.items()} == {
        "logits": (1, 50),
        "penultimate": (1, 200),
        "mean_pool": (1, 753),
        "max_pool": (1, 753),
    }
    patch = np.random.default_rng(1).random((2, PATCH_FRAMES, 96), dtype=np.float32) * 4
    same = [keras.ops.convert_to_numpy(model(patch, training=False)["logits"]) for model in (free, fixed)]
    np.testing.assert_allclose(*same, rtol=0, atol=1e-5)  # float32 summation order differs between the two graphs


def test_layers_are_named_by_block():
    model = build_musicnn("MTT_musicnn")
    prefixes = [layer.name.split("_")[0] for layer in model.layers if layer.weights]
    assert set(prefixes) == set(MUSICNN_BLOCKS)
    assert [p for i, p in enumerate(prefixes) if i == 0 or p != prefixes[i - 1]] == list(MUSICNN_BLOCKS)
    assert model.get_layer("backend_logits").units == 50
    dropouts = [layer for layer in model.layers if isinstance(layer, keras.layers.Dropout)]
    assert [layer.rate for layer in dropouts] == [0.5, 0.5]


@needs_wheel
def test_a_checkpoint_variable_left_over_is_named(ported, monkeypatch):
    scopes = {k: v for k, v in musicnn.CHECKPOINT_SCOPES.items() if k != "backend_logits"}
    monkeypatch.setattr(musicnn, "CHECKPOINT_SCOPES", scopes)
    with pytest.raises(CheckpointMismatch) as err:
        convert_checkpoint("MSD_musicnn", ported["MSD_musicnn"])
    message = str(err.value)
    assert "no checkpoint scope: backend_logits/kernel, backend_logits/bias" in message
    assert "left over: dense_1/bias, dense_1/kernel" in message
    assert "Adam" not in message and "beta1_power" not in message


@needs_wheel
def test_an_extra_keras_weight_is_named(ported):
    base = ported["MSD_musicnn"]
    extra = keras.layers.Dense(3, name="backend_extra")(base.outputs[0])
    with pytest.raises(CheckpointMismatch, match="no checkpoint scope: backend_extra/kernel, backend_extra/bias"):
        convert_checkpoint("MSD_musicnn", keras.Model(base.inputs, [*base.outputs, extra]))


@needs_wheel
def test_a_shape_misfit_is_named_and_assigns_nothing(ported, monkeypatch):
    swapped = {**musicnn.CHECKPOINT_SCOPES, "backend_dense": "dense_1", "backend_logits": "dense"}
    monkeypatch.setattr(musicnn, "CHECKPOINT_SCOPES", swapped)
    model = ported["MTT_musicnn"]
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(CheckpointMismatch, match=r"dense_1/kernel \(200, 50\) for backend_dense/kernel \(1506, 200\)"):
        convert_checkpoint("MTT_musicnn", model)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))


@needs_wheel
def test_weights_are_converted_once_then_read_from_the_cache(ported, cache_dir, monkeypatch):
    path = musicnn_weights("MSD_musicnn", cache_dir)  # written by the `ported` fixture
    assert path.parent == cache_dir / "musicnn" and path.name.startswith("MSD_musicnn-")
    assert len(path.name) == len("MSD_musicnn-") + 16 + len(".weights.h5")
    assert not list(path.parent.glob(".tmp-*"))
    mtime = path.stat().st_mtime_ns

    def no_conversion(*args):
        raise AssertionError("converted again")

    monkeypatch.setattr(musicnn, "convert_checkpoint", no_conversion)
    assert musicnn_weights("MSD_musicnn", cache_dir) == path and path.stat().st_mtime_ns == mtime


def test_missing_wheel_is_a_one_line_config_error(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None)
    with pytest.raises(MusicnnWeightsUnavailable) as err:
        musicnn.checkpoint_prefix("MSD_musicnn")
    assert isinstance(err.value, ConfigError) and err.value.key == "model.transfer.weights"
    assert "pip install --no-deps musicnn==0.1.0" in str(err.value) and "\n" not in str(err.value)


# musicnn as a transfer backbone


def musicnn_transfer(**kw) -> keras.Model:
    from genre_tf.config import ModelConfig, TransferConfig
    from genre_tf.models import build_model

    transfer = TransferConfig(**{"backbone": "MSD_musicnn", "weights": None, "head_units": 0, **kw})
    return build_model(ModelConfig(kind="transfer", transfer=transfer), (PATCH_FRAMES, 96), 10)


@needs_reference
@pytest.mark.parametrize("clip", CLIPS[:1])
def test_cached_patches_give_the_reference_input(clip):
    """Audio as `prepare` loads it (22050 Hz), patches as the cache stores them, the log in the preprocess layer."""
    from genre_tf.config import AudioConfig, FeatureConfig, MelConfig
    from genre_tf.features.analysis import analyse_track
    from genre_tf.features.audio import load_track

    genre = clip.split(".")[0]
    y = load_track(SHARED_DATA / "gtzan_mini" / genre / f"{clip}.flac", AudioConfig())
    # Segments that start on musicnn's own patch grid (0, 187, 374, ... frames of 256 samples at 16 kHz).
    starts = [int(np.floor(k * PATCH_FRAMES * 256 * 22050 / MUSICNN_SAMPLE_RATE)) for k in range(10)]
    analysis = analyse_track(y, 22050, FeatureConfig(), MelConfig(), [(s, s + 3 * 22050) for s in starts])
    assert analysis.musicnn_segments.dtype == np.float16 and analysis.musicnn_segments.shape == (10, 187, 96)
    ours = musicnn.MusicnnLogCompression()(analysis.musicnn_segments).numpy()
    np.testing.assert_allclose(ours, reference(clip)["patches"], atol=1e-5)


def test_musicnn_blocks_and_boundaries_for_the_transfer_family():
    from genre_tf.models.transfer import backbone_blocks, boundary_layer_name, get_backbone

    model = musicnn_transfer(trainable_blocks=2)
    assert backbone_blocks(model) == list(MUSICNN_BLOCKS)
    assert boundary_layer_name(model, 0) == "backend_penultimate_bn"
    assert boundary_layer_name(model, 4) == "frontend_features"
    trainable = {layer.name for layer in get_backbone(model).layers if layer.trainable and layer.weights}
    assert trainable == {"midend3_conv", "backend_dense"}  # BatchNorm keeps its statistics
    assert model.get_layer("preprocess").backbone == "MSD_musicnn"


def test_random_twin_trains_its_batch_norm():
    from genre_tf.models.transfer import get_backbone

    model = musicnn_transfer(trainable_blocks=5, batch_norm="train")
    trainable = [layer for layer in get_backbone(model).layers if layer.trainable and layer.weights]
    assert {layer.name for layer in trainable} >= {"frontend_input_bn", "midend1_bn", "backend_penultimate_bn"}
    x = np.abs(np.random.default_rng(0).normal(size=(4, PATCH_FRAMES, 96))).astype(np.float32)
    bn = get_backbone(model).get_layer("midend1_bn")
    before = bn.moving_mean.numpy().copy()
    model(x, training=True)  # BatchNorm in training mode: its moving statistics move
    assert not np.allclose(bn.moving_mean.numpy(), before)


def test_imagenet_weights_for_musicnn_are_a_one_line_error():
    from genre_tf.models import WeightsUnavailable

    with pytest.raises(WeightsUnavailable, match=r"^model\.transfer\.weights: MSD_musicnn has no ImageNet weights"):
        musicnn_transfer(weights="imagenet")


@needs_wheel
@needs_reference
def test_pretrained_transfer_backbone_gives_the_reference_penultimate(monkeypatch, cache_dir):
    from genre_tf.models.transfer import get_backbone

    monkeypatch.setattr(musicnn, "weights_cache_dir", lambda: cache_dir)
    backbone = get_backbone(musicnn_transfer(weights="pretrained"))
    expected = reference("blues.00000")
    np.testing.assert_allclose(
        backbone.predict(expected["patches"], verbose=0), expected["MSD_musicnn/penultimate"], atol=1e-4
    )


def test_frozen_musicnn_backbone_has_no_live_dropout_under_fit():
    """Keras 3 passes fit's training=True into the nested backbone; its back-end dropout must not fire there."""
    model = musicnn_transfer(dropout=0.0)
    x = np.abs(np.random.default_rng(1).normal(size=(2, PATCH_FRAMES, 96))).astype(np.float32)
    np.testing.assert_array_equal(model(x, training=True), model(x, training=True))
    twin = musicnn_transfer(dropout=0.0, trainable_blocks=5, batch_norm="train")
    assert twin.get_layer("msd_musicnn").get_layer("backend_pool_dropout").rate == 0.5  # trained whole, as published


@needs_wheel
@needs_reference
def test_tagger_gives_the_reference_tag_probabilities(monkeypatch, cache_dir):
    monkeypatch.setattr(musicnn, "weights_cache_dir", lambda: cache_dir)
    expected = reference("metal.00000")
    power = (10.0 ** expected["patches"].astype(np.float64) - 1.0) / 10000.0  # back from log10(10^4 x + 1)
    tags = musicnn.tagger("MTT_musicnn").predict(power.astype(np.float32), verbose=0)
    np.testing.assert_allclose(tags, 1.0 / (1.0 + np.exp(-expected["MTT_musicnn/logits"])), atol=1e-4)
    assert len(musicnn.TAGS["MTT_musicnn"]) == tags.shape[1] == 50


def test_tags_need_a_musicnn_run(tmp_path):
    from genre_tf.config import load_config, save_config
    from genre_tf.run import RunDir
    from genre_tf.serving.musicnn_tags import tag_lines

    run = RunDir(tmp_path / "run")
    save_config(load_config(None, ["data.source=demo", "data.root=x", "model.kind=cnn"]), run.config_file)
    with pytest.raises(SystemExit, match="--tags needs a musicnn run"):
        tag_lines(run, None)


def test_shared_patches_network_equals_the_backbone_on_each_patch():
    frames = 40
    network = build_musicnn("MSD_musicnn", frames, dropout=0.0)
    backbone = keras.Model(network.input, network.get_layer("backend_penultimate_bn").output)
    shared = shared_patches_network(backbone, frames)
    clip = np.random.default_rng(0).random((1, 100, 96), dtype=np.float32)
    starts = np.array([0, 7, 25, 60], np.int32)  # overlapping, and the last one ending at the clip's end
    features = keras.ops.convert_to_numpy(shared([clip, starts]))
    alone = keras.ops.convert_to_numpy(backbone(np.stack([clip[0, s : s + frames] for s in starts])))
    assert features.shape == (4, 200)
    np.testing.assert_allclose(features, alone, rtol=0, atol=2e-5)
