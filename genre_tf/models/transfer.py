"""The transfer family: a pretrained backbone under a new softmax head, partly or wholly frozen.

The backbone is a nested model called with `training=False`, so its BatchNorm layers always normalise with
their pretrained statistics. The "preprocess" layer in front of it records which backbone it is, so a loaded
model still knows its source (`backbone_source`).

How much of it trains reduces to one rule: every backbone layer from some index up trains, BatchNorm excepted.
`trainable_blocks=n` starts at the first layer of the n-th block from the top (blocks as the source names
them), so layers above the last block such as ResNetV2's `post_bn` go with the top block.
`trainable_layers=k` starts at `len(backbone.layers) - k`: the last k entries of `backbone.layers`, weightless
ones (ReLU, Add, padding, pooling) included, as in the TensorFlow fine-tuning tutorial's `fine_tune_at`; when
set it overrides `trainable_blocks`.

The boundary between the frozen bottom and the trainable top (`split_at_boundary`, whose activations
genre_tf.training.boundary caches) is every tensor a frozen layer produces and a trainable one reads: one for a chain
backbone, several for a DAG one such as musicnn, whose back-end reads the front-end and each mid-end.

Two-phase schedule for the trainer: `set_trainable_blocks(model, 0)`, compile, fit the head; then
`apply_trainable(model, cfg)`, compile again at a lower learning rate (Keras reads `trainable` when compiling), fit.
"""

from __future__ import annotations

import re
from pathlib import Path

import keras

from genre_tf.config import ConfigError, ModelConfig, TransferConfig
from genre_tf.features.representations import read_by
from genre_tf.models.backbone import MEL_IMAGE, BackboneSource
from genre_tf.models.keras_applications import KerasApplication
from genre_tf.models.musicnn import MUSICNN_MODELS, Musicnn


def backbone_source(name: str) -> BackboneSource:
    """The source of a backbone by its name: the one place that branches on it."""
    return Musicnn(name) if name in MUSICNN_MODELS else KerasApplication(name)


def build_transfer(cfg: TransferConfig, input_shape: tuple[int, ...], n_classes: int) -> keras.Model:
    """Preprocessing, backbone (training=False), Dropout + Dense(head_units) + Dropout + softmax; not compiled."""
    source = backbone_source(cfg.backbone)
    backbone = source.build(cfg, tuple(input_shape))
    inputs = keras.Input(shape=input_shape, name=source.input)
    x = source.preprocessing()(inputs)
    x = backbone(x, training=False) if cfg.batch_norm == "frozen" else backbone(x)
    x = keras.layers.Dropout(cfg.dropout, name="head_dropout")(x)
    l2 = keras.regularizers.L2(cfg.l2) if cfg.l2 else None
    if cfg.head_units:
        x = keras.layers.Dense(cfg.head_units, activation="relu", kernel_regularizer=l2, name="head_dense")(x)
        x = keras.layers.Dropout(cfg.dropout, name="head_dense_dropout")(x)
    outputs = keras.layers.Dense(
        n_classes, activation="softmax", dtype="float32", kernel_regularizer=l2, name="predictions"
    )(x)
    model = keras.Model(inputs, outputs, name=f"transfer_{cfg.backbone.lower()}")
    apply_trainable(model, cfg)
    return model


def check_transfer(cfg: ModelConfig) -> None:
    """Track level is the linear probe: a softmax layer on the mean of a frozen backbone's cached features."""
    t = cfg.transfer
    if cfg.level != "track":
        return
    frozen = t.trainable_blocks == 0 and t.trainable_layers is None and t.batch_norm == "frozen"
    if not (frozen and t.head_units == 0 and t.cache_boundary):
        raise ConfigError(
            "model.level",
            "track for transfer is the linear probe: needs trainable_blocks 0, head_units 0, cache_boundary true",
        )


