"""Training-time augmentation: SpecAugment masks, random gain, random time crops, feature noise and mixup.

As in tensorflow/models, augmentation belongs to the input pipeline, not to the model: each training element is
changed between reading it from the cache and making it the model's input (for mel images: after the [0, 1]
scaling, before resizing, so mask widths count frames and mel bands of the cached image), and mixup runs on
whole batches. An exported model holds no random layers, and evaluation and prediction read their inputs as they
always did (`SplitData.batches` never augments).

Every draw is stateless: element i of epoch e draws from `pipeline.element_seed(seed, e, i)`, each augmentation
from its own stream of that seed, so a resumed run repeats an uninterrupted one's draws without any saved state,
and turning one augmentation on leaves the others' draws as they were. A batch's mixing weights come from the
seed of its first element, itself a function of (seed, epoch, batch).

The random time crop moves a segment's window later by up to `time_shift` of the segment hop, into the track's
next segment: the window is the end of the element's own image followed by the start of the next segment's,
both read from the cache (the track's other frames are not cached). The last segment of a track stays in place.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
import tensorflow as tf

from genre_tf import models
from genre_tf.config import AugmentConfig, Config, ConfigError
from genre_tf.features import musicnn_input, representations
from genre_tf.features.analysis import mel_first_frame, mel_frames_per_segment
from genre_tf.features.audio import segment_hop_samples, segment_samples
from genre_tf.inputs.pipeline import Augmentation, Reader
from genre_tf.inputs.recipe import InputRecipe

# One stream per augmentation: the element seed folded with these.
CROP, GAIN, TIME_MASKS, FREQ_MASKS, NOISE, MIXUP = range(1, 7)

Step = Callable[[Any, tf.Tensor, tf.Tensor], Any]  # (input as read, element index, element seed) -> input


@dataclass(frozen=True)
class Layout:
    """Where time and frequency lie in a cached input, and how a gain changes its values."""

    time_axis: int
    freq_axis: int
    db_per_unit: float | None  # a [0, 1] log-mel image: dB per unit; None: mel power, which a gain multiplies


def layout(recipe: InputRecipe) -> Layout:
    """The layout of a mel image (n_mels, frames, 1) or a musicnn patch (frames, 96)."""
    if recipe.representation == models.MEL_IMAGE:
        return Layout(time_axis=1, freq_axis=0, db_per_unit=recipe.mel.db_ceiling - recipe.mel.db_floor)
    return Layout(time_axis=0, freq_axis=1, db_per_unit=None)


def stream(seed: tf.Tensor, name: int) -> tf.Tensor:
    """The seed of one augmentation's draws for one element."""
    return tf.random.experimental.stateless_fold_in(seed, name)


def check_augment(cfg: Config) -> None:
    """Refuse augmentation that cannot apply to what the configured model reads or to how it trains."""
    aug = cfg.augment
    if not aug.active:
        return
    family = models.family(cfg.model)
    kind = representations.read_by(cfg.model)
    spectral = {"time_masks": aug.time_masks, "freq_masks": aug.freq_masks, "gain_db": aug.gain_db}
    misfits = [name for name, value in {**spectral, "time_shift": aug.time_shift}.items() if value]
    if kind != models.FEATURES:
        misfits = ["feature_noise"] if aug.feature_noise else []
    if misfits:
        applies = "feature-table rows" if kind != models.FEATURES else "mel images and musicnn patches"
        problem = f"applies to {applies}; model.kind {cfg.model.kind} reads {kind}"
        raise ConfigError(f"augment.{misfits[0]}", problem)
    if family.track_level(cfg.model):
        problem = "the linear probe (model.level track) fits cached mean embeddings, which take no augmentation"
        raise ConfigError("augment", problem)
    if aug.mixup_alpha and cfg.train.distribute == "multi_worker":
        problem = "does not work with train.distribute multi_worker, whose training step takes integer labels"
        raise ConfigError("augment.mixup_alpha", problem)


