"""keras.applications backbones (ResNet50 by default, MobileNet, EfficientNet, ...) for the transfer family.

What is specific to them: finding the constructor by name, ImageNet or local weights (with a clear error where
the download is impossible), the ImageNet input preprocessing of each module, and the layer-name pattern of
each module's blocks (a ResNet residual block `conv{2..5}_block{k}`, a MobileNet `conv_dw_k`/`conv_pw_k`
pair, ...).
"""

from __future__ import annotations

import contextlib
import inspect
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import keras
from keras import ops

from genre_tf.config import ConfigError, TransferConfig
from genre_tf.models.backbone import BackboneSource, WeightsUnavailable, load_local_weights

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


class KerasApplication(BackboneSource):
    """A keras.applications model without its top, average-pooled."""

    def build(self, cfg: TransferConfig, input_shape: tuple[int, ...]) -> keras.Model:
        if input_shape[-1] != 3:
            raise ConfigError("model.channels", f"{self.name} needs 3-channel images, got {input_shape[-1]}")
        constructor = _constructor(self.name)
        # No `name=`: EfficientNetV2 constructors read it as their variant key.
        kwargs = {"include_top": False, "input_shape": tuple(input_shape), "pooling": "avg"}
        if "alpha" in inspect.signature(constructor).parameters:
            kwargs["alpha"] = cfg.alpha
        elif cfg.alpha != 1.0:
            raise ConfigError("model.transfer.alpha", f"{self.name} has no width multiplier; leave alpha at 1.0")
        if cfg.weights in ("imagenet", "pretrained"):
            return _imagenet_backbone(constructor, self.name, kwargs)
        backbone = constructor(weights=None, **kwargs)
        if cfg.weights is not None:
            load_local_weights(backbone, self.name, Path(cfg.weights).expanduser())
        return backbone

    def preprocessing(self) -> keras.layers.Layer:
        return ImagePreprocessing(self.name, name="preprocess")

    @property
    def block_pattern(self) -> str | None:
        return BLOCK_PATTERNS.get(_module(self.name))


@keras.saving.register_keras_serializable(package="genre_tf")
class ImagePreprocessing(keras.layers.Layer):
    """Maps images in [0, 1] to what a keras.applications backbone expects (its preprocess_input of 0..255)."""

    def __init__(self, backbone: str = "ResNet50", **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone
        self.mode = PREPROCESSING[_module(backbone)]

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


def _constructor(name: str) -> Callable[..., keras.Model]:
    constructor = getattr(keras.applications, name, None)
    if not name[:1].isupper() or not callable(constructor):
        raise ConfigError("model.transfer.backbone", f"not a keras.applications model: {name!r}")
    return constructor


def _module(name: str) -> str:
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