def describe_transfer(cfg: ModelConfig) -> str:
    """Backbone, weights, what trains and the input size: what tells transfer runs apart."""
    t = cfg.transfer
    named = t.weights is None or t.weights in ("imagenet", "pretrained")
    weights = "random" if t.weights is None else t.weights if named else Path(t.weights).name
    unfrozen = f"{t.trainable_layers} layers" if t.trainable_layers is not None else f"{t.trainable_blocks} blocks"
    size = "" if read_by(cfg) != MEL_IMAGE else f", {cfg.image_size[0]}x{cfg.image_size[1]}"
    batch_norm = ", BatchNorm trained" if t.batch_norm == "train" else ""
    probe = "linear probe on the track's mean embedding, " if cfg.level == "track" else ""
    return f"{probe}{t.backbone} ({weights}), {unfrozen} trainable{batch_norm}{size}"


def get_backbone(model: keras.Model) -> keras.Model:
    """The nested backbone of a model built by build_transfer."""
    return next(layer for layer in model.layers if isinstance(layer, keras.Model))


def backbone_name(model: keras.Model) -> str:
    """The backbone's name ("ResNet50"), as recorded by the preprocess layer."""
    return model.get_layer("preprocess").backbone


def backbone_blocks(model: keras.Model) -> list[str]:
    """Block names of the backbone, bottom to top; [] where its block structure is not known here."""
    return list(dict.fromkeys(name for name in _layer_blocks(model) if name))


def _layer_blocks(model: keras.Model) -> list[str | None]:
    """The block each backbone layer belongs to, or None (stem, pooling, unknown families)."""
    pattern = backbone_source(backbone_name(model)).block_pattern
    matches = [re.match(pattern, layer.name) if pattern else None for layer in get_backbone(model).layers]
    return [m.group(1) if m else None for m in matches]


def _block_start(model: keras.Model, n: int) -> int:
    """Index in backbone.layers of the lowest layer of the top `n` blocks."""
    blocks = backbone_blocks(model)
    if not 0 <= n <= len(blocks):
        hint = "" if blocks else " (its blocks are not known here; use model.transfer.trainable_layers)"
        raise ConfigError(
            "model.transfer.trainable_blocks", f"must be 0..{len(blocks)} for {backbone_name(model)}, got {n}{hint}"
        )
    return _layer_blocks(model).index(blocks[-n]) if n else len(get_backbone(model).layers)


def _layers_start(model: keras.Model, n: int) -> int:
    top = len(get_backbone(model).layers) - 1  # the InputLayer has nothing to train
    if not 0 <= n <= top:
        raise ConfigError("model.transfer.trainable_layers", f"must be 0..{top} for {backbone_name(model)}, got {n}")
    return top + 1 - n


def _unfreeze_from(backbone: keras.Model, start: int, train_batch_norm: bool = False) -> None:
    backbone.trainable = True  # per-layer flags only count inside a trainable container
    for i, layer in enumerate(backbone.layers):
        # BatchNorm stays frozen even in unfrozen blocks unless asked: small fine-tuning batches would wreck its
        # pretrained statistics.
        batch_norm = isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = i >= start and (train_batch_norm or not batch_norm)


def set_trainable_blocks(model: keras.Model, n: int, train_batch_norm: bool = False) -> None:
    """Train the head and the top `n` backbone blocks (BatchNorm excepted unless asked); compile again afterwards."""
    _unfreeze_from(get_backbone(model), _block_start(model, n), train_batch_norm)


def set_trainable_layers(model: keras.Model, n: int, train_batch_norm: bool = False) -> None:
    """Train the head and the last `n` entries of backbone.layers (BatchNorm excepted unless asked); compile again."""
    _unfreeze_from(get_backbone(model), _layers_start(model, n), train_batch_norm)


