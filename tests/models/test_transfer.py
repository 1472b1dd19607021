"""The transfer family's cut on DAG backbones, where later blocks read earlier blocks' outputs directly.

Two backbones the keras.applications source does not build, plugged in through test sources: a tiny functional
model with a skip connection and a concat of earlier blocks, and the real musicnn network (random init), whose
back-end reads the front-end and all three mid-ends. The cut, the several-array cache and training above it are
checked here together, since they share these sources; tests/test_boundary.py covers the chain backbones.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
from conftest import MEL_CLASSES, MEL_IMAGES

from genre_tf.config import CacheConfig, Config, ModelConfig, TrainConfig, TransferConfig
from genre_tf.features import representations
from genre_tf.features.representations import MEL_IMAGE
from genre_tf.inputs.examples import split_data
from genre_tf.inputs.pipeline import image_input_shape, train_dataset
from genre_tf.inputs.recipe import InputRecipe
from genre_tf.models import build_model, transfer
from genre_tf.models.backbone import BackboneSource
from genre_tf.models.musicnn import N_MELS, build_musicnn
from genre_tf.models.transfer import (
    _block_start,
    backbone_blocks,
    boundary_layer_name,
    boundary_tensors,
    get_backbone,
    split_at_boundary,
)
from genre_tf.training import boundary
from genre_tf.training.boundary import boundary_features, boundary_split, cut_at_boundary

CLASSES, N_IMAGES = MEL_CLASSES, MEL_IMAGES
BATCH = 4
FRAMES = 32  # musicnn patch length: every layer is time-convolutional, so a short patch is the same network


class Preprocess(keras.layers.Layer):
    """The "preprocess" layer a source puts in front of its backbone: drops the mel image's single channel."""

    def __init__(self, backbone: str, squeeze: bool, **kwargs):
        super().__init__(name="preprocess", **kwargs)
        self.backbone, self.squeeze = backbone, squeeze

    def call(self, images):
        return images[..., 0] if self.squeeze else images


class TinyDag(BackboneSource):
    """stem, then blocks a, b (residual over a), c (reads a and b): a 3-block DAG on (H, W, 1) images."""

    block_pattern = r"([abc])_"

    def build(self, cfg: TransferConfig, input_shape: tuple[int, ...]) -> keras.Model:
        images = keras.Input(shape=input_shape, name="images")
        stem = keras.layers.Conv2D(4, 3, strides=2, padding="same", activation="relu", name="stem_conv")(images)
        a = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="a_conv")(stem)
        a = keras.layers.BatchNormalization(name="a_bn")(a)
        b = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="b_conv")(a)
        b = keras.layers.Add(name="b_residual")([keras.layers.BatchNormalization(name="b_bn")(b), a])
        c = keras.layers.Concatenate(name="c_concat")([a, b])
        c = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="c_conv")(c)
        return keras.Model(images, keras.layers.GlobalAveragePooling2D(name="c_pool")(c), name="tiny_dag")

    def preprocessing(self) -> keras.layers.Layer:
        return Preprocess(self.name, squeeze=False)


class MusicnnBackbone(BackboneSource):
    """musicnn up to its penultimate features, on (frames, 96, 1) mel images; blocks by layer-name prefix."""

    block_pattern = r"(frontend|midend\d|backend)_"

    def build(self, cfg: TransferConfig, input_shape: tuple[int, ...]) -> keras.Model:
        network = build_musicnn(self.name, frames=input_shape[0])
        penultimate = network.get_layer("backend_penultimate_bn").output
        return keras.Model(network.input, penultimate, name=self.name.lower())

    def preprocessing(self) -> keras.layers.Layer:
        return Preprocess(self.name, squeeze=True)


SOURCES = {"TinyDag": TinyDag, "MSD_musicnn": MusicnnBackbone}
IMAGE_SIZES = {"TinyDag": [16, 16], "MSD_musicnn": [FRAMES, N_MELS]}


@pytest.fixture(autouse=True)
def dag_sources(monkeypatch):
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    original = transfer.backbone_source
    monkeypatch.setattr(
        transfer, "backbone_source", lambda name: SOURCES[name](name) if name in SOURCES else original(name)
    )
    read_by = representations.read_by  # these test sources read mel images, whatever their name
    monkeypatch.setattr(
        representations, "read_by", lambda cfg: MEL_IMAGE if cfg.transfer.backbone in SOURCES else read_by(cfg)
    )


def make_cfg(tmp_path: Path, backbone: str, **transfer_kw) -> Config:
    model = ModelConfig(
        kind="transfer",
        image_size=IMAGE_SIZES[backbone],
        channels=1,
        transfer=TransferConfig(
            **{"backbone": backbone, "weights": None, "head_units": 8, "dropout": 0.0, **transfer_kw}
        ),
    )
    return Config(model=model, cache=CacheConfig(dir=tmp_path / "cache"), train=TrainConfig(batch_size=BATCH))


def build(cfg: Config) -> keras.Model:
    return build_model(cfg.model, image_input_shape(cfg.model), len(CLASSES))


@pytest.fixture
def frame(mel_frame) -> pd.DataFrame:
    return mel_frame