def augmentation(
    frame: pd.DataFrame,
    recipe: InputRecipe,
    read: Reader,
    model_input: Callable | None,
    labels: np.ndarray,
    n_classes: int,
) -> Augmentation | None:
    """The training split's augmentation from the recipe's augment section, or None when it changes nothing.

    `read` and `model_input` are the split's: element i -> its input as cached, and that -> the model's input.
    """
    aug = recipe.augment
    if not aug.active:
        return None
    steps = feature_steps(aug) if recipe.reads_features else spectral_steps(frame, recipe, read)
    ys = tf.constant(labels, tf.int32)

    def load(i: tf.Tensor, seed: tf.Tensor) -> tuple[Any, tf.Tensor]:
        x = read(i)
        for step in steps:
            x = step(x, i, seed)
        return (x if model_input is None else model_input(x)), tf.gather(ys, i)

    mix = partial(mixup, alpha=aug.mixup_alpha, n_classes=n_classes) if aug.mixup_alpha else None
    return Augmentation(load, mix)


def feature_steps(aug: AugmentConfig) -> list[Step]:
    """Gaussian noise on standardised feature rows."""
    std = aug.feature_noise
    return [lambda x, i, seed: add_noise(x, std, stream(seed, NOISE))] if std else []


def spectral_steps(frame: pd.DataFrame, recipe: InputRecipe, read: Reader) -> list[Step]:
    """Time crop, gain, then time and frequency masks, on a mel image or musicnn patch as cached."""
    aug, where = recipe.augment, layout(recipe)
    steps = []
    if aug.time_shift:
        neighbour, offset, max_shift = (tf.constant(a, tf.int32) for a in time_neighbours(frame, recipe))

        def crop(x: tf.Tensor, i: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
            next_x = read(tf.gather(neighbour, i))
            args = (tf.gather(offset, i), tf.gather(max_shift, i), stream(seed, CROP), where.time_axis)
            return shift_window(x, next_x, *args)

        steps.append(crop)
    if aug.gain_db:
        steps.append(lambda x, i, seed: random_gain(x, aug.gain_db, stream(seed, GAIN), where.db_per_unit))
    if aug.time_masks and aug.time_mask_frames:
        time_masks = partial(mask_stripes, axis=where.time_axis, count=aug.time_masks, max_width=aug.time_mask_frames)
        steps.append(lambda x, i, seed: time_masks(x, seed=stream(seed, TIME_MASKS)))
    if aug.freq_masks and aug.freq_mask_bands:
        freq_masks = partial(mask_stripes, axis=where.freq_axis, count=aug.freq_masks, max_width=aug.freq_mask_bands)
        steps.append(lambda x, i, seed: freq_masks(x, seed=stream(seed, FREQ_MASKS)))
    return steps


def time_neighbours(frame: pd.DataFrame, recipe: InputRecipe) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per element of `frame`: its track's next segment (its own index where there is none), the frame of that
    segment's image where this element's image ends, and the largest shift `augment.time_shift` allows, in frames.

    Segment k starts at k hops; its image starts at the first frame centred at or after that, as the cache makes
    it. Where images overlap (a hop shorter than the image), the next image is read from where this one ends;
    where a hop is one frame longer than a musicnn patch, that frame is in neither and the window skips it.
    """
    audio, mel = recipe.audio, recipe.mel
    hop = segment_hop_samples(audio)
    segment = frame["segment"].to_numpy(np.int64)
    if recipe.representation == models.MEL_IMAGE:
        frames = mel_frames_per_segment(segment_samples(audio), mel)
        hop_frames = mel_first_frame((segment + 1) * hop, mel) - mel_first_frame(segment * hop, mel)
    else:
        frames = musicnn_input.patch_frames(audio.segment_seconds)
        sr = audio.sample_rate
        hop_frames = musicnn_input.first_frame((segment + 1) * hop, sr) - musicnn_input.first_frame(segment * hop, sr)
    position = {key: i for i, key in enumerate(zip(frame["track_id"], segment, strict=True))}
    nexts = [position.get((track, k + 1), -1) for track, k in zip(frame["track_id"], segment, strict=True)]
    has_next = np.array(nexts) >= 0
    neighbour = np.where(has_next, nexts, np.arange(len(frame)))
    offset = np.where(has_next, np.clip(frames - hop_frames, 0, frames), 0)
    shift = np.minimum(np.floor(recipe.augment.time_shift * hop_frames), frames - offset).astype(np.int64)
    return neighbour, offset, np.where(has_next, shift, 0)


def shift_window(
    x: tf.Tensor, next_x: tf.Tensor, offset: tf.Tensor, max_shift: tf.Tensor, seed: tf.Tensor, axis: int
) -> tf.Tensor:
    """The window `x` covers, moved later by 0..max_shift frames (uniform): the end of `x`, then `next_x` from
    `offset` on (the frames that follow `x`)."""
    size = tf.shape(x)[axis]
    shift = tf.cast(tf.floor(tf.random.stateless_uniform([], seed) * tf.cast(max_shift + 1, tf.float32)), tf.int32)
    joined = tf.concat([x, tf.gather(next_x, tf.range(offset, tf.shape(next_x)[axis]), axis=axis)], axis)
    window = tf.gather(joined, tf.range(shift, shift + size), axis=axis)
    window.set_shape(x.shape)
    return window


def random_gain(x: tf.Tensor, max_db: float, seed: tf.Tensor, db_per_unit: float | None) -> tf.Tensor:
    """A gain of -max_db..max_db dB (uniform): an offset on a [0, 1] log-mel image, clipped as the cache clips it,
    or a factor on mel power."""
    db = tf.random.stateless_uniform([], seed, -max_db, max_db)
    if db_per_unit is None:
        return x * tf.pow(10.0, db / 10.0)
    return tf.clip_by_value(x + db / db_per_unit, 0.0, 1.0)


def mask_stripes(x: tf.Tensor, axis: int, count: int, max_width: int, seed: tf.Tensor) -> tf.Tensor:
    """SpecAugment masks: `count` stripes along `axis`, each 0..max_width wide (uniform) at a uniform position,
    set to 0 (the dB floor of a mel image, zero power in a musicnn patch)."""
    size = tf.shape(x)[axis]
    draws = tf.random.stateless_uniform([2, count], seed)
    width = tf.minimum(tf.cast(tf.floor(draws[0] * (max_width + 1)), tf.int32), size)
    start = tf.cast(tf.floor(draws[1] * tf.cast(size - width + 1, tf.float32)), tf.int32)
    position = tf.range(size)[None, :]
    masked = tf.reduce_any((position >= start[:, None]) & (position < (start + width)[:, None]), axis=0)
    shape = [1] * x.shape.rank
    shape[axis] = -1
    return tf.where(tf.reshape(masked, shape), tf.zeros_like(x), x)


def add_noise(x: tf.Tensor, std: float, seed: tf.Tensor) -> tf.Tensor:
    """Gaussian noise of standard deviation `std`, in the units of `x` (standard deviations of the features)."""
    return x + std * tf.random.stateless_normal(tf.shape(x), seed)


def mixup(x: Any, y: tf.Tensor, seeds: tf.Tensor, alpha: float, n_classes: int) -> tuple[Any, tf.Tensor]:
    """mixup (Zhang et al. 2018) on a batch: example j becomes lam_j of itself and 1 - lam_j of the example at the
    mirrored position (the batch order is already random), lam_j ~ Beta(alpha, alpha); its label becomes the same
    mixture of the two one-hot labels. Returns the mixed inputs and the soft labels (batch, n_classes)."""
    gammas = tf.random.stateless_gamma([2, tf.shape(y)[0]], stream(seeds[0], MIXUP), alpha, dtype=tf.float64)
    total = gammas[0] + gammas[1]
    lam = tf.cast(tf.where(total > 0, tf.math.divide_no_nan(gammas[0], total), 0.5), tf.float32)

    def mix(a: tf.Tensor) -> tf.Tensor:
        weight = tf.cast(tf.reshape(lam, [-1] + [1] * (a.shape.rank - 1)), a.dtype)
        return weight * a + (1.0 - weight) * tf.reverse(a, [0])

    return tf.nest.map_structure(mix, x), mix(tf.one_hot(y, n_classes))