def apply_trainable(model: keras.Model, cfg: TransferConfig) -> None:
    """Set backbone trainability from the config: trainable_layers when set, else trainable_blocks."""
    train_batch_norm = cfg.batch_norm == "train"
    if cfg.trainable_layers is not None:
        set_trainable_layers(model, cfg.trainable_layers, train_batch_norm)
    else:
        set_trainable_blocks(model, cfg.trainable_blocks, train_batch_norm)


def boundary_tensors(model: keras.Model, trainable_blocks: int) -> list[keras.KerasTensor]:
    """Backbone tensors that the top `trainable_blocks` blocks read from the frozen part, in backbone layer order.

    A chain backbone (ResNet, MobileNet) hands one tensor over, the output of the layer below the lowest trainable
    block; a DAG backbone such as musicnn, whose back-end reads the front-end and every mid-end, hands several.
    With no block trainable the cut is at the backbone's (pooled) output.
    """
    backbone = get_backbone(model)
    start = _block_start(model, trainable_blocks)
    # backbone.layers is backbone.operations (topological: producers before consumers) less the operations that
    # are not layers, such as the `x + 3.0` of MobileNetV3's hard-swish; those go with the layers they follow.
    operations = backbone.operations
    cut = operations.index(backbone.layers[start]) if start < len(backbone.layers) else len(operations)
    index = {id(operation): i for i, operation in enumerate(operations)}
    # Keras 3 keeps a functional model's call events (Node: operation, input tensors) by depth, and each tensor's
    # producer in `_keras_history`; there is no public API for either.
    nodes = [node for depth in backbone._nodes_by_depth.values() for node in depth]
    read_above = [tensor for node in nodes if index[id(node.operation)] >= cut for tensor in node.input_tensors]
    crossing = {}
    for tensor in [*read_above, *backbone.outputs]:  # an output computed below the cut is handed over too
        producer, node_index, tensor_index = tensor._keras_history
        if index[id(producer)] < cut:
            crossing[(index[id(producer)], node_index, tensor_index)] = tensor
    return [crossing[position] for position in sorted(crossing)]


def _tensor_name(tensor: keras.KerasTensor) -> str:
    """The producing layer's name, with the output index where that layer has several outputs."""
    producer, node_index, tensor_index = tensor._keras_history
    several = len(producer._inbound_nodes[node_index].outputs) > 1
    return f"{producer.name}:{tensor_index}" if several else producer.name


def boundary_layer_name(model: keras.Model, trainable_blocks: int) -> str:
    """The name of the cut: the boundary tensors' producing layers, joined by "+" where there are several."""
    return "+".join(_tensor_name(tensor) for tensor in boundary_tensors(model, trainable_blocks))


def split_at_boundary(model: keras.Model, trainable_blocks: int) -> tuple[keras.Model, keras.Model]:
    """(frozen, top): input -> boundary activations, and boundary activations -> probabilities; weights shared.

    Like any Keras model, `frozen` outputs a single tensor where the boundary is one and a list where it is
    several, and `top` then takes one input per boundary tensor, in `boundary_tensors` order.
    """
    backbone = get_backbone(model)
    tensors = boundary_tensors(model, trainable_blocks)
    crossing = tensors[0] if len(tensors) == 1 else tensors
    images = keras.Input(shape=model.input_shape[1:], name=model.input.name)
    below = keras.Model(backbone.input, crossing, name=f"{backbone.name}_frozen")
    frozen = keras.Model(images, below(model.get_layer("preprocess")(images), training=False), name="frozen")
    if len(tensors) == 1:
        activations = keras.Input(shape=tensors[0].shape[1:], name="boundary_activations")
    else:
        activations = [keras.Input(shape=t.shape[1:], name=f"boundary_activations_{i}") for i, t in enumerate(tensors)]
    x = activations
    if trainable_blocks:
        above = keras.Model(crossing, backbone.output, name=f"{backbone.name}_top")
        x = above(x, training=False)
    for layer in model.layers[model.layers.index(backbone) + 1 :]:  # the head is a plain chain
        x = layer(x)
    return frozen, keras.Model(activations, x, name="top")
