"""Frozen-boundary cache for the transfer family: compute the frozen backbone's activations once, train above them.

With the bottom of the backbone frozen (its BatchNorm in inference mode) and no augmentation, the activations at
the boundary are the same every epoch. The boundary is every frozen tensor the trainable part reads: for a chain
backbone (ResNet, MobileNet) the output of the last frozen layer, for a DAG one such as musicnn, whose back-end
reads the front-end and every mid-end, several tensors (`transfer.boundary_tensors`). They are computed once per
split and saved as `<cache.dir>/boundary/<key>.npy` (one tensor) or `<key>.npz` (several, `arr_0`, `arr_1`, ...
in boundary order, one file so that an entry appears whole), and the trainable top (the unfrozen blocks and the
head) fits on them. The key hashes everything that decides the activations: the backbone, a digest of the frozen
weights (ImageNet, a local file and a seeded random init alike), the boundary layer(s), the input recipe (size,
channels, channel mode) and the ordered mel PNG paths of the split, which the feature cache makes
content-addressed. The head is not in the key, so epochs, resumed runs and tuner trials that share the boundary
share the file.

`top` shares its weights with the full model, so what it learns is the full model's: save and evaluate that.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from genre_tf import models
from genre_tf.config import ModelConfig
from genre_tf.config.console import Progress
from genre_tf.evaluation.pooling import group_means, track_groups
from genre_tf.extract.cache import atomic_file
from genre_tf.inputs import pipeline
from genre_tf.inputs.examples import SplitData, split_data
from genre_tf.inputs.recipe import InputRecipe
from genre_tf.models.transfer import backbone_name, boundary_layer_name, split_at_boundary

BOUNDARY_VERSION = "1"  # bump when the way activations are computed changes


@dataclass
class Boundary:
    """A transfer model cut where its frozen part ends; `spec` is what, besides the data, decides the activations."""

    frozen: keras.Model  # image -> boundary activations (a list where several), no trainable weights
    top: keras.Model  # boundary activations (one input each) -> probabilities, weights shared with the full model
    spec: dict

    @property
    def layer(self) -> str:
        return self.spec["boundary"]

    def key(self, input_paths: Sequence[str]) -> str:
        """Cache key of one split's activations: the spec plus the split's ordered (content-addressed) input paths."""
        payload = json.dumps({**self.spec, "mel_paths": [str(p) for p in input_paths]}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:32]


def weights_digest(model: keras.Model) -> str:
    """SHA-256 over the shapes and bytes of every weight of `model` (moving BatchNorm statistics included)."""
    digest = hashlib.sha256()
    for weight in model.weights:
        values = np.ascontiguousarray(keras.ops.convert_to_numpy(weight))
        digest.update(f"{values.dtype}{values.shape}".encode())
        digest.update(values.tobytes())
    return digest.hexdigest()


def cut_at_boundary(model: keras.Model, trainable_blocks: int, model_cfg: ModelConfig) -> Boundary:
    """Split a `build_model` transfer model below its top `trainable_blocks` blocks; 0 cuts at the pooled output."""
    frozen, top = split_at_boundary(model, trainable_blocks)
    spec = {
        "version": BOUNDARY_VERSION,
        "backbone": backbone_name(model),
        "weights": weights_digest(frozen),
        "boundary": boundary_layer_name(model, trainable_blocks),
        "input_shape": list(model.input_shape[1:]),
        "image_size": list(model_cfg.image_size),
        "channels": model_cfg.channels,
        "channel_mode": model_cfg.channel_mode,
        "dtype": ",".join(str(tensor.dtype) for tensor in frozen.outputs),
    }
    return Boundary(frozen, top, spec)


def boundary_features(
    frozen: keras.Model, data: SplitData, batch_size: int, cache_dir: Path, key: str, progress: bool = True
) -> np.ndarray | tuple[np.ndarray, ...]:
    """The frozen model's activations for every element of `data`, in order: loaded if cached, else computed once.

    One array per output of `frozen`, as a tuple where it has several.
    """
    several = len(frozen.outputs) > 1
    path = Path(cache_dir) / "boundary" / f"{key}.{'npz' if several else 'npy'}"
    if path.is_file():
        return _load_activations(path)

    activations = [np.empty((len(data), *t.shape[1:]), dtype=t.dtype) for t in frozen.outputs]
    batches = Progress(
        data.batches(batch_size) if len(data) else [],  # a file reader cannot be traced over no paths
        total=math.ceil(len(data) / batch_size),
        desc="boundary activations",
        unit="batch",
        disable=not progress,
    )
    start = 0
    for images, _ in batches:
        outputs = frozen.predict_on_batch(images)
        batch = [keras.ops.convert_to_numpy(output) for output in (outputs if several else [outputs])]
        for array, rows in zip(activations, batch, strict=True):
            array[start : start + len(rows)] = rows
        start += len(batch[0])
    with atomic_file(path) as f:  # streamed: no second in-memory copy of a large array
        if several:
            np.savez(f, *activations)
        else:
            np.save(f, activations[0], allow_pickle=False)
    return tuple(activations) if several else activations[0]


def _load_activations(path: Path) -> np.ndarray | tuple[np.ndarray, ...]:
    if path.suffix == ".npy":
        return np.load(path)
    with np.load(path) as arrays:
        return tuple(arrays[f"arr_{i}"] for i in range(len(arrays.files)))


def boundary_split(
    boundary: Boundary,
    frame: pd.DataFrame,
    recipe: InputRecipe,
    classes: list[str],
    batch_size: int,
    cache_dir: Path,
    progress: bool = True,
) -> SplitData:
    """`split_data` for `boundary.top`: element i -> (cached boundary activations, label), same order and tracks.

    Where the boundary is several tensors, element i holds the tuple of their activations, `top`'s inputs.
    """
    images = split_data(frame, recipe, classes, None)
    key = boundary.key(frame[recipe.column].tolist())
    activations = boundary_features(boundary.frozen, images, batch_size, cache_dir, key, progress)
    labels, track_ids = images.labels, images.track_ids
    if models.family(recipe.model).track_level(recipe.model):  # the probe: one mean embedding per track
        activations, labels, track_ids = track_means(activations, labels, track_ids)
    # table_loader gathers along the first axis only, so (n, H, W, C) activations load like (n, F) rows.
    return SplitData(pipeline.table_loader(activations, labels), labels, track_ids)


def track_means(
    activations: np.ndarray, labels: np.ndarray, track_ids: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each track's mean activation, label and id, tracks in first-seen order."""
    tracks, groups, first = track_groups(track_ids)
    return group_means(groups, len(tracks), activations).astype(activations.dtype), labels[first], tracks
