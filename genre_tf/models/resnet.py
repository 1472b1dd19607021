"""Transfer learning: a keras.applications backbone (ResNet50 by default) under a new softmax head.

The backbone is a nested model called with `training=False`, so its BatchNorm layers always normalise with
their ImageNet statistics. The "preprocess" layer in front of it records which keras.applications model it is.

How much of it trains reduces to one rule: every backbone layer from some index up trains, BatchNorm excepted.
`trainable_blocks=n` starts at the first layer of the n-th block from the top (a ResNet residual block
`conv{2..5}_block{k}`, a MobileNet `conv_dw_k`/`conv_pw_k` pair, ...), so layers above the last block such as
ResNetV2's `post_bn` go with the top block. `trainable_layers=k` starts at `len(backbone.layers) - k`: the last k
entries of `backbone.layers`, weightless ones (ReLU, Add, padding, pooling) included, as in the TensorFlow
fine-tuning tutorial's `fine_tune_at`; when set it overrides `trainable_blocks`.

Two-phase schedule for the trainer: `set_trainable_blocks(model, 0)`, compile, fit the head; then
`apply_trainable(model, cfg)`, compile again at a lower learning rate (Keras reads `trainable` when compiling), fit.
"""

from __future__ import annotations

import contextlib
import inspect
import re
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import keras
from keras import ops

from genre_tf.config import ConfigError, ResnetConfig

DOWNLOAD_TIMEOUT_S = 15.0  # per socket wait: an unreachable host fails in seconds, a slow download still finishes

# keras.applications module -> what its preprocess_input does to 0..255 RGB ("raw": the model rescales itself).
PREPROCESSING = {
    "resnet": "caffe",
    "vgg16": "caffe",
    "vgg19": "caffe",
    "resnet_v2": "tf",
    "mobilenet": "tf",
    "mobilenet_v2": "tf",
    "inception_v3": "tf",
    "inception_resnet_v2": "tf",
    "xception": "tf",
    "nasnet": "tf",
    "densenet": "torch",
    "efficientnet": "raw",
    "efficientnet_v2": "raw",
    "convnext": "raw",
    "mobilenet_v3": "raw",
}

# keras.applications module -> regex whose first group names the block a layer belongs to.
BLOCK_PATTERNS = {
    "resnet": r"(conv\d+_block\d+)_",  # ResNet50: conv2 x3, conv3 x4, conv4 x6, conv5 x3 = 16 residual blocks
    "resnet_v2": r"(conv\d+_block\d+)_",
    "densenet": r"(conv\d+_block\d+)_",
    "mobilenet": r"(?:conv_pad|conv_dw|conv_pw)_(\d+)",  # 13 depthwise + pointwise pairs
    "mobilenet_v2": r"(expanded_conv|block_\d+)_",
    "mobilenet_v3": r"(expanded_conv(?:_\d+)?)_",
    "efficientnet": r"(block\d+[a-z])_",
    "efficientnet_v2": r"(block\d+[a-z])_",
    "vgg16": r"(block\d+)_",
    "vgg19": r"(block\d+)_",
    "xception": r"(block\d+)_",
}

_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)


class WeightsUnavailable(ConfigError):
    """Backbone weights that cannot be had: ImageNet not downloadable, or a local file missing or unreadable."""

    def __init__(self, problem: str):
        super().__init__("model.resnet.weights", problem)


