"""Model builders: shapes and probabilities, save/load, backbone weights, trainability and the frozen boundary."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import keras
import numpy as np
import pytest

from genre_tf.config import CnnConfig, ConfigError, MlpConfig, ModelConfig, TransferConfig
from genre_tf.models import FAMILIES, WeightsUnavailable, build_model, keras_applications
from genre_tf.models.keras_applications import ImagePreprocessing
from genre_tf.models.transfer import (
    backbone_blocks,
    boundary_layer_name,
    get_backbone,
    set_trainable_blocks,
    set_trainable_layers,
    split_at_boundary,
)

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
MOBILENET_WEIGHTS = SHARED_DATA / "weights" / "mobilenet_v1_0.25_imagenet_notop.weights.h5"
RESNET50_BLOCKS = [f"conv{stage}_block{k}" for stage, n in ((2, 3), (3, 4), (4, 6), (5, 3)) for k in range(1, n + 1)]
N_CLASSES = 10


@pytest.fixture(autouse=True)
def fresh_session():
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)


def resnet_cfg(**kw) -> ModelConfig:
    return ModelConfig(kind="transfer", transfer=TransferConfig(**{"weights": None, "head_units": 8, **kw}))


def mobilenet_cfg(**kw) -> ModelConfig:
    return resnet_cfg(backbone="MobileNet", alpha=0.25, **kw)


def images(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, size, size, 3), dtype=np.float32)


def n_params(weights) -> int:
    return int(sum(np.prod(w.shape) for w in weights))


def assert_probabilities(probs, n: int) -> None:
    probs = keras.ops.convert_to_numpy(probs)
    assert probs.shape == (n, N_CLASSES)
    assert (probs >= 0).all()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("batch_norm", [True, False])
def test_mlp_blocks_and_parameter_count(batch_norm):
    cfg = ModelConfig(kind="mlp", mlp=MlpConfig(hidden_layers=2, units=16, batch_norm=batch_norm))
    model = build_model(cfg, (57,), N_CLASSES)
    assert_probabilities(model(np.random.default_rng(0).normal(size=(4, 57)).astype("float32")), 4)
    dense = (57 * 16 + 16 * 16) if batch_norm else (57 * 16 + 16) + (16 * 16 + 16)  # BatchNorm replaces the bias
    bn = 2 * 4 * 16 if batch_norm else 0  # gamma, beta, moving mean, moving variance
    assert model.count_params() == dense + bn + 16 * N_CLASSES + N_CLASSES


def test_mlp_without_hidden_layers_is_softmax_regression():
    model = build_model(ModelConfig(kind="mlp", mlp=MlpConfig(hidden_layers=0)), (57,), N_CLASSES)
    assert model.count_params() == 57 * N_CLASSES + N_CLASSES


def test_cnn_doubles_filters_and_handles_small_images():
    cfg = ModelConfig(kind="cnn", cnn=CnnConfig(conv_blocks=3, filters=4, kernel_size=5, pooling="avg"))
    model = build_model(cfg, (32, 24, 1), N_CLASSES)
    kernels = [layer.kernel.shape for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert kernels == [(5, 5, 1, 4), (5, 5, 4, 8), (5, 5, 8, 16)]
    assert_probabilities(model(np.random.default_rng(0).random((2, 32, 24, 1), dtype=np.float32)), 2)
    deep = build_model(ModelConfig(kind="cnn", cnn=CnnConfig(conv_blocks=6, filters=2)), (8, 8, 1), N_CLASSES)
    assert_probabilities(deep(np.zeros((1, 8, 8, 1), "float32")), 1)


@pytest.mark.parametrize(
    "cfg, shape",
    [
        (ModelConfig(kind="mlp"), (20,)),
        (ModelConfig(kind="cnn", cnn=CnnConfig(conv_blocks=2, filters=4)), (16, 16, 1)),
        (mobilenet_cfg(trainable_blocks=2), (32, 32, 3)),
    ],
    ids=["mlp", "cnn", "transfer"],
)
def test_save_and_load_give_the_same_predictions(tmp_path, cfg, shape):
    model = build_model(cfg, shape, N_CLASSES)
    x = np.random.default_rng(1).random((3, *shape), dtype=np.float32)
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    assert n_params(loaded.trainable_weights) == n_params(model.trainable_weights)
    if FAMILIES[cfg.kind].has_backbone:  # the helpers work on a loaded model too
        set_trainable_blocks(loaded, 0)
        assert n_params(loaded.trainable_weights) == 256 * 8 + 8 + 8 * N_CLASSES + N_CLASSES  # 1024 * alpha features


@pytest.mark.parametrize(
    "backbone, preprocess_input",
    [
        ("ResNet50", keras.applications.resnet.preprocess_input),
        ("MobileNet", keras.applications.mobilenet.preprocess_input),
        ("DenseNet121", keras.applications.densenet.preprocess_input),
        ("EfficientNetB0", keras.applications.efficientnet.preprocess_input),
    ],
)
def test_preprocessing_matches_keras_preprocess_input_of_0_to_255(backbone, preprocess_input):
    x = images(2, 8)
    ours = keras.ops.convert_to_numpy(ImagePreprocessing(backbone)(x))
    np.testing.assert_allclose(ours, preprocess_input(x * 255.0), rtol=1e-5, atol=1e-3)


def test_resnet50_has_16_residual_blocks_and_boundaries():
    model = build_model(resnet_cfg(), (32, 32, 3), N_CLASSES)
    assert backbone_blocks(model) == RESNET50_BLOCKS
    assert boundary_layer_name(model, 0) == "avg_pool"
    assert boundary_layer_name(model, 2) == "conv5_block1_out"
    assert boundary_layer_name(model, 16) == "pool1_pool"


def test_resnet50_trainable_parameter_counts_grow_with_trainable_blocks():
    model = build_model(resnet_cfg(head_units=32), (32, 32, 3), N_CLASSES)
    backbone = get_backbone(model)
    head = 2048 * 32 + 32 + 32 * N_CLASSES + N_CLASSES
    counts = {}
    for n in (0, 1, 3, 16):
        set_trainable_blocks(model, n)
        top = tuple(f"{block}_" for block in RESNET50_BLOCKS[len(RESNET50_BLOCKS) - n :])
        unfrozen = [
            layer
            for layer in backbone.layers
            if n and layer.name.startswith(top) and not isinstance(layer, keras.layers.BatchNormalization)
        ]
        counts[n] = n_params(model.trainable_weights)
        assert counts[n] == head + n_params(w for layer in unfrozen for w in layer.weights)
    # conv5_block3 alone: 1x1 2048->512, 3x3 512->512, 1x1 512->2048, each with a bias
    assert counts[1] - head == (2048 * 512 + 512) + (9 * 512 * 512 + 512) + (512 * 2048 + 2048)
    assert counts[0] < counts[1] < counts[3] < counts[16]
    # Only the stem convolution and BatchNorm stay frozen with every block unfrozen.
    assert counts[16] == head + n_params(backbone.weights) - n_params(backbone.get_layer("conv1_conv").weights) - sum(
        n_params(layer.weights) for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization)
    )
    # build_model applies the configured count
    keras.backend.clear_session()
    assert (
        n_params(build_model(resnet_cfg(head_units=32, trainable_blocks=3), (32, 32, 3), 10).trainable_weights)
        == (counts[3])
    )


def test_trainable_layers_counts_backbone_layers_from_the_top_and_overrides_blocks():
    model = build_model(resnet_cfg(trainable_blocks=3, trainable_layers=5), (32, 32, 3), N_CLASSES)
    backbone = get_backbone(model)
    head = 2048 * 8 + 8 + 8 * N_CLASSES + N_CLASSES
    # the last 5 layers: conv5_block3_3_conv, _3_bn (kept frozen), _add, _out, avg_pool
    assert [layer.name for layer in backbone.layers if layer.trainable] == [
        "conv5_block3_3_conv",
        "conv5_block3_add",
        "conv5_block3_out",
        "avg_pool",
    ]
    assert n_params(model.trainable_weights) == head + 512 * 2048 + 2048
    set_trainable_layers(model, 0)
    assert n_params(model.trainable_weights) == head


@pytest.mark.parametrize(
    "cfg, shape, message",
    [
        (
            mobilenet_cfg(trainable_blocks=14),
            (32, 32, 3),
            "model.transfer.trainable_blocks: must be 0..13 for MobileNet",
        ),
        (
            mobilenet_cfg(trainable_layers=87),
            (32, 32, 3),
            "model.transfer.trainable_layers: must be 0..86 for MobileNet",
        ),
        (resnet_cfg(backbone="ResNet5O"), (32, 32, 3), "model.transfer.backbone: not a keras.applications model"),
        (resnet_cfg(backbone="ResNet50", alpha=0.5), (32, 32, 3), "model.transfer.alpha: ResNet50 has no width"),
        (resnet_cfg(), (32, 32, 1), "model.channels: ResNet50 needs 3-channel images, got 1"),
    ],
)
def test_bad_transfer_settings_give_one_line_config_errors(cfg, shape, message):
    with pytest.raises(ConfigError) as err:
        build_model(cfg, shape, N_CLASSES)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_fine_tuning_updates_unfrozen_convolutions_but_never_batchnorm():
    model = build_model(resnet_cfg(), (32, 32, 3), N_CLASSES)
    backbone = get_backbone(model)
    watched = ["conv5_block3_2_conv", "conv5_block2_1_conv", "conv5_block1_2_conv", "conv2_block1_1_conv"]
    bns = [layer for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization)]
    before = {name: backbone.get_layer(name).kernel.numpy().copy() for name in watched}
    bn_before = [w.numpy().copy() for layer in bns for w in layer.weights]
    x, y = images(8), np.arange(8) % N_CLASSES

    def fit(n_blocks: int) -> None:
        set_trainable_blocks(model, n_blocks)  # then recompile, as the trainer does between phases
        model.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy", jit_compile=False)
        model.fit(x, y, batch_size=4, epochs=1, verbose=0)

    fit(0)  # phase 1: head only
    assert all(np.array_equal(backbone.get_layer(name).kernel.numpy(), before[name]) for name in watched)
    fit(2)  # phase 2: conv5_block2 and conv5_block3
    changed = {name: not np.array_equal(backbone.get_layer(name).kernel.numpy(), before[name]) for name in watched}
    assert changed == {
        "conv5_block3_2_conv": True,
        "conv5_block2_1_conv": True,
        "conv5_block1_2_conv": False,
        "conv2_block1_1_conv": False,
    }
    bn_after = [w.numpy() for layer in bns for w in layer.weights]  # gamma, beta, moving mean and variance
    assert all(np.array_equal(a, b) for a, b in zip(bn_before, bn_after, strict=True))


def test_split_at_boundary_composes_to_the_model():
    model = build_model(resnet_cfg(trainable_blocks=2), (32, 32, 3), N_CLASSES)
    frozen, top = split_at_boundary(model, 2)
    x = images(3)
    activations = frozen(x)
    assert activations.shape == (3, 1, 1, 2048)  # conv5_block1_out
    np.testing.assert_allclose(top(activations), model(x), atol=1e-6)
    assert not frozen.trainable_weights
    assert n_params(top.trainable_weights) == n_params(model.trainable_weights)


def test_backbone_loads_a_local_weights_file(tmp_path):
    reference = keras.applications.MobileNet(
        alpha=0.25, include_top=False, weights=None, input_shape=(32, 32, 3), pooling="avg"
    )
    reference.save_weights(tmp_path / "backbone.weights.h5")
    model = build_model(mobilenet_cfg(weights=str(tmp_path / "backbone.weights.h5")), (32, 32, 3), N_CLASSES)
    features, _ = split_at_boundary(model, 0)  # image -> pooled backbone features
    x = images(2)
    np.testing.assert_array_equal(features(x), reference(ImagePreprocessing("MobileNet")(x)))


def test_missing_weights_file_is_a_one_line_error(tmp_path):
    with pytest.raises(WeightsUnavailable, match=r"^model\.transfer\.weights: weights file not found: .*missing\.h5"):
        build_model(mobilenet_cfg(weights=str(tmp_path / "missing.h5")), (32, 32, 3), N_CLASSES)
    assert issubclass(WeightsUnavailable, ValueError)


@pytest.mark.skipif(not MOBILENET_WEIGHTS.is_file(), reason=f"real ImageNet weights not found at {MOBILENET_WEIGHTS}")
def test_pretrained_imagenet_weights_load_and_change_the_outputs():
    x = images(2, 64)
    pretrained = build_model(mobilenet_cfg(weights=str(MOBILENET_WEIGHTS)), (64, 64, 3), N_CLASSES)
    keras.utils.set_random_seed(0)
    random_init = build_model(mobilenet_cfg(), (64, 64, 3), N_CLASSES)
    reference = keras.applications.MobileNet(
        alpha=0.25, include_top=False, weights=None, input_shape=(224, 224, 3), pooling="avg"
    )
    reference.load_weights(MOBILENET_WEIGHTS)
    for ours, theirs in zip(get_backbone(pretrained).weights, reference.weights, strict=True):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    assert not np.allclose(pretrained(x), random_init(x), atol=1e-3)


def test_imagenet_download_failure_is_fast_and_one_line(monkeypatch):
    def offline(*args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", offline)
    start = time.monotonic()
    try:
        build_model(resnet_cfg(weights="imagenet"), (32, 32, 3), N_CLASSES)
    except WeightsUnavailable as err:
        assert str(err) == (
            "model.transfer.weights: ImageNet weights for ResNet50 could not be downloaded "
            "([Errno -2] Name or service not known); give a local .h5 path or null"
        )
    else:
        pytest.skip("ResNet50 ImageNet weights are already in the Keras cache")
    assert time.monotonic() - start < 60  # no retries, no wait: what time it takes is building ResNet50


def test_imagenet_download_from_a_silent_host_times_out(monkeypatch):
    server = socket.create_server(("127.0.0.1", 0))  # accepts connections, never answers
    port = server.getsockname()[1]
    threading.Thread(target=lambda: [server.accept() for _ in range(3)], daemon=True).start()
    real_getaddrinfo = socket.getaddrinfo
    monkeypatch.setattr(
        socket, "getaddrinfo", lambda host, _port, *a, **k: real_getaddrinfo("127.0.0.1", port, *a, **k)
    )
    monkeypatch.setattr(keras_applications, "DOWNLOAD_TIMEOUT_S", 0.5)
    start = time.monotonic()
    try:
        build_model(resnet_cfg(weights="imagenet"), (32, 32, 3), N_CLASSES)
    except WeightsUnavailable as err:
        assert "could not be downloaded (" in str(err) and "timed out" in str(err)
    else:
        pytest.skip("ResNet50 ImageNet weights are already in the Keras cache")
    finally:
        server.close()
    # Without the bound the download would wait on the silent host for good; 60 s leaves building ResNet50 room on
    # a loaded machine (10 s was missed at a load average of 10).
    assert time.monotonic() - start < 60
    assert socket.getdefaulttimeout() is None  # the bound is lifted again