def images_of(frame: pd.DataFrame, cfg: Config) -> np.ndarray:
    return np.concatenate([x for x, _ in split_data(frame, InputRecipe.of(cfg), CLASSES, None).batches(BATCH)])


def names(model: keras.Model, blocks: int) -> list[str]:
    return [tensor._keras_history.operation.name for tensor in boundary_tensors(model, blocks)]


def as_list(activations) -> list:
    return list(activations) if isinstance(activations, list | tuple) else [activations]


def assert_top_of_frozen_is_the_model(model: keras.Model, blocks: int, x: np.ndarray) -> None:
    frozen, top = split_at_boundary(model, blocks)
    activations = frozen(x)
    assert [a.shape[1:] for a in as_list(activations)] == [t.shape[1:] for t in boundary_tensors(model, blocks)]
    np.testing.assert_allclose(top(activations), model(x), atol=1e-5)
    assert not frozen.trainable_weights
    transfer.set_trainable_blocks(model, blocks)
    assert sorted(w.path for w in top.trainable_weights) == sorted(w.path for w in model.trainable_weights)


def test_dag_boundary_is_every_frozen_tensor_the_trainable_blocks_read(tmp_path):
    model = build(make_cfg(tmp_path, "TinyDag"))
    assert backbone_blocks(model) == ["a", "b", "c"]
    # c reads a and b, b reads a (twice: its convolution and its residual), the stem feeds a; each tensor once.
    expected = {0: ["c_pool"], 1: ["a_bn", "b_residual"], 2: ["a_bn"], 3: ["stem_conv"]}
    assert {n: names(model, n) for n in expected} == expected
    assert boundary_layer_name(model, 1) == "a_bn+b_residual"
    assert boundary_layer_name(model, 2) == "a_bn"
    x = np.random.default_rng(0).random((3, 16, 16, 1), dtype=np.float32)
    for blocks in expected:
        assert_top_of_frozen_is_the_model(model, blocks, x)


def test_musicnn_backend_reads_the_frontend_and_every_midend(tmp_path):
    model = build(make_cfg(tmp_path, "MSD_musicnn"))
    assert backbone_blocks(model) == ["frontend", "midend1", "midend2", "midend3", "backend"]
    expected = {
        0: ["backend_penultimate_bn"],
        1: ["frontend_features", "midend1_bn", "midend2_residual", "midend3_residual"],
        2: ["frontend_features", "midend1_bn", "midend2_residual"],
        3: ["frontend_features", "midend1_bn"],
        4: ["frontend_features"],
        5: ["log_mel"],  # every block trains: the backbone's input itself is handed over
    }
    assert {n: names(model, n) for n in expected} == expected
    shapes = [tuple(t.shape[1:]) for t in boundary_tensors(model, 2)]
    assert shapes == [(FRAMES, 561), (FRAMES, 64), (FRAMES, 64)]
    x = np.random.default_rng(0).random((3, FRAMES, N_MELS, 1), dtype=np.float32)
    for blocks in expected:
        assert_top_of_frozen_is_the_model(model, blocks, x)


@pytest.mark.parametrize("backbone, alpha, n_blocks", [("ResNet50", 1.0, 16), ("MobileNet", 0.25, 13)])
def test_chain_backbones_hand_over_the_output_of_the_layer_below_the_lowest_trainable_block(
    tmp_path, backbone, alpha, n_blocks
):
    cfg = ModelConfig(
        kind="transfer", transfer=TransferConfig(backbone=backbone, alpha=alpha, weights=None, head_units=8)
    )
    model = build_model(cfg, (32, 32, 3), len(CLASSES))
    layers = get_backbone(model).layers
    for blocks in range(n_blocks + 1):
        below = layers[_block_start(model, blocks) - 1]  # the one tensor the cut handed over before DAG backbones
        assert [t._keras_history.operation for t in boundary_tensors(model, blocks)] == [below]
        assert boundary_layer_name(model, blocks) == below.name


def test_operations_that_are_not_layers_fall_on_one_side_of_the_cut(tmp_path):
    # MobileNetV3's hard-swish (`x + 3.0`, `* (1 / 6)`) puts keras.ops operations between its layers.
    cfg = ModelConfig(kind="transfer", transfer=TransferConfig(backbone="MobileNetV3Small", weights=None, head_units=8))
    model = build_model(cfg, (32, 32, 3), len(CLASSES))
    backbone = get_backbone(model)
    assert len(backbone.operations) > len(backbone.layers)
    x = np.random.default_rng(0).random((2, 32, 32, 3), dtype=np.float32)
    for blocks in (1, 5, len(backbone_blocks(model))):
        assert len(boundary_tensors(model, blocks)) == 1
        assert_top_of_frozen_is_the_model(model, blocks, x)


