"""musicnn (Pons & Serra 2019) in Keras 3, with its weights converted from the `musicnn==0.1.0` wheel's checkpoints.

The network reads a (time, 96) log-mel patch (`genre_tf.features.musicnn_input`) and has three parts:
- front-end: a scalar input BatchNorm, then musically motivated convolutions, each max-pooled over frequency:
  two timbral ones spanning 7 frames x 38 or 67 mel bands (40% / 70% of 96), 204 filters each, and three
  temporal ones spanning 128, 64 or 32 frames x 1 band, 51 filters each: 561 features per frame;
- mid-end: three 7-frame convolutions of 64 filters over those features, the last two with residual connections;
- back-end: the front-end and mid-end features (561 + 3 x 64 = 753 per frame) max- and mean-pooled over time,
  batch-normalised, a 200-unit ReLU dense layer, batch-normalised (the "penultimate" features), 50 tag logits.
Every layer is time-convolutional up to the global pooling, so `frames=None` builds a model for any patch length,
and `shared_patches_network` computes the timbral convolutions of a clip's overlapping patches once.

Layer names start with their block (`MUSICNN_BLOCKS`), so trainable blocks are chosen by prefix. The original
TF1 code (the package's `models.py`) wrote the mid-end's convolutions as Conv2D over a (time, features, 1) map
with a kernel as wide as the features; here they are the equivalent Conv1D over (time, features).

The VGG variants in the wheel (MSD_vgg, MTT_vgg) are a different network (five 3x3 conv blocks pooled in time
and frequency, flattened into the logits): no mid-end, no penultimate layer or pooled features, and a fixed
187-frame input. They are not built here.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile
from pathlib import Path

import keras

from genre_tf.config import TransferConfig
from genre_tf.features.musicnn_input import LOG_SCALE, MUSICNN_MODELS, N_MELS, PATCH_FRAMES
from genre_tf.models.backbone import MUSICNN_PATCH, BackboneSource, WeightsUnavailable, load_local_weights

__all__ = [
    "MUSICNN_BLOCKS",
    "MUSICNN_MODELS",
    "Musicnn",
    "MusicnnLogCompression",
    "N_MELS",
    "PATCH_FRAMES",
    "TAGS",
    "CheckpointMismatch",
    "MusicnnWeightsUnavailable",
    "build_musicnn",
    "checkpoint_prefix",
    "convert_checkpoint",
    "load_musicnn",
    "musicnn_weights",
    "shared_patches_network",
]

MUSICNN_BLOCKS = ("frontend", "midend1", "midend2", "midend3", "backend")

TIMBRAL_BANDS = {"timbral74": int(0.4 * N_MELS), "timbral77": int(0.7 * N_MELS)}  # 38 and 67 mel bands
TEMPORAL_FRAMES = {"temporal128": 128, "temporal64": 64, "temporal32": 32}
TIMBRAL_FRAMES = 7  # the timbral kernels' length in time
TIMBRAL_EDGE = TIMBRAL_FRAMES // 2  # frames at each end of a patch whose timbral features read its padding
TIMBRAL_FILTERS = int(1.6 * 128)  # 204: the package's num_filt=1.6
TEMPORAL_FILTERS = int(1.6 * 32)  # 51
MIDEND_FILTERS = 64
MIDEND_KERNEL = 7
BACKEND_UNITS = 200
N_TAGS = 50
DROPOUT = 0.5

# Keras layer -> TF1 variable scope in the wheel's checkpoints. tf.compat.v1.layers numbered layers of a kind in
# the order the graph created them (models.py: input BN, f74, f77, s1, s2, s3, mid-end, back-end); the Keras
# weight names (kernel, bias, gamma, beta, moving_mean, moving_variance) are the same as TF1's.
CHECKPOINT_SCOPES = {
    "frontend_input_bn": "batch_normalization",
    "frontend_timbral74_conv": "conv2d",
    "frontend_timbral74_bn": "batch_normalization_1",
    "frontend_timbral77_conv": "conv2d_1",
    "frontend_timbral77_bn": "batch_normalization_2",
    "frontend_temporal128_conv": "conv2d_2",
    "frontend_temporal128_bn": "batch_normalization_3",
    "frontend_temporal64_conv": "conv2d_3",
    "frontend_temporal64_bn": "batch_normalization_4",
    "frontend_temporal32_conv": "conv2d_4",
    "frontend_temporal32_bn": "batch_normalization_5",
    "midend1_conv": "conv2d_5",
    "midend1_bn": "batch_normalization_6",
    "midend2_conv": "conv2d_6",
    "midend2_bn": "batch_normalization_7",
    "midend3_conv": "conv2d_7",
    "midend3_bn": "batch_normalization_8",
    "backend_pool_bn": "batch_normalization_9",
    "backend_dense": "dense",
    "backend_penultimate_bn": "batch_normalization_10",
    "backend_logits": "dense_1",
}
# Training state saved beside the weights: Adam's slots and step counters.
TRAINING_STATE_SUFFIXES = ("/Adam", "/Adam_1")
TRAINING_STATE_NAMES = ("beta1_power", "beta2_power", "global_step")

# Tag names in logit order, copied from the musicnn 0.1.0 package's configuration.py (MSD_LABELS, MTT_LABELS).
MSD_TAGS = [
    "rock", "pop", "alternative", "indie", "electronic", "female vocalists", "dance", "00s", "alternative rock",
    "jazz", "beautiful", "metal", "chillout", "male vocalists", "classic rock", "soul", "indie rock", "Mellow",
    "electronica", "80s", "folk", "90s", "chill", "instrumental", "punk", "oldies", "blues", "hard rock", "ambient",
    "acoustic", "experimental", "female vocalist", "guitar", "Hip-Hop", "70s", "party", "country",
    "easy listening", "sexy", "catchy", "funk", "electro", "heavy metal", "Progressive rock", "60s", "rnb",
    "indie pop", "sad", "House", "happy",
]  # fmt: skip
MTT_TAGS = [
    "guitar", "classical", "slow", "techno", "strings", "drums", "electronic", "rock", "fast", "piano", "ambient",
    "beat", "violin", "vocal", "synth", "female", "indian", "opera", "male", "singing", "vocals", "no vocals",
    "harpsichord", "loud", "quiet", "flute", "woman", "male vocal", "no vocal", "pop", "soft", "sitar", "solo",
    "man", "classic", "choir", "voice", "new age", "dance", "male voice", "female vocal", "beats", "harp", "cello",
    "no voice", "weird", "country", "metal", "female voice", "choral",
]  # fmt: skip
TAGS: dict[str, list[str]] = {"MSD_musicnn": MSD_TAGS, "MTT_musicnn": MTT_TAGS}


class MusicnnWeightsUnavailable(WeightsUnavailable):
    """The musicnn wheel, which holds the checkpoints, is not installed (or lacks the model)."""


class CheckpointMismatch(ValueError):
    """A checkpoint whose variables do not fit the Keras model one to one."""


def build_musicnn(model_name: str, frames: int | None = PATCH_FRAMES, dropout: float = DROPOUT) -> keras.Model:
    """Random-initialised musicnn on (frames, 96) log-mel patches; outputs logits, penultimate, mean_pool, max_pool.

    `dropout` is the back-end's rate in training (0.5 as trained); 0 for a backbone that must stay deterministic.
    """
    _check_name(model_name)
    patch = keras.Input(shape=(frames, N_MELS), name="log_mel")
    frontend_features = _frontend(patch)
    midend_features = _midend(frontend_features)
    features = keras.layers.Concatenate(name="backend_features")([frontend_features, *midend_features])
    outputs = _backend(features, dropout)
    return keras.Model(patch, outputs, name=model_name.lower())


def _frontend(patch: keras.KerasTensor) -> keras.KerasTensor:
    """Input BatchNorm, then timbral and temporal convolutions max-pooled over frequency: (time, 561)."""
    x = keras.layers.Reshape((-1, N_MELS, 1), name="frontend_expand")(patch)
    x = keras.layers.BatchNormalization(name="frontend_input_bn")(x)
    # Timbral kernels are 7 frames long: pad time by 3 each side so every frame keeps an output ("same" in time
    # only, as frequency is pooled away afterwards).
    edges = ((TIMBRAL_EDGE, TIMBRAL_EDGE), (0, 0))
    timbral_input = keras.layers.ZeroPadding2D(edges, name="frontend_timbral_pad")(x)
    timbral = [
        _pooled_conv(timbral_input, name, TIMBRAL_FILTERS, (TIMBRAL_FRAMES, bands))
        for name, bands in TIMBRAL_BANDS.items()
    ]
    temporal = [_temporal_conv(x, name, length) for name, length in TEMPORAL_FRAMES.items()]
    return keras.layers.Concatenate(name="frontend_features")(timbral + temporal)


def _temporal_conv(x: keras.KerasTensor, name: str, length: int) -> keras.KerasTensor:
    """A (length x 1) convolution with TF's "same" time padding, pooled over frequency."""
    # TF pads an even kernel's extra row after the input; explicit so every Keras backend pads the same way.
    before = (length - 1) // 2
    x = keras.layers.ZeroPadding2D(((before, length - 1 - before), (0, 0)), name=f"frontend_{name}_pad")(x)
    return _pooled_conv(x, name, TEMPORAL_FILTERS, (length, 1))


