"""What the transfer family asks of a backbone source (keras.applications, musicnn, ...), and its weights error.

A source says how to build its network with the configured weights, which layer maps the model input to what
the network expects, how its layers group into blocks (the unit `trainable_blocks` counts), and which input
representation it reads. The head, the trainable-block rule and the boundary split are the family's
(`genre_tf.models.transfer`), written once for every source.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import keras

from genre_tf.config import ConfigError, TransferConfig
from genre_tf.features.representations import MEL_IMAGE, MUSICNN_PATCH

__all__ = ["MEL_IMAGE", "MUSICNN_PATCH", "BackboneSource", "WeightsUnavailable", "load_local_weights"]


class WeightsUnavailable(ConfigError):
    """Backbone weights that cannot be had: a download impossible, or a local file missing or unreadable."""

    def __init__(self, problem: str):
        super().__init__("model.transfer.weights", problem)


class BackboneSource(ABC):
    """One kind of pretrained network, named by `model.transfer.backbone`."""

    input: str = MEL_IMAGE  # the input representation the source reads

    def __init__(self, name: str):
        self.name = name

    @abstractmethod
    def build(self, cfg: TransferConfig, input_shape: tuple[int, ...]) -> keras.Model:
        """The network without its top, pooled to one vector per input, with the configured weights."""

    @abstractmethod
    def preprocessing(self) -> keras.layers.Layer:
        """The layer (named "preprocess") that maps model inputs to what the network expects."""

    @property
    @abstractmethod
    def block_pattern(self) -> str | None:
        """Regex whose first group names the block of a backbone layer; None where blocks are not known."""


def load_local_weights(backbone: keras.Model, name: str, path: Path) -> None:
    """Load a local .h5 / .weights.h5 file into a backbone; any problem is one WeightsUnavailable line."""
    if not path.is_file():
        raise WeightsUnavailable(f"weights file not found: {path}; give a local .h5 path, pretrained or null")
    if path.suffix != ".h5":
        raise WeightsUnavailable(f"must be an .h5 or .weights.h5 file, got {path}")
    try:
        backbone.load_weights(str(path))
    except Exception as err:  # shape or layer mismatches arrive as assorted multi-line errors
        first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise WeightsUnavailable(f"could not load {path} into {name}: {first_line}") from None