def test_several_boundary_tensors_are_cached_in_one_file_then_loaded(tmp_path, frame, monkeypatch):
    cfg = make_cfg(tmp_path, "MSD_musicnn", trainable_blocks=2)
    model = build(cfg)
    cut = cut_at_boundary(model, 2, cfg.model)
    assert cut.layer == "frontend_features+midend1_bn+midend2_residual"
    data = split_data(frame, InputRecipe.of(cfg), CLASSES, None)
    key = cut.key(frame.mel_path)
    first = boundary_features(cut.frozen, data, BATCH, cfg.cache.dir, key, progress=False)
    assert [a.shape for a in first] == [(N_IMAGES, FRAMES, 561), (N_IMAGES, FRAMES, 64), (N_IMAGES, FRAMES, 64)]
    for cached, computed in zip(first, cut.frozen(images_of(frame, cfg)), strict=True):
        np.testing.assert_allclose(cached, computed, rtol=1e-5, atol=1e-6)
    assert [p.name for p in (cfg.cache.dir / "boundary").iterdir()] == [f"{key}.npz"]  # one entry, no temporary

    def no_compute(*args, **kwargs):
        raise AssertionError("a cached split was computed again")

    monkeypatch.setattr(keras.Model, "predict_on_batch", no_compute)
    for loaded, cached in zip(boundary_features(cut.frozen, data, BATCH, cfg.cache.dir, key), first, strict=True):
        np.testing.assert_array_equal(loaded, cached)
    # Each element is the tuple of top's inputs; the split keeps labels and tracks.
    split = boundary_split(
        cut, frame, InputRecipe.of(cfg), CLASSES, cfg.train.batch_size, cfg.cache.dir, progress=False
    )
    np.testing.assert_array_equal(split.track_ids, frame.track_id)
    (x, y), *_ = split.batches(BATCH).take(1)
    assert isinstance(x, tuple) and [tuple(a.shape) for a in x] == [(BATCH, FRAMES, 561), *[(BATCH, FRAMES, 64)] * 2]
    np.testing.assert_allclose(cut.top(x), model(images_of(frame, cfg)[:BATCH]), atol=1e-5)
    np.testing.assert_array_equal(y, [0, 1, 2, 0])
    # A split without elements caches empty arrays of the right shapes.
    assert boundary_split(
        cut, frame.iloc[:0], InputRecipe.of(cfg), CLASSES, cfg.train.batch_size, cfg.cache.dir, progress=False
    ).labels.shape == (0,)
    with np.load(cfg.cache.dir / "boundary" / f"{cut.key([])}.npz") as empty:
        assert [empty[name].shape for name in empty.files] == [(0, FRAMES, 561), (0, FRAMES, 64), (0, FRAMES, 64)]


def test_training_top_on_several_cached_tensors_trains_the_full_model_as_plain_fit_does(tmp_path, frame):
    cfg = make_cfg(tmp_path, "MSD_musicnn", trainable_blocks=2)
    model = build(cfg)
    backbone = get_backbone(model)
    images = images_of(frame, cfg)
    initial = model.get_weights()
    # Keras 3 lets fit's training=True override the backbone's training=False, so the back-end's Dropout is live
    # in both fits: restart every Dropout generator, the backbone's too, so the two draw the same masks.
    dropouts = [
        layer for layer in [*model.layers, *backbone.layers] if isinstance(layer, keras.layers.Dropout) and layer.rate
    ]
    initial_rngs = [layer.seed_generator.state.numpy() for layer in dropouts]
    watched = ["midend3_conv", "backend_dense", "midend2_conv", "frontend_timbral74_conv"]
    kernels = {name: backbone.get_layer(name).kernel for name in watched}
    initial_kernels = {name: kernel.numpy() for name, kernel in kernels.items()}

    def fit(net: keras.Model, loader) -> None:
        net.compile(optimizer=keras.optimizers.Adam(1e-3), loss=keras.losses.SparseCategoricalCrossentropy())
        ds, steps = train_dataset(loader, N_IMAGES, BATCH, cfg.seed, 0, 2)
        net.fit(ds, epochs=2, steps_per_epoch=steps, shuffle=False, verbose=0)

    fit(model, split_data(frame, InputRecipe.of(cfg), CLASSES, None).loader)
    plain = model(images)
    plain_kernels = {name: kernel.numpy() for name, kernel in kernels.items()}
    model.set_weights(initial)
    for layer, state in zip(dropouts, initial_rngs, strict=True):
        layer.seed_generator.state.assign(state)
    cut = cut_at_boundary(model, 2, cfg.model)
    data = boundary_split(cut, frame, InputRecipe.of(cfg), CLASSES, cfg.train.batch_size, cfg.cache.dir, progress=False)
    fit(cut.top, data.loader)
    changed = {name: not np.array_equal(plain_kernels[name], initial_kernels[name]) for name in watched}
    assert changed == {
        "midend3_conv": True,
        "backend_dense": True,
        "midend2_conv": False,
        "frontend_timbral74_conv": False,
    }
    for name, kernel in kernels.items():
        np.testing.assert_allclose(kernel.numpy(), plain_kernels[name], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(model(images), plain, rtol=1e-4, atol=1e-6)  # top's weights are the full model's
    # Only midend3, the back-end and the head trained: the cached activations are still the frozen part's.
    assert boundary.weights_digest(cut.frozen) == cut.spec["weights"]