def _pooled_conv(x: keras.KerasTensor, name: str, filters: int, kernel: tuple[int, int]) -> keras.KerasTensor:
    """Valid ReLU Conv2D, BatchNorm, max over all remaining mel bands: (time, filters)."""
    x = keras.layers.Conv2D(filters, kernel, activation="relu", name=f"frontend_{name}_conv")(x)
    x = keras.layers.BatchNormalization(name=f"frontend_{name}_bn")(x)
    bands = x.shape[2]
    x = keras.layers.MaxPooling2D((1, bands), name=f"frontend_{name}_pool")(x)
    return keras.layers.Reshape((-1, filters), name=f"frontend_{name}_squeeze")(x)


def _midend(frontend_features: keras.KerasTensor) -> list[keras.KerasTensor]:
    """Three 7-frame convolutions, residual from the second on; returns each one's output, (time, 64) each."""
    outputs = []
    x = frontend_features
    for k in (1, 2, 3):
        y = keras.layers.ZeroPadding1D(MIDEND_KERNEL // 2, name=f"midend{k}_pad")(x)
        y = keras.layers.Conv1D(MIDEND_FILTERS, MIDEND_KERNEL, activation="relu", name=f"midend{k}_conv")(y)
        y = keras.layers.BatchNormalization(name=f"midend{k}_bn")(y)
        x = y if k == 1 else keras.layers.Add(name=f"midend{k}_residual")([y, x])
        outputs.append(x)
    return outputs


def _backend(features: keras.KerasTensor, dropout: float) -> dict[str, keras.KerasTensor]:
    """Max and mean over time, BatchNorm, dense 200 + BatchNorm (penultimate), dense 50 (logits)."""
    max_pool = keras.layers.GlobalMaxPooling1D(name="backend_max_pool")(features)
    mean_pool = keras.layers.GlobalAveragePooling1D(name="backend_mean_pool")(features)
    # The original stacks the two pools on a new last axis before flattening, so the dense layer's 1506 inputs
    # interleave them (max0, mean0, max1, mean1, ...); the checkpoint's kernel rows follow that order.
    width = features.shape[-1]
    pairs = [
        keras.layers.Reshape((width, 1), name=f"backend_{p}_column")(t)
        for p, t in (("max", max_pool), ("mean", mean_pool))
    ]
    x = keras.layers.Flatten(name="backend_pool_flatten")(keras.layers.Concatenate(name="backend_pool_pairs")(pairs))
    x = keras.layers.BatchNormalization(name="backend_pool_bn")(x)
    x = keras.layers.Dropout(dropout, name="backend_pool_dropout")(x)
    x = keras.layers.Dense(BACKEND_UNITS, activation="relu", name="backend_dense")(x)
    penultimate = keras.layers.BatchNormalization(name="backend_penultimate_bn")(x)
    x = keras.layers.Dropout(dropout, name="backend_penultimate_dropout")(penultimate)
    logits = keras.layers.Dense(N_TAGS, name="backend_logits")(x)
    return {"logits": logits, "penultimate": penultimate, "mean_pool": mean_pool, "max_pool": max_pool}


def shared_patches_network(backbone: keras.Model, frames: int) -> keras.Model:
    """A musicnn backbone (up to its penultimate features, as `Musicnn.build` makes it) on overlapping patches of one
    clip, their timbral convolutions computed once: (clip: (1, time, 96) log-mel, starts: (n,) frame indices) ->
    (n, 200) penultimate features of the `frames`-long patches starting there, equal to the backbone's on each patch
    (float rounding aside), with the same layers and weights.

    The timbral convolutions are four fifths of a patch's multiply-adds and only 7 frames long: a patch's timbral
    features at its frames 3 to frames - 4 read no padding, so they are the clip's, computed once over the clip's
    frames (1,876 for 30 s, against 19 x 187 for patches at a 1.5 s hop); its first and last 3 frames, which read the
    patch's zero padding, are computed from its first and last 6 frames alone, padded as the patch pads them. The
    temporal convolutions (up to 128 frames long, padded at each patch's edges), mid-end and back-end run per patch.
    """
    layer = backbone.get_layer
    normalised = layer("frontend_input_bn").output
    timbral_outputs = [layer(f"frontend_{name}_squeeze").output for name in TIMBRAL_BANDS]
    normalise = _any_length(keras.Model(backbone.input, normalised))  # (time, 96) -> (time, 96, 1)
    timbral = _any_length(keras.Model(normalised, timbral_outputs))  # padded timbral convolutions, pooled
    rest = keras.Model([normalised, *timbral_outputs], backbone.output)  # given a patch's timbral features

    clip = keras.Input(shape=(None, N_MELS), batch_size=1, name="clip_log_mel")
    starts = keras.Input(shape=(), dtype="int32", name="patch_starts")
    x = normalise(clip)
    edge = TIMBRAL_EDGE
    first, last = (timbral(Windows(2 * edge, offset)(x, starts)) for offset in (0, frames - 2 * edge))
    patch_timbral = [
        keras.layers.Concatenate(axis=1)([a[:, :edge], Windows(frames - 2 * edge, edge)(whole, starts), b[:, edge:]])
        for whole, a, b in zip(timbral(x), first, last, strict=True)
    ]
    penultimate = rest([Windows(frames)(x, starts), *patch_timbral])
    return keras.Model([clip, starts], penultimate, name=f"{backbone.name}_shared_patches")


def _any_length(model: keras.Model) -> keras.Model:
    """The model with its layers (and weights) on an input of any time length (its own input pins the patch's)."""
    inputs = keras.Input(shape=(None, *model.input.shape[2:]))
    return keras.models.clone_model(model, input_tensors=inputs, clone_function=lambda layer: layer)


@keras.saving.register_keras_serializable(package="genre_tf")
class Windows(keras.layers.Layer):
    """The `length`-frame windows of one clip's (1, time, ...) map that begin `offset` frames after each of `starts`:
    (n, length, ...)."""

    def __init__(self, length: int, offset: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.length, self.offset = length, offset

    def call(self, clip, starts):
        frames = starts[:, None] + self.offset + keras.ops.arange(self.length, dtype=starts.dtype)[None]
        return keras.ops.take(clip[0], frames, axis=0)

    def get_config(self) -> dict:
        return {**super().get_config(), "length": self.length, "offset": self.offset}


def _check_name(model_name: str) -> None:
    if model_name not in MUSICNN_MODELS:
        raise ValueError(f"unknown musicnn model {model_name!r}; expected one of {', '.join(MUSICNN_MODELS)}")


def checkpoint_prefix(model_name: str) -> Path:
    """The TF1 checkpoint prefix `<musicnn package>/<model_name>/` inside the installed wheel."""
    _check_name(model_name)
    # find_spec reads the package's location without running its modules (its extractor turns eager mode off).
    spec = importlib.util.find_spec("musicnn")
    if spec is None or not spec.submodule_search_locations:
        raise MusicnnWeightsUnavailable(
            f"{model_name} needs the musicnn wheel: pip install --no-deps musicnn==0.1.0 (it holds the checkpoints)"
        )
    prefix = Path(next(iter(spec.submodule_search_locations))) / model_name
    if not (prefix / ".index").is_file():
        raise MusicnnWeightsUnavailable(f"no {model_name} checkpoint in the musicnn package at {prefix}")
    return prefix


def convert_checkpoint(model_name: str, model: keras.Model) -> None:
    """Assign the wheel's TF1 checkpoint to `model`, one checkpoint variable per Keras weight, shapes checked."""
    # Lazy: TensorFlow only reads the TF1 checkpoint, once; the network itself runs on any Keras backend.
    import tensorflow as tf

    reader = tf.compat.v1.train.NewCheckpointReader(str(checkpoint_prefix(model_name)) + os.sep)
    plan = _assignment_plan(model_name, model, reader.get_variable_to_shape_map())
    values = [(weight, name, to_keras(reader.get_tensor(name))) for weight, name, to_keras in plan]
    misfits = [
        f"{name} {value.shape} for {weight.path} {tuple(weight.shape)}"
        for weight, name, value in values
        if value.shape != tuple(weight.shape)
    ]
    if misfits:  # checked before any assignment, so a misfit leaves the model as it was
        raise CheckpointMismatch(f"{model_name} checkpoint shapes do not fit the Keras model: {', '.join(misfits)}")
    for weight, _, value in values:
        weight.assign(value)


def _assignment_plan(model_name: str, model: keras.Model, checkpoint_shapes: dict[str, list[int]]) -> list[tuple]:
    """(Keras weight, checkpoint variable, array conversion) for every weight; raises if the two do not pair up."""
    plan, unmapped, absent = [], [], []
    for layer in model.layers:
        scope = CHECKPOINT_SCOPES.get(layer.name)
        for weight in layer.weights:
            variable_name = f"{scope}/{weight.name}"
            if scope is None:
                unmapped.append(f"{layer.name}/{weight.name}")
            elif variable_name not in checkpoint_shapes:
                absent.append(f"{layer.name}/{weight.name} ({variable_name})")
            else:
                plan.append((weight, variable_name, _conversion(layer)))
    used = [variable_name for _, variable_name, _ in plan]
    repeated = sorted({name for name in used if used.count(name) > 1})
    left_over = sorted(name for name in set(checkpoint_shapes) - set(used) if not _is_training_state(name))
    problems = [
        f"{what}: {', '.join(names)}"
        for what, names in (
            ("Keras weights of layers with no checkpoint scope", unmapped),
            ("Keras weights missing from the checkpoint", absent),
            ("checkpoint variables used twice", repeated),
            ("checkpoint variables left over", left_over),
        )
        if names
    ]
    if problems:
        raise CheckpointMismatch(f"{model_name} checkpoint does not fit the Keras model: " + "; ".join(problems))
    return plan


def _conversion(layer: keras.layers.Layer):
    """How a TF1 array becomes this layer's weight: Conv1D kernels drop the Conv2D's single input channel."""
    if isinstance(layer, keras.layers.Conv1D):
        # (7, features, 1, filters) -> (7, features, filters); a non-1 axis is left for the shape check to report.
        return lambda a: a[:, :, 0, :] if a.ndim == 4 and a.shape[2] == 1 else a
    return lambda a: a


def _is_training_state(variable_name: str) -> bool:
    return variable_name.endswith(TRAINING_STATE_SUFFIXES) or variable_name in TRAINING_STATE_NAMES


def musicnn_weights(model_name: str, cache_dir: Path) -> Path:
    """`<cache_dir>/musicnn/<model_name>-<checkpoint digest>.weights.h5`, converted once, then reused."""
    prefix = checkpoint_prefix(model_name)
    path = Path(cache_dir) / "musicnn" / f"{model_name}-{_checkpoint_digest(prefix)}.weights.h5"
    if path.is_file():
        return path
    model = build_musicnn(model_name)
    convert_checkpoint(model_name, model)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Keras insists on the .weights.h5 ending, so the temporary name keeps it; os.replace makes the file appear whole.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".weights.h5")
    os.close(fd)
    try:
        model.save_weights(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def _checkpoint_digest(prefix: Path) -> str:
    """First 16 hex digits of the SHA-256 of the checkpoint's index and data files (names and bytes)."""
    digest = hashlib.sha256()
    for file in sorted(prefix.glob(".data-*")) + [prefix / ".index"]:
        digest.update(file.name.encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def load_musicnn(
    model_name: str, cache_dir: Path, frames: int | None = PATCH_FRAMES, dropout: float = DROPOUT
) -> keras.Model:
    """musicnn with the wheel's trained weights (converted and cached on first use)."""
    model = build_musicnn(model_name, frames, dropout)
    model.load_weights(musicnn_weights(model_name, cache_dir))
    return model


def weights_cache_dir() -> Path:
    """Where converted weights are kept, beside the pretrained weights Keras downloads: $KERAS_HOME/models."""
    return Path(os.environ.get("KERAS_HOME", "~/.keras")).expanduser() / "models"


@keras.saving.register_keras_serializable(package="genre_tf")
class MusicnnLogCompression(keras.layers.Layer):
    """Cached (float16-rounded) mel power -> musicnn's input, log10(10^4 x + 1) in float32."""

    def __init__(self, backbone: str = "MSD_musicnn", **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone

    def call(self, power):
        return keras.ops.log10(LOG_SCALE * keras.ops.cast(power, "float32") + 1.0)

    def get_config(self) -> dict:
        return {**super().get_config(), "backbone": self.backbone}


class Musicnn(BackboneSource):
    """musicnn (MSD_musicnn, MTT_musicnn) up to its 200-d penultimate features, on 16 kHz mel patches.

    `weights: pretrained` converts the wheel's checkpoint once (cached in $KERAS_HOME/models), null builds it
    at random, a path loads a `.weights.h5` of `build_musicnn`. Blocks: front-end, mid-end 1-3, back-end.
    """

    input = MUSICNN_PATCH

    def build(self, cfg: TransferConfig, input_shape: tuple[int, ...]) -> keras.Model:
        frames = input_shape[0]
        # Keras 3 lets the outer model's `training` reach a nested model called with training=False, so the
        # back-end's dropout would be live under fit; it belongs only to a network trained whole (BatchNorm too).
        dropout = DROPOUT if cfg.batch_norm == "train" else 0.0
        if cfg.weights == "imagenet":
            raise WeightsUnavailable(
                f"{self.name} has no ImageNet weights; give pretrained (the musicnn wheel's), null or a path"
            )
        if cfg.weights == "pretrained":
            network = load_musicnn(self.name, weights_cache_dir(), frames, dropout)
        else:
            network = build_musicnn(self.name, frames, dropout)
            if cfg.weights is not None:
                load_local_weights(network, self.name, Path(cfg.weights).expanduser())
        penultimate = network.get_layer("backend_penultimate_bn").output
        return keras.Model(network.input, penultimate, name=self.name.lower())

    def preprocessing(self) -> keras.layers.Layer:
        return MusicnnLogCompression(self.name, name="preprocess")

    @property
    def block_pattern(self) -> str:
        return rf"({'|'.join(MUSICNN_BLOCKS)})_"


def tagger(model_name: str, frames: int | None = PATCH_FRAMES) -> keras.Model:
    """The pretrained network as its authors use it: cached mel power patches -> 50 tag probabilities."""
    network = load_musicnn(model_name, weights_cache_dir(), frames)
    power = keras.Input(shape=(frames, N_MELS), name=MUSICNN_PATCH)
    logits = network(MusicnnLogCompression(model_name)(power), training=False)["logits"]
    return keras.Model(power, keras.layers.Activation("sigmoid", name="tags")(logits), name=f"{model_name}_tagger")