@keras.saving.register_keras_serializable(package="genre_tf")
class ImagePreprocessing(keras.layers.Layer):
    """Maps images in [0, 1] to what a keras.applications backbone expects (its preprocess_input of 0..255)."""

    def __init__(self, backbone: str = "ResNet50", **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone
        self.mode = PREPROCESSING[_family(backbone)]

    def call(self, images):
        if self.mode == "caffe":  # RGB -> BGR, 0..255, minus the ImageNet channel means
            return ops.flip(images, axis=-1) * 255.0 - ops.convert_to_tensor(_CAFFE_MEAN_BGR, self.compute_dtype)
        if self.mode == "tf":
            return images * 2.0 - 1.0
        if self.mode == "torch":
            mean = ops.convert_to_tensor(_TORCH_MEAN, self.compute_dtype)
            return (images - mean) / ops.convert_to_tensor(_TORCH_STD, self.compute_dtype)
        return images * 255.0

    def get_config(self) -> dict:
        return {**super().get_config(), "backbone": self.backbone}


def build_resnet(cfg: ResnetConfig, input_shape: tuple[int, ...], n_classes: int) -> keras.Model:
    """Preprocessing, backbone (training=False), Dropout + Dense(head_units) + Dropout + softmax; not compiled."""
    if input_shape[-1] != 3:
        raise ConfigError("model.channels", f"{cfg.backbone} needs 3-channel images, got {input_shape[-1]}")
    backbone = build_backbone(cfg, input_shape)
    inputs = keras.Input(shape=input_shape, name="mel_image")
    x = ImagePreprocessing(cfg.backbone, name="preprocess")(inputs)
    x = backbone(x, training=False)
    x = keras.layers.Dropout(cfg.dropout, name="head_dropout")(x)
    if cfg.head_units:
        x = keras.layers.Dense(cfg.head_units, activation="relu", name="head_dense")(x)
        x = keras.layers.Dropout(cfg.dropout, name="head_dense_dropout")(x)
    outputs = keras.layers.Dense(n_classes, activation="softmax", dtype="float32", name="predictions")(x)
    model = keras.Model(inputs, outputs, name=f"transfer_{cfg.backbone.lower()}")
    apply_trainable(model, cfg)
    return model


def build_backbone(cfg: ResnetConfig, input_shape: tuple[int, ...]) -> keras.Model:
    """The keras.applications model without top, average-pooled, with the configured weights."""
    constructor = _constructor(cfg.backbone)
    # No `name=`: EfficientNetV2 constructors read it as their variant key.
    kwargs = {"include_top": False, "input_shape": tuple(input_shape), "pooling": "avg"}
    if "alpha" in inspect.signature(constructor).parameters:
        kwargs["alpha"] = cfg.alpha
    elif cfg.alpha != 1.0:
        raise ConfigError("model.resnet.alpha", f"{cfg.backbone} has no width multiplier; leave alpha at 1.0")
    if cfg.weights == "imagenet":
        return _imagenet_backbone(constructor, cfg.backbone, kwargs)
    backbone = constructor(weights=None, **kwargs)
    if cfg.weights is not None:
        _load_local_weights(backbone, cfg.backbone, Path(cfg.weights).expanduser())
    return backbone


def _constructor(name: str) -> Callable[..., keras.Model]:
    constructor = getattr(keras.applications, name, None)
    if not name[:1].isupper() or not callable(constructor):
        raise ConfigError("model.resnet.backbone", f"not a keras.applications model: {name!r}")
    return constructor


def _family(name: str) -> str:
    """keras.applications module of a backbone: "ResNet50" -> "resnet"."""
    return _constructor(name).__module__.rsplit(".", 1)[-1]


def _imagenet_backbone(constructor: Callable[..., keras.Model], name: str, kwargs: dict) -> keras.Model:
    try:
        with _socket_timeout(DOWNLOAD_TIMEOUT_S):
            return constructor(weights="imagenet", **kwargs)
    except ValueError:
        raise  # a bad input shape or alpha, or a corrupt download: Keras already says which
    except Exception as err:  # keras.utils.get_file raises a bare Exception for URL errors
        reason = (str(err).rsplit(" -- ", 1)[-1].strip().splitlines() or [type(err).__name__])[0]
        raise WeightsUnavailable(
            f"ImageNet weights for {name} could not be downloaded ({reason}); give a local .h5 path or null"
        ) from None


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    """Bound every socket wait (urllib's default is none), unless the process already set a bound."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(previous or seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _load_local_weights(backbone: keras.Model, name: str, path: Path) -> None:
    if not path.is_file():
        raise WeightsUnavailable(f"weights file not found: {path}; give a local .h5 path, imagenet or null")
    if path.suffix != ".h5":
        raise WeightsUnavailable(f"must be an .h5 or .weights.h5 file, got {path}")
    try:
        backbone.load_weights(str(path))
    except Exception as err:  # shape or layer mismatches arrive as assorted multi-line errors
        first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise WeightsUnavailable(f"could not load {path} into {name}: {first_line}") from None


def get_backbone(model: keras.Model) -> keras.Model:
    """The nested backbone of a model built by build_resnet."""
    return next(layer for layer in model.layers if isinstance(layer, keras.Model))


def backbone_name(model: keras.Model) -> str:
    """The keras.applications name of the backbone ("ResNet50"), as recorded by the preprocess layer."""
    return model.get_layer("preprocess").backbone


def backbone_blocks(model: keras.Model) -> list[str]:
    """Block names of the backbone, bottom to top; [] where its block structure is not known here."""
    return list(dict.fromkeys(name for name in _layer_blocks(model) if name))


def _layer_blocks(model: keras.Model) -> list[str | None]:
    """The block each backbone layer belongs to, or None (stem, pooling, unknown families)."""
    pattern = BLOCK_PATTERNS.get(_family(backbone_name(model)))
    matches = [re.match(pattern, layer.name) if pattern else None for layer in get_backbone(model).layers]
    return [m.group(1) if m else None for m in matches]


def _block_start(model: keras.Model, n: int) -> int:
    """Index in backbone.layers of the lowest layer of the top `n` blocks."""
    blocks = backbone_blocks(model)
    if not 0 <= n <= len(blocks):
        hint = "" if blocks else " (its blocks are not known here; use model.resnet.trainable_layers)"
        raise ConfigError(
            "model.resnet.trainable_blocks", f"must be 0..{len(blocks)} for {backbone_name(model)}, got {n}{hint}"
        )
    return _layer_blocks(model).index(blocks[-n]) if n else len(get_backbone(model).layers)


def _layers_start(model: keras.Model, n: int) -> int:
    top = len(get_backbone(model).layers) - 1  # the InputLayer has nothing to train
    if not 0 <= n <= top:
        raise ConfigError("model.resnet.trainable_layers", f"must be 0..{top} for {backbone_name(model)}, got {n}")
    return top + 1 - n


def _unfreeze_from(backbone: keras.Model, start: int) -> None:
    backbone.trainable = True  # per-layer flags only count inside a trainable container
    for i, layer in enumerate(backbone.layers):
        # BatchNorm stays frozen even in unfrozen blocks: small fine-tuning batches would wreck its statistics.
        layer.trainable = i >= start and not isinstance(layer, keras.layers.BatchNormalization)


def set_trainable_blocks(model: keras.Model, n: int) -> None:
    """Train the head and the top `n` backbone blocks (BatchNorm excepted); compile again afterwards."""
    _unfreeze_from(get_backbone(model), _block_start(model, n))


def set_trainable_layers(model: keras.Model, n: int) -> None:
    """Train the head and the last `n` entries of backbone.layers (BatchNorm excepted); compile again afterwards."""
    _unfreeze_from(get_backbone(model), _layers_start(model, n))


def apply_trainable(model: keras.Model, cfg: ResnetConfig) -> None:
    """Set backbone trainability from the config: trainable_layers when set, else trainable_blocks."""
    if cfg.trainable_layers is not None:
        set_trainable_layers(model, cfg.trainable_layers)
    else:
        set_trainable_blocks(model, cfg.trainable_blocks)


def boundary_layer_name(model: keras.Model, trainable_blocks: int) -> str:
    """Backbone layer whose output feeds the lowest trainable block: where frozen activations can be cached."""
    return get_backbone(model).layers[_block_start(model, trainable_blocks) - 1].name


def split_at_boundary(model: keras.Model, trainable_blocks: int) -> tuple[keras.Model, keras.Model]:
    """(frozen, top): image -> boundary activations, and boundary activations -> probabilities; weights shared."""
    backbone = get_backbone(model)
    boundary = backbone.get_layer(boundary_layer_name(model, trainable_blocks))
    images = keras.Input(shape=model.input_shape[1:], name="mel_image")
    below = keras.Model(backbone.input, boundary.output, name=f"{backbone.name}_frozen")
    frozen = keras.Model(images, below(model.get_layer("preprocess")(images), training=False), name="frozen")
    activations = keras.Input(shape=boundary.output.shape[1:], name="boundary_activations")
    x = activations
    if trainable_blocks:
        above = keras.Model(boundary.output, backbone.output, name=f"{backbone.name}_top")
        x = above(x, training=False)
    for layer in model.layers[model.layers.index(backbone) + 1 :]:  # the head is a plain chain
        x = layer(x)
    return frozen, keras.Model(activations, x, name="top")
